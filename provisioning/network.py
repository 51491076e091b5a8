"""Where ponte listens: the app server's SIP and RTP (`sip:`), Kamailio and
rtpengine in front of it (`pbx:`), and the app-server nodes on other
machines (`nodes:`)."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from pcm import CLOCK_RATE, CLOCK_RATES
from provisioning.base import Strict, host_port

# A browser's Origin header: scheme, host (a name or an IPv4 address), port.
ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?$")


def private_address(value: str, what: str) -> tuple[str, int]:
    """`value`'s host and port, refused unless the host is one private (or
    loopback) address: an app-server node's SIP stack (pjproject) must never
    face the internet, only the edge and the other nodes."""
    host, port = host_port(value, what)
    addr = ipaddress.ip_address(host)
    if addr.is_unspecified or not (addr.is_private or addr.is_loopback):
        raise ValueError(
            f"{what} must be one private address (a network only the edge and the nodes "
            f"reach), got {host}"
        )
    return host, port


class OpusConfig(Strict):
    """Opus's encoder on every Opus leg (browsers, Opus phones): see pbx/opus.py."""

    # libopus's speed/quality trade, 0-10: each step up costs CPU on every
    # Opus leg (bench/opus_cost.py measures it); 5 is pjmedia's default, and
    # through the bridge it scored better than 1 or 10 (bench/quality.py).
    complexity: int = Field(5, ge=0, le=10)
    # Bits per second the encoder aims at, also asked of the far end
    # (`maxaveragebitrate`); 24 kbit/s is transparent for 16 kHz voice.
    # 0 lets libopus choose.
    bitrate: int = 24000
    # Discontinuous transmission: no packets while the leg hears silence, and
    # the phones asked for the same (usedtx=1). Off by default: libopus takes
    # a steady tone for background noise after ~3 s (README, "dtx").
    dtx: bool = False
    # In-band forward error correction: a lost packet is rebuilt from the next.
    fec: bool = True
    # Constant instead of variable bit rate.
    cbr: bool = False

    @field_validator("bitrate")
    @classmethod
    def _bitrate(cls, v: int) -> int:
        if v and not 6000 <= v <= 510000:
            raise ValueError(
                f"sip.opus.bitrate must be 0 (libopus chooses) or 6000-510000, got {v}"
            )
        return v


