"""PBX: the SIP user agent adapter and call routing."""
