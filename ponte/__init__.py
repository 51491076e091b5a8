"""ponte: a telephony appliance (conference bridge, IVR, small PBX)."""

__version__ = "0.1.0"