class SipConfig(Strict):
    """Where the app server listens for SIP, and which UDP ports carry RTP."""

    listen: str = "127.0.0.1:5080"
    rtp_ports: str = "40000-40999"
    user_agent: str = "ponte"
    codecs: list[str] = Field(default_factory=lambda: ["PCMU/8000", "PCMA/8000", "G722/16000"])
    # The conference bridge's clock rate (Hz): rooms are mixed, and prompts and
    # signals rendered, at this rate; each call's codec is resampled to it. 8000
    # suits PCMU/PCMA phones; 16000 keeps G.722 (and 16 kHz opus) wideband across
    # a room, at about twice the CPU. Only a restart changes it.
    clock_rate: int = Field(CLOCK_RATE, json_schema_extra={"enum": list(CLOCK_RATES)})
    # Talkers and listeners: a room member whose level (mean absolute sample,
    # dB relative to full scale) stays under this for longer than the hangover
    # is no talker and is mixed to nobody. A room of 100 where two talk then
    # mixes two sources, not 100, and quiet members' line noise reaches no one.
    # Speech is around -20 dBFS and a quiet line near -60; null mixes everyone.
    talker_threshold_dbfs: float | None = Field(-50.0, ge=-90.0, le=-20.0)
    # How long (ms) a talker stays in the mix after their last frame above the
    # threshold: pauses between words and the tails of words are kept.
    talker_hangover_ms: int = Field(400, ge=0, le=5000)
    # Listeners who hear the same talkers share one encode of their frame
    # (G.711, G.722, Opus of alike settings): in a room of 100 where two talk,
    # a handful of encodes a tick instead of 100. Turn it off only to measure
    # what it saves, or if a codec misbehaves with it.
    shared_encode: bool = True
    # How each leg's receive jitter buffer sheds delay. "progressive" (pjsua's
    # own) drops a frame whenever it holds more than its recent jitter, to
    # stay at its least delay; a frame dropped from a talker's stream is a
    # short glitch every listener hears (clearest on Opus). "static" drops one
    # only when it holds twice its jitter (clock drift, a burst): fewer drops,
    # but a call keeps the delay of its start-up burst (bench/quality.py: 63
    # and 72 ms through the bridge against 36 and 44). Only a restart changes it.
    jitter_discard: Literal["static", "progressive"] = "progressive"
    # Overload: beyond these, new calls are shed with 503 + Retry-After so the
    # calls in progress keep their audio (a B2BUA call counts twice).
    max_calls: int = Field(800, ge=1, le=1000)
    max_new_calls_per_second: float = Field(150.0, gt=0, le=2000)
    # Opus's encoder settings. Only a restart changes them.
    opus: OpusConfig = Field(default_factory=OpusConfig)

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        host, _ = host_port(v, "sip.listen")
        if not ipaddress.ip_address(host).is_loopback:
            # pjproject 2.12.1 lacks later security fixes: only Kamailio
            # (pbx.listen) may face the network; it relays to us on loopback.
            raise ValueError(
                f"sip.listen must be a loopback address (e.g. 127.0.0.1:5080), got {host}: "
                "only Kamailio (pbx.listen) faces the network"
            )
        return v

    @field_validator("clock_rate")
    @classmethod
    def _clock_rate(cls, v: int) -> int:
        if v not in CLOCK_RATES:
            allowed = ", ".join(str(r) for r in CLOCK_RATES)
            raise ValueError(f"sip.clock_rate must be one of {allowed} (Hz), got {v}")
        return v

    @field_validator("rtp_ports")
    @classmethod
    def _rtp(cls, v: str) -> str:
        lo, sep, hi = v.partition("-")
        if not sep or not lo.isdigit() or not hi.isdigit():
            raise ValueError(f"sip.rtp_ports must be LOW-HIGH, got {v!r}")
        low, high = int(lo), int(hi)
        if not 1024 <= low < high <= 65535:
            raise ValueError("sip.rtp_ports must satisfy 1024 <= LOW < HIGH <= 65535")
        if high - low < 3:
            raise ValueError("sip.rtp_ports needs room for at least two RTP/RTCP pairs")
        return v

    @property
    def host(self) -> str:
        return host_port(self.listen, "sip.listen")[0]

    @property
    def port(self) -> int:
        return host_port(self.listen, "sip.listen")[1]

    @property
    def rtp_range(self) -> tuple[int, int]:
        lo, _, hi = self.rtp_ports.partition("-")
        return int(lo), int(hi)

    @model_validator(mode="after")
    def _sip_outside_rtp(self) -> SipConfig:
        lo, hi = self.rtp_range
        if lo <= self.port <= hi:
            raise ValueError(
                f"sip.listen port {self.port} lies inside sip.rtp_ports {self.rtp_ports}"
            )
        return self


