"""What every part of the provisioning model shares: strict frozen models
and the HOST:PORT check."""

from __future__ import annotations

import ipaddress

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """A provisioning model: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def host_port(value: str, what: str) -> tuple[str, int]:
    """`value`'s IP host and port, or a ValueError naming `what`."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{what} must be HOST:PORT, got {value!r}")
    number = int(port)
    if not 1 <= number <= 65535:
        raise ValueError(f"{what} port {number} is out of range 1-65535")
    try:
        ipaddress.ip_address(host)
    except ValueError as exc:
        raise ValueError(f"{what} host must be an IP address, got {host!r}") from exc
    return host, number