class WebSocketConfig(Strict):
    """SIP over WebSocket for the join page's browsers (Kamailio's websocket
    module): off unless `listen` is set."""

    # HOST:PORT (TCP, ws://) the browsers reach, e.g. 192.0.2.10:8089.
    listen: str | None = None
    # Pages allowed to open it besides the console's own (http://web.listen):
    # the console as browsers really reach it, e.g. https://conf.example.com
    # behind a reverse proxy or by a DNS name.
    origins: list[str] = Field(default_factory=list, max_length=20)
    # HOST:PORT (TLS, wss://) on pbx.tls's certificate, for a join page served
    # over https (a browser refuses ws:// from an https page); needs pbx.tls.
    tls_listen: str | None = None

    @field_validator("origins")
    @classmethod
    def _origins(cls, v: list[str]) -> list[str]:
        for origin in v:
            if not ORIGIN.match(origin):
                raise ValueError(
                    f"pbx.websocket.origins: {origin!r} must be an origin such as "
                    "https://conf.example.com or http://192.0.2.10:8088 (no path)"
                )
        return v

    @field_validator("listen", "tls_listen")
    @classmethod
    def _listen(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is None:
            return v
        what = f"pbx.websocket.{info.field_name}"
        host, _ = host_port(v, what)
        if ipaddress.ip_address(host).is_unspecified:
            raise ValueError(
                f"{what} must be one address (the one browsers reach), "
                f"not {host}: it is the URL the join page gives them"
            )
        return v

    @model_validator(mode="after")
    def _tls_needs_plain(self) -> WebSocketConfig:
        if self.tls_listen and not self.listen:
            raise ValueError(
                "pbx.websocket.tls_listen needs pbx.websocket.listen too (ws:// for a page "
                "served over http; browsers use wss:// from an https page)"
            )
        if self.tls_listen and host_port(self.tls_listen, "")[1] == self.port:
            raise ValueError(
                "pbx.websocket.tls_listen and pbx.websocket.listen need ports of their own"
            )
        return self

    @property
    def host(self) -> str | None:
        return host_port(self.listen, "pbx.websocket.listen")[0] if self.listen else None

    @property
    def port(self) -> int | None:
        return host_port(self.listen, "pbx.websocket.listen")[1] if self.listen else None

    @property
    def url(self) -> str | None:
        """The WebSocket URL the join page connects to (None: off)."""
        return f"ws://{self.listen}" if self.listen else None

    @property
    def tls_url(self) -> str | None:
        """The secure WebSocket URL, for a page served over https (None: off)."""
        return f"wss://{self.tls_listen}" if self.tls_listen else None


TLS_PORT = 5061  # SIP over TLS's well-known port (RFC 3261 19.1.2)


def _pem_file(value: str, what: str, marker: str, kind: str) -> str:
    """`value`, refused unless it names a readable PEM file holding `marker`
    (so a typo or a swapped certificate and key fail at load, not as a
    Kamailio that will not start)."""
    path = Path(value)
    if not path.is_absolute():
        raise ValueError(f"{what} must be an absolute path, got {value!r}")
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise ValueError(f"{what} {value}: cannot read it ({exc.strerror})") from exc
    if marker not in text:
        raise ValueError(f"{what} {value} holds no {kind} (a PEM {marker!r} block)")
    return value


class TlsConfig(Strict):
    """SIP over TLS for phones (and trunks), in Kamailio's `tls` module."""

    # HOST:PORT; default: pbx.listen's host on 5061.
    listen: str | None = None
    # The server's certificate chain and private key (PEM files, readable by
    # the user ponte runs as): scripts/setup makes a self-signed lab pair.
    certificate: str
    key: str
    # The CAs a TLS trunk's provider certificate is checked against.
    ca_list: str = "/etc/ssl/certs/ca-certificates.crt"

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str | None) -> str | None:
        if v is not None:
            host, _ = host_port(v, "pbx.tls.listen")
            if ipaddress.ip_address(host).is_unspecified:
                raise ValueError(f"pbx.tls.listen must be one address, not {host}")
        return v

    @field_validator("certificate")
    @classmethod
    def _certificate(cls, v: str) -> str:
        return _pem_file(v, "pbx.tls.certificate", "-----BEGIN CERTIFICATE-----", "certificate")

    @field_validator("key")
    @classmethod
    def _key(cls, v: str) -> str:
        return _pem_file(v, "pbx.tls.key", "PRIVATE KEY-----", "private key")

    @field_validator("ca_list")
    @classmethod
    def _ca_list(cls, v: str) -> str:
        return _pem_file(v, "pbx.tls.ca_list", "-----BEGIN CERTIFICATE-----", "CA certificate")


class PbxConfig(Strict):
    """Kamailio, the registrar and proxy in front of the app server."""

    listen: str = "127.0.0.1:5060"
    flood_density: int = Field(30, ge=2, le=10000)  # requests per 2 s before a ban
    ban_seconds: int = Field(300, ge=1, le=86400)
    max_message: int = Field(4096, ge=1024, le=65535)  # pjsip itself stops near 4 kB
    auth_failures: int = Field(10, ge=2, le=1000)  # wrong passwords in 10 min before a ban
    # Advertised in SDP and SIP instead of listen's host when the appliance
    # itself sits behind a 1:1 NAT (its LAN address is mapped to this one).
    public_address: str | None = None
    # rtpengine relays every call's media on these UDP ports of pbx.listen's
    # host (phones, providers) and of loopback (towards the app server).
    media_ports: str = "30000-39999"
    # rtpengine's control (ng protocol) socket: loopback only.
    rtpengine_control: str = "127.0.0.1:2223"
    # With app-server nodes on other machines (`nodes:`): the edge's address
    # on their private network, where Kamailio sends them calls and rtpengine
    # relays their media (default: loopback, nodes on this machine).
    internal_listen: str | None = None
    # Browsers joining from the web console's join page (README "Browsers").
    websocket: WebSocketConfig = Field(default_factory=WebSocketConfig)
    # SIP over TLS for phones (README "Encrypted calls"); None: UDP only.
    tls: TlsConfig | None = None
    # `required`: a phone's INVITE that did not come over TLS or offers plain
    # RTP gets 488, never a silent downgrade. `optional`: SRTP to the phones
    # that offer it (RTP/SAVP), plain RTP to the others.
    media_encryption: Literal["optional", "required"] = "optional"

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        host, _ = host_port(v, "pbx.listen")
        if ipaddress.ip_address(host).is_unspecified:
            raise ValueError(
                "pbx.listen must be one address (the appliance's LAN address), not "
                f"{host}: rtpengine advertises it in every call's SDP"
            )
        return v

    @field_validator("public_address")
    @classmethod
    def _public(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            addr = ipaddress.ip_address(v)
        except ValueError as exc:
            raise ValueError(f"pbx.public_address must be an IP address, got {v!r}") from exc
        if addr.is_loopback or addr.is_unspecified:
            raise ValueError(f"pbx.public_address must be reachable by phones, got {v}")
        return v

    @field_validator("media_ports")
    @classmethod
    def _media(cls, v: str) -> str:
        lo, sep, hi = v.partition("-")
        if not sep or not lo.isdigit() or not hi.isdigit():
            raise ValueError(f"pbx.media_ports must be LOW-HIGH, got {v!r}")
        if not 1024 <= int(lo) < int(hi) <= 65535:
            raise ValueError("pbx.media_ports must satisfy 1024 <= LOW < HIGH <= 65535")
        if int(hi) - int(lo) < 3:
            raise ValueError("pbx.media_ports needs room for at least two RTP/RTCP pairs")
        return v

    @field_validator("rtpengine_control")
    @classmethod
    def _ng(cls, v: str) -> str:
        host, _ = host_port(v, "pbx.rtpengine_control")
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"pbx.rtpengine_control must be a loopback address, got {host}")
        return v

    @property
    def media_range(self) -> tuple[int, int]:
        lo, _, hi = self.media_ports.partition("-")
        return int(lo), int(hi)

    @property
    def advertised(self) -> str:
        """The address phones are told to send SIP and RTP to."""
        return self.public_address or self.host

    @field_validator("internal_listen")
    @classmethod
    def _internal_listen(cls, v: str | None) -> str | None:
        if v is not None:
            private_address(v, "pbx.internal_listen")
        return v

    @model_validator(mode="after")
    def _same_port(self) -> PbxConfig:
        if self.internal_listen and host_port(self.internal_listen, "")[1] != self.port:
            raise ValueError(
                f"pbx.internal_listen must use pbx.listen's port {self.port}: Kamailio takes "
                "calls on one port on both sides"
            )
        ws = self.websocket.listen
        if ws is not None and host_port(ws, "")[1] == self.port:
            raise ValueError(
                f"pbx.websocket.listen's port {host_port(ws, '')[1]} is pbx.listen's: "
                "pick another port for the browsers' WebSocket"
            )
        if self.websocket.tls_listen and self.tls is None:
            raise ValueError(
                "pbx.websocket.tls_listen needs pbx.tls (the certificate wss:// is served with)"
            )
        if self.media_encryption == "required" and self.tls is None:
            raise ValueError(
                "pbx.media_encryption: required needs pbx.tls (phones call over TLS with SRTP)"
            )
        if self.tls is not None:
            taken = {self.listen: "pbx.listen", self.internal: "pbx.internal_listen"}
            if self.tls_listen in taken:
                raise ValueError(
                    f"pbx.tls.listen {self.tls_listen} is {taken[self.tls_listen]}'s address: "
                    f"give TLS a port of its own (default {TLS_PORT})"
                )
            if host_port(self.tls_listen, "")[1] == self.port:
                raise ValueError(
                    f"pbx.tls.listen's port {self.port} is pbx.listen's: give TLS a port of "
                    f"its own (default {TLS_PORT})"
                )
            wss = self.websocket.tls_listen
            if wss is not None and host_port(wss, "")[1] in (self.port, self.tls_port):
                raise ValueError(
                    f"pbx.websocket.tls_listen's port {host_port(wss, '')[1]} is taken by "
                    "pbx.listen or pbx.tls.listen: pick another port for wss://"
                )
            if ws is not None and host_port(ws, "")[1] == self.tls_port:
                raise ValueError(
                    f"pbx.websocket.listen's port {self.tls_port} is pbx.tls.listen's: "
                    "both are TCP, pick another port for the browsers' WebSocket"
                )
        return self

    @property
    def tls_listen(self) -> str:
        """Where Kamailio takes SIP over TLS (only meaningful with pbx.tls)."""
        if self.tls is not None and self.tls.listen:
            return self.tls.listen
        return f"{self.host}:{TLS_PORT}"

    @property
    def tls_port(self) -> int:
        return host_port(self.tls_listen, "pbx.tls.listen")[1]

    @property
    def internal(self) -> str:
        """Where Kamailio meets the app servers: pbx.internal_listen when
        nodes run elsewhere, else a loopback socket on the same port when
        pbx.listen faces the network, else pbx.listen itself."""
        if self.internal_listen:
            return self.internal_listen
        return f"127.0.0.1:{self.port}" if self.faces_network else self.listen

    @property
    def internal_host(self) -> str:
        return host_port(self.internal, "pbx.listen")[0]

    @property
    def faces_network(self) -> bool:
        """Whether phones off this host can reach the appliance."""
        return not ipaddress.ip_address(self.host).is_loopback

    @property
    def host(self) -> str:
        return host_port(self.listen, "pbx.listen")[0]

    @property
    def port(self) -> int:
        return host_port(self.listen, "pbx.listen")[1]


class NodeEntry(Strict):
    """An app-server node on another machine (`ponte serve --node NAME`
    there): the edge dispatches calls to it, and it takes its SIP address and
    RTP ports from here, so the YAML stays one file for every node."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,32}$")
    # Its SIP address on the private network it shares with the edge
    # (pbx.internal_listen) and the other nodes.
    listen: str
    rtp_ports: str | None = None  # default: sip.rtp_ports

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        private_address(v, "nodes[].listen")
        return v

    @field_validator("rtp_ports")
    @classmethod
    def _rtp(cls, v: str | None) -> str | None:
        if v is not None:
            SipConfig(rtp_ports=v)
        return v

    @property
    def on_loopback(self) -> bool:
        """Whether it runs on the edge's machine."""
        return ipaddress.ip_address(host_port(self.listen, "")[0]).is_loopback

    @property
    def uri(self) -> str:
        """Its SIP URI, for Kamailio's dispatcher."""
        return f"sip:{self.listen}"
