"""Typed model of the provisioning file.

Every field an admin may write is declared here; unknown keys are errors so a
typo never silently does nothing.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import zoneinfo
from pathlib import Path
from typing import Annotated, Literal, get_args
from urllib.parse import urlsplit

import holidays as holidays_lib
from pydantic import ConfigDict, Field, field_validator, model_validator

from ivr.keys import DEFAULT_KEYS, validate_key_map
from provisioning.base import Strict as _Strict
from provisioning.base import host_port as _host_port
from provisioning.network import NodeEntry, PbxConfig, SipConfig

Language = Literal["pt-BR", "en"]
Pin = str
# An extension number (as `Extension.number`).
ExtNumber = Annotated[str, Field(pattern=r"^[1-9][0-9]{2,5}$")]
# `operator:` names one extension or several rung together (the first to answer wins).
Operators = ExtNumber | Annotated[list[ExtNumber], Field(min_length=1, max_length=20)]


def operator_list(value: Operators | None) -> tuple[str, ...]:
    """`operator:` as a tuple of extensions (empty: none)."""
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(dict.fromkeys(value))


def _check_pin(value: str, what: str) -> str:
    if not value.isdigit():
        raise ValueError(f"{what} must be digits only, got {value!r}")
    if not 3 <= len(value) <= 12:
        raise ValueError(f"{what} must have 3 to 12 digits")
    return value


class Blast(_Strict):
    """A room's invitation list for blast dial-out (*92)."""

    numbers: list[str] = Field(min_length=1, max_length=200)
    message: str  # a WAV file, or text spoken with espeak-ng


def _quoted_pin(v: object, what: str) -> str:
    """A PIN as YAML gives it: a quoted digit string (an int would lose leading zeros)."""
    if isinstance(v, int) and not isinstance(v, bool):
        # YAML reads 1111 as an int and would drop leading zeros: refuse it.
        raise ValueError(f'{what} must be quoted, e.g. "{v}"')
    if not isinstance(v, str):
        raise ValueError(f"{what} must be a quoted digit string")
    return _check_pin(v, what)


class CounterPin(_Strict):
    """One moderator's own counter-PIN (contra-senha individual), named so
    that the log and the billing say whose was keyed."""

    # Letters (Latin accents too), digits, space, `.`, `_`, `-`: it goes into
    # logs and reports. Spelt out rather than \w, which editors' (ECMAScript)
    # regexes read as ASCII only.
    name: str = Field(pattern=r"^[A-Za-z0-9À-ÖØ-öø-ÿ _.-]{1,64}$")
    pin: Pin

    @field_validator("pin", mode="before")
    @classmethod
    def _pin(cls, v: object) -> str:
        return _quoted_pin(v, "counter_pins pin")


class Room(_Strict):
    """A conference room and the PINs that lead into it."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    participant_pin: Pin
    moderator_pin: Pin
    counter_pin: Pin | None = None  # a moderator's second PIN (contra-senha), collective
    # Each moderator's own counter-PIN, accepted besides `counter_pin`; the
    # name of the one keyed is logged and billed.
    counter_pins: list[CounterPin] = Field(default_factory=list, max_length=500)
    music: Path | None = None  # looping WAV for participants waiting for a moderator
    entry_signal: Literal["tone", "name", "none"] = "tone"
    end_on_moderator_exit: bool = True
    max_members: int | None = Field(None, ge=1, le=1000)
    security_level: Literal[1, 2, 3] = 2
    allow_lock: bool = False  # level 2 only: level 3 may always lock, level 1 never
    allow_dial_out: bool = False  # level 2 only, as allow_lock
    issued: dt.date | None = None  # PINs are valid 12 months from this date
    timezone: str = "America/Sao_Paulo"
    # Who *90 rings for this room (else the global `operator:`).
    operator: Operators | None = None
    allow_blast: bool = False  # level 2 only: level 3 may always blast, level 1 never
    dial_out_carriers: list[str] = Field(default_factory=lambda: ["15", "21"])
    area_code: str | None = Field(None, pattern=r"^[1-9][1-9]$")  # else the room line's
    blast: Blast | None = None
    department: str | None = None  # whose sub-administrators may manage the room
    # Conference recording (*93, `ponte room record-start`, the console): off
    # unless the room allows it (consent is the room owner's call); never at
    # security level 1. `record_tracks`: one file per member besides the mix
    # (None: the global `recordings.tracks`).
    allow_recording: bool = False
    record_tracks: bool | None = None

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            zoneinfo.ZoneInfo(v)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (e.g. America/Sao_Paulo)") from None
        return v

    @field_validator("participant_pin", "moderator_pin", "counter_pin", mode="before")
    @classmethod
    def _pin(cls, v: object, info) -> str | None:  # type: ignore[no-untyped-def]
        if v is None and info.field_name == "counter_pin":
            return None
        return _quoted_pin(v, info.field_name)

    @model_validator(mode="after")
    def _distinct(self) -> Room:
        if self.participant_pin == self.moderator_pin:
            raise ValueError("participant_pin and moderator_pin must differ")
        names: set[str] = set()
        pins = {
            self.participant_pin: "participant_pin",
            self.moderator_pin: "moderator_pin",
        }
        if self.counter_pin is not None:
            pins.setdefault(self.counter_pin, "counter_pin")
        for c in self.counter_pins:
            if c.name in names:
                raise ValueError(f"counter_pins: the name {c.name!r} is listed twice")
            names.add(c.name)
            if c.pin in pins:
                # Never the PIN itself in the message: it is a secret.
                raise ValueError(
                    f"counter_pins: the PIN of {c.name!r} is already the room's {pins[c.pin]}"
                )
            pins[c.pin] = f"counter-PIN of {c.name!r}"
        return self

    def counter_pin_names(self) -> dict[str, str]:
        """Each individual counter-PIN -> its moderator's name."""
        return {c.pin: c.name for c in self.counter_pins}


class RecordingsConfig(_Strict):
    """Room recordings, under `state_dir`/recordings/<room>/<start time>/."""

    tracks: bool = False  # one WAV per member besides the mix (a room may say otherwise)
    retention_days: int = Field(90, ge=1, le=3650)  # older recordings are deleted


class KeysConfig(_Strict):
    """The in-conference key map: key -> action (`*0` must stay `help`; no key twice)."""

    map: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_KEYS))
    feature_digit_timeout: float = Field(1.0, ge=0, le=5)
    sequence_timeout: float = Field(3.0, gt=0, le=10)

    @model_validator(mode="after")
    def _valid(self) -> KeysConfig:
        validate_key_map(self.map, self.feature_digit_timeout)
        return self


class Extension(_Strict):
    """A phone that registers to Kamailio with a password (ramal)."""

    number: str = Field(pattern=r"^[1-9][0-9]{2,5}$")
    name: str = ""
    password: str
    # What this phone's user hears when a call out is refused or warned (as a
    # conference caller hears its access number's language).
    language: Language = "pt-BR"

    @model_validator(mode="after")
    def _strong(self) -> Extension:
        if len(self.password) < 10:
            raise ValueError(f"extension {self.number}: password needs at least 10 characters")
        if self.password == self.number or self.number in self.password:
            raise ValueError(f"extension {self.number}: password must not contain the number")
        return self


def _uri_host(uri: str) -> tuple[str, int | None]:
    rest = uri.split(":", 1)[1] if uri.startswith(("sip:", "sips:")) else uri
    rest = rest.split(";", 1)[0].split("@")[-1]
    host, _, port = rest.partition(":")
    return host, int(port) if port.isdigit() else None


class Trunk(_Strict):
    """A SIP trunk to a provider: digest auth, addressed by DNS name."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    registrar: str
    username: str = Field(min_length=1)
    password: str = Field(min_length=1)
    registration: bool = True  # register to the provider (False: IP-authenticated peer)
    allow_ip: bool = False
    cps: float = Field(2.0, gt=0, le=100)  # new calls per second towards the trunk
    dids: list[str] = Field(default_factory=list)
    outbound_prefixes: list[str] = Field(default_factory=list)
    # How Kamailio reaches the provider: `tls` is SIP over TLS (port 5061 unless
    # the registrar names one) with SRTP (SDES) media, needs pbx.tls.
    transport: Literal["udp", "tls"] = "udp"

    @field_validator("registrar")
    @classmethod
    def _uri(cls, v: str) -> str:
        if not v.startswith(("sip:", "sips:")) or not _uri_host(v)[0]:
            raise ValueError(f"registrar must be a sip: URI with a host, got {v!r}")
        return v

    @model_validator(mode="after")
    def _dns(self) -> Trunk:
        try:
            ipaddress.ip_address(self.host.strip("[]"))
        except ValueError:
            return self
        if not self.allow_ip:
            raise ValueError(
                f"trunk {self.name}: registrar {self.registrar!r} is an IP address; trunks are "
                "addressed by DNS name (allow_ip: true overrides)"
            )
        return self

    @field_validator("outbound_prefixes")
    @classmethod
    def _prefixes(cls, v: list[str]) -> list[str]:
        for p in v:
            if not p.isdigit():
                raise ValueError(f"outbound prefix {p!r} must be digits")
        return v

    @property
    def host(self) -> str:
        return _uri_host(self.registrar)[0]

    @property
    def port(self) -> int | None:
        return _uri_host(self.registrar)[1]

    @property
    def sip_port(self) -> int:
        """The provider's port: the registrar's, else the transport's default."""
        return self.port or (5061 if self.transport == "tls" else 5060)

    def uri(self, user: str) -> str:
        """`user` at this provider, as the app server addresses it. Over TLS
        the port is always named (Kamailio paces a trunk by the host:port
        its INVITEs name) and `;transport=tls` makes the edge relay it over
        TLS, with SRTP."""
        if self.transport != "tls":
            port = f":{self.port}" if self.port else ""
            return f"sip:{user}@{self.host}{port}"
        return f"sip:{user}@{self.host}:{self.sip_port};transport=tls"

    @property
    def registrar_uri(self) -> str:
        """The registrar URI as the app server registers to it."""
        if self.transport == "tls" and "transport=" not in self.registrar.lower():
            return self.registrar + ";transport=tls"
        return self.registrar


class DidTarget(_Strict):
    """Where a DID goes: exactly one of room_access, extension, ivr."""

    room_access: str | None = None
    extension: str | None = None
    ivr: Literal["entry"] | None = None  # the conference entry IVR
    language: Language = "pt-BR"

    @model_validator(mode="after")
    def _one(self) -> DidTarget:
        chosen = [k for k in ("room_access", "extension", "ivr") if getattr(self, k)]
        if len(chosen) != 1:
            raise ValueError("a DID goes to exactly one of room_access, extension or ivr")
        return self


Limit = Literal["unlimited", "blocked"] | float
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WINDOW = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")


class Calendar(_Strict):
    """When a profile's lines may call out (closed days, holidays, windows)."""

    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = list(DAYS)
    holidays: Literal["deny", "allow"] = "allow"
    windows: list[str] = Field(default_factory=lambda: ["00:00-24:00"], max_length=4)

    @field_validator("windows")
    @classmethod
    def _windows(cls, v: list[str]) -> list[str]:
        for w in v:
            m = _WINDOW.match(w)
            if not m or (m.group(3) == "24" and m.group(4) != "00"):
                raise ValueError(f"window {w!r} must be HH:MM-HH:MM")
            if w[:5] >= w[6:]:
                raise ValueError(f"window {w!r} ends before it starts")
        return v


class Accumulated(_Strict):
    """One pool of minutes for several call types (mode: accumulated)."""

    minutes: float = Field(ge=0)
    types: list[str]


class Profile(_Strict):
    """What a line may call, when, and how many minutes per billing cycle."""

    quota: Literal["individual", "shared"] = "individual"
    mode: Literal["per_type", "accumulated"] = "per_type"
    cut_at_limit: bool = True
    limits: dict[str, Limit] = Field(default_factory=dict)
    accumulated: Accumulated | None = None
    calendar: Calendar = Calendar()
    allow_numbers: list[str] = Field(default_factory=list)
    deny_numbers: list[str] = Field(default_factory=list)
    whitelist_counts: bool = False

    @field_validator("limits")
    @classmethod
    def _limits(cls, v: dict[str, Limit]) -> dict[str, Limit]:
        from lines.classify import CALL_TYPES, GROUPS

        seen: dict[str, str] = {}
        for name, value in v.items():
            if name not in CALL_TYPES and name not in GROUPS:
                raise ValueError(f"limit {name!r} is neither a call type nor a group")
            if name in ("emergency",):
                raise ValueError("emergency calls cannot be limited")
            if isinstance(value, float) and value < 0:
                raise ValueError(f"limit {name}: minutes cannot be negative")
            if name in GROUPS:
                for t in GROUPS[name]:
                    if t in seen:
                        raise ValueError(
                            f"groups {seen[t]!r} and {name!r} both cover {t}: name {t} directly"
                        )
                    seen[t] = name
        return v

    @model_validator(mode="after")
    def _acc(self) -> Profile:
        from lines.classify import CALL_TYPES, GROUPS

        if self.mode == "accumulated":
            if self.accumulated is None:
                raise ValueError("mode accumulated needs an accumulated: {minutes, types}")
            for t in self.accumulated.types:
                if t not in CALL_TYPES and t not in GROUPS:
                    raise ValueError(f"accumulated type {t!r} is neither a call type nor a group")
        return self


class TemporaryProfile(_Strict):
    """A profile that replaces the permanent one between two dates (inclusive)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    profile: str
    start: dt.date = Field(alias="from")
    end: dt.date = Field(alias="to")

    @model_validator(mode="after")
    def _order(self) -> TemporaryProfile:
        if self.end < self.start:
            raise ValueError("temporary profile ends before it starts")
        return self


class Line(_Strict):
    """An extension (or `room:NAME` for dial-out) as a controlled line."""

    area_code: str = Field(pattern=r"^[1-9][1-9]$")
    department: str | None = None
    profile: str | None = None
    temporary: TemporaryProfile | None = None


class Department(_Strict):
    """A group of lines sharing a profile (and its quota when shared)."""

    profile: str


class Carrier(_Strict):
    """The long-distance carrier (CSP) put on LD and international calls."""

    csp: str = Field(pattern=r"^\d{2}$")
    force: bool = False


class ExtraHoliday(_Strict):
    """A local holiday, for the listed area codes (all when empty)."""

    date: dt.date
    name: str
    area_codes: list[str] = Field(default_factory=list)


class HolidaysConfig(_Strict):
    """Holidays from the `holidays` package plus local extras."""

    country: str = "BR"
    subdivision: str | None = None
    extra: list[ExtraHoliday] = Field(default_factory=list)

    @model_validator(mode="after")
    def _known_calendar(self) -> HolidaysConfig:
        # Checked here, not at the first call out: the package raises for a
        # country or subdivision it lacks, and every outbound call's decision
        # reads the calendar.
        supported = holidays_lib.list_supported_countries()
        if self.country not in supported:
            raise ValueError(
                f"holidays.country {self.country!r} is not a country the holidays package "
                "knows (an ISO 3166 code in capitals, e.g. BR)"
            )
        subdivisions = supported[self.country]
        if self.subdivision is not None and self.subdivision not in subdivisions:
            raise ValueError(
                f"holidays.subdivision {self.subdivision!r} is not one of {self.country}'s: "
                + ", ".join(subdivisions)
            )
        return self


class AlertsConfig(_Strict):
    """Consumption alerts: thresholds in percent of a limit, and where they go."""

    thresholds: list[int] = Field(default_factory=lambda: [60, 80, 100])
    webhook: str | None = None
    message_to: list[str] = Field(default_factory=list)
    # The alert's text (MESSAGE, webhook "text"): None follows the call that
    # crossed the mark (its access number's or its extension's language).
    language: Language | None = None
    # A webhook delivery that fails is tried again after 1x, 2x, 4x... this
    # many seconds, `webhook_retries` times; still failing, it is recorded
    # (`ponte report alerts`, column webhook).
    webhook_retries: int = Field(3, ge=0, le=10)
    webhook_backoff: float = Field(2.0, gt=0, le=300)
    webhook_timeout: float = Field(5.0, gt=0, le=60)


class SchedulesConfig(_Strict):
    """Scheduled dial-out (`ponte schedule add`): how late a schedule the
    appliance missed while down may still run, how many numbers one may
    call, how long each call rings, and how long the participants wait for
    the moderator's call (--moderator-first)."""

    late_minutes: int = Field(10, ge=0, le=1440)
    max_numbers: int = Field(50, ge=1, le=200)
    ring_seconds: int = Field(30, ge=5, le=120)
    moderator_wait_seconds: int = Field(60, ge=10, le=600)


class AccessNumber(_Strict):
    """A SIP user part that leads to the conference entry IVR."""

    user: str = Field(pattern=r"^[A-Za-z0-9_.+-]{1,64}$")
    language: Language = "pt-BR"
    # The one room this number serves, if it serves one: with several nodes,
    # Kamailio sends all its callers to one node at INVITE time (no hand-off
    # after the PIN). A number shared by many rooms is spread round-robin.
    room: str | None = None


class PromptsConfig(_Strict):
    """Where rendered prompts are cached and where admin overrides live."""

    cache_dir: Path = Path("/var/cache/ponte/prompts")
    override_dir: Path | None = None


class IvrConfig(_Strict):
    """Timing of digit collection in the entry IVR."""

    interdigit_timeout: float = Field(5.0, gt=0, le=60)
    total_timeout: float = Field(15.0, gt=0, le=300)
    max_tries: int = Field(3, ge=1, le=10)
    # PIN guessing: this many wrong PINs in `lockout_window` seconds, from any
    # sources, lock out the sources that keyed 3 or more of them for `lockout_seconds`.
    # The same budget holds per number dialed through Kamailio, whatever the
    # caller IDs: the wrong PIN that spends it ends its call, and so does any
    # wrong PIN on that number for the next `lockout_seconds`, during which new
    # calls from caller IDs are refused ("try later") unless that caller ID
    # keyed a valid PIN on that number in the last `lockout_known_days` days.
    # Extensions still get in (one try per call); direct calls are judged by
    # their address alone.
    lockout_after: int = Field(20, ge=1, le=10000)
    lockout_window: float = Field(600.0, gt=0, le=86400)
    lockout_seconds: float = Field(900.0, ge=0, le=86400)
    # A caller ID can be spoofed: a known one gets one try per call, and after
    # `lockout_known_tries` wrong PINs during the lockout it is refused too
    # (0: no caller ID is exempt; `lockout_known_days: 0` forgets them all).
    lockout_known_days: int = Field(90, ge=0, le=3650)
    lockout_known_tries: int = Field(3, ge=0, le=100)


# What an access profile (Opera360's "perfis de acesso") may grant: each is
# checked by provisioning.admins.permit wherever that function is triggered.
AdminFunction = Literal["reports", "room_actions", "reload", "backup", "schedules", "recordings"]
ADMIN_FUNCTIONS: tuple[str, ...] = get_args(AdminFunction)

# A Unix user name: Debian's useradd NAME_REGEX, capitals allowed.
_UNIX_USER = r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?$"


class Admin(_Strict):
    """A named admin and what they may change (administrator, sub-administrator
    of listed departments, or read-only)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.@-]{1,64}$")
    role: Literal["administrator", "sub_administrator", "read_only"]
    departments: list[str] = Field(default_factory=list)
    password_hash: str | None = None  # scrypt, for the web console; never the clear text
    # The Unix users who may act as this admin on the control socket (`--as`),
    # as the kernel names the peer (SO_PEERCRED). Empty: root alone may.
    unix_users: list[Annotated[str, Field(pattern=_UNIX_USER)]] = Field(
        default_factory=list, max_length=64
    )
    # A name from `access_profiles`: the admin may then do only its functions,
    # within the role's rules. None: whatever the role allows.
    profile: str | None = None

    @field_validator("unix_users")
    @classmethod
    def _once_each(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("a Unix user is listed twice")
        return v

    @model_validator(mode="after")
    def _scope(self) -> Admin:
        if self.role == "sub_administrator" and not self.departments:
            raise ValueError(f"admin {self.name}: a sub_administrator needs departments")
        if self.role != "sub_administrator" and self.departments:
            raise ValueError(f"admin {self.name}: only a sub_administrator has departments")
        return self


class ControlConfig(_Strict):
    """The local control socket used by `ponte status` and the tests."""

    socket: Path = Path("/run/ponte/control.sock")


class WebConfig(_Strict):
    """The web console (rooms, actions, usage, events): off unless `listen` is set."""

    listen: str | None = None  # HOST:PORT on loopback or the LAN, e.g. 127.0.0.1:8088
    ice_servers: list[str] = Field(default_factory=list)  # e.g. stun:stun.lan:3478; none public
    webhooks: list[str] = Field(default_factory=list)  # URLs that receive each room event (JSON)
    session_minutes: int = Field(480, ge=5, le=10080)  # a login lasts this long
    # The prompts a browser participant hears (help, music announcements).
    language: Language = "pt-BR"

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str | None) -> str | None:
        if v is None:
            return None
        host, _ = _host_port(v, "web.listen")
        addr = ipaddress.ip_address(host)
        if addr.is_unspecified or not (addr.is_loopback or addr.is_private):
            raise ValueError(
                f"web.listen must be a loopback or LAN address (e.g. 127.0.0.1:8088), got {host}"
            )
        return v

    @field_validator("ice_servers")
    @classmethod
    def _ice(cls, v: list[str]) -> list[str]:
        for url in v:
            if not re.match(r"^(stun|turn|turns):[^\s:/?#]+(:\d{1,5})?(\?[^\s]*)?$", url):
                raise ValueError(f"ICE server {url!r} must look like stun:HOST[:PORT]")
        return v

    @field_validator("webhooks")
    @classmethod
    def _hooks(cls, v: list[str]) -> list[str]:
        for url in v:
            if not re.match(r"^https?://[^\s/?#]+(/[^\s]*)?$", url):
                raise ValueError(f"webhook {url!r} must be an http:// or https:// URL")
        if len(v) != len(set(v)):
            raise ValueError("a webhook URL is listed twice")
        return v

    @property
    def host(self) -> str | None:
        return _host_port(self.listen, "web.listen")[0] if self.listen else None

    @property
    def port(self) -> int | None:
        return _host_port(self.listen, "web.listen")[1] if self.listen else None


class Config(_Strict):
    """The whole provisioning tree."""

    sip: SipConfig = SipConfig()
    rooms: list[Room] = Field(default_factory=list)
    access_numbers: list[AccessNumber] = Field(default_factory=list)
    prompts: PromptsConfig = PromptsConfig()
    ivr: IvrConfig = IvrConfig()
    keys: KeysConfig = KeysConfig()
    recordings: RecordingsConfig = RecordingsConfig()
    control: ControlConfig = ControlConfig()
    pbx: PbxConfig = PbxConfig()
    extensions: list[Extension] = Field(default_factory=list)
    trunks: list[Trunk] = Field(default_factory=list)
    dids: dict[str, DidTarget] = Field(default_factory=dict)
    lines: dict[str, Line] = Field(default_factory=dict)
    departments: dict[str, Department] = Field(default_factory=dict)
    profiles: dict[str, Profile] = Field(default_factory=dict)
    carrier: Carrier | None = None
    holidays: HolidaysConfig = HolidaysConfig()
    alerts: AlertsConfig = AlertsConfig()
    schedules: SchedulesConfig = SchedulesConfig()
    billing_cycle_day: int = Field(1, ge=1, le=28)
    timezone: str = "America/Sao_Paulo"
    # The records: a file path (SQLite, the default: nothing to install) or a
    # postgresql://user@host/db URL, shared by several app-server nodes.
    database: str = "/var/lib/ponte/ponte.db"
    state_dir: Path = Path("/var/lib/ponte")  # recorded names live here
    admins: list[Admin] = Field(default_factory=list)
    # Named sets of functions given to admins (`admins[].profile`).
    access_profiles: dict[
        Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")], list[AdminFunction]
    ] = Field(default_factory=dict)
    web: WebConfig = WebConfig()
    # App-server nodes on other machines behind this edge (issue 19).
    nodes: list[NodeEntry] = Field(default_factory=list)
    # The operators (issue 20): the extension(s) that *90 in a room and `0` at
    # the PIN prompt ring, all at once; a room's own `operator:` overrides it.
    operator: Operators | None = None
    # How long the operators' phones ring before the caller goes back.
    operator_ring_seconds: float = Field(30.0, ge=5, le=300)

    @field_validator("database")
    @classmethod
    def _database(cls, v: str) -> str:
        if "://" not in v:
            if not v.strip():
                raise ValueError("database: give a file path or a postgresql:// URL")
            return v
        url = urlsplit(v)
        if url.scheme not in ("postgresql", "postgres", "postgresql+psycopg"):
            raise ValueError(
                f"database: {url.scheme}:// is not supported; give a file path (SQLite) "
                "or a postgresql://user@host/database URL"
            )
        if not url.hostname or not url.path.strip("/"):
            raise ValueError(
                "database: a PostgreSQL URL names a host and a database, as in "
                "postgresql://ponte@db.example.net/ponte"
            )
        return v

    @field_validator("access_numbers", mode="before")
    @classmethod
    def _plain_users(cls, v: object) -> object:
        # `- conf` is shorthand for `- {user: conf}`.
        if isinstance(v, list):
            return [{"user": item} if isinstance(item, str) else item for item in v]
        return v

    @model_validator(mode="after")
    def _unique(self) -> Config:
        names: set[str] = set()
        pins: dict[str, str] = {}
        for room in self.rooms:
            if room.name in names:
                raise ValueError(f"room name {room.name!r} is used twice")
            names.add(room.name)
            for pin in (room.participant_pin, room.moderator_pin):
                if pin in pins:
                    raise ValueError(
                        f"PIN {pin} of room {room.name!r} is already used by room {pins[pin]!r}"
                    )
                pins[pin] = room.name
        for room in self.rooms:
            # An individual counter-PIN that is also an entry PIN would let its
            # holder (or whoever learns it) into that room on its own.
            for c in room.counter_pins:
                if c.pin in pins:
                    raise ValueError(
                        f"the counter-PIN of {c.name!r} in room {room.name!r} is an entry "
                        f"PIN of room {pins[c.pin]!r}"
                    )
        for a in self.access_numbers:
            if a.room is not None and a.room not in names:
                raise ValueError(f"access number {a.user} serves unknown room {a.room!r}")
        users = [a.user for a in self.access_numbers]
        if len(users) != len(set(users)):
            raise ValueError("an access number is listed twice")
        numbers = [e.number for e in self.extensions]
        if len(numbers) != len(set(numbers)):
            raise ValueError("an extension number is listed twice")
        if self.extensions and self.pbx.port == self.sip.port and self.pbx.host == self.sip.host:
            raise ValueError("pbx.listen and sip.listen must differ")
        if self.pbx.faces_network and self.sip.listen == self.pbx.internal:
            raise ValueError(
                f"sip.listen {self.sip.listen} is taken by Kamailio's loopback socket "
                f"(pbx.listen's port {self.pbx.port} on 127.0.0.1): pick another port"
            )
        lo, hi = self.pbx.media_range
        rlo, rhi = self.sip.rtp_range
        if (self.extensions or self.trunks) and not (hi < rlo or rhi < lo):
            raise ValueError(
                f"pbx.media_ports {self.pbx.media_ports} overlaps sip.rtp_ports "
                f"{self.sip.rtp_ports}: rtpengine and the app server share loopback"
            )
        names = [t.name for t in self.trunks]
        if len(names) != len(set(names)):
            raise ValueError("a trunk name is listed twice")
        for trunk in self.trunks:
            if trunk.transport == "tls" and self.pbx.tls is None:
                raise ValueError(
                    f"trunk {trunk.name}: transport tls needs pbx.tls (Kamailio's TLS module)"
                )
        if self.pbx.tls is not None and self.pbx.tls_listen == self.sip.listen:
            raise ValueError(f"pbx.tls.listen {self.pbx.tls_listen} is sip.listen's address")
        for name, line in self.lines.items():
            for prof in filter(None, (line.profile, line.temporary and line.temporary.profile)):
                if prof not in self.profiles:
                    raise ValueError(f"line {name} uses unknown profile {prof!r}")
            if line.department and line.department not in self.departments:
                raise ValueError(f"line {name} is in unknown department {line.department!r}")
            if not line.profile and not line.department:
                raise ValueError(f"line {name} needs a profile or a department")
        for name, dep in self.departments.items():
            if dep.profile not in self.profiles:
                raise ValueError(f"department {name} uses unknown profile {dep.profile!r}")
        for room in self.rooms:
            if room.department and room.department not in self.departments:
                raise ValueError(f"room {room.name} is in unknown department {room.department!r}")
        admins = [a.name for a in self.admins]
        if len(admins) != len(set(admins)):
            raise ValueError("an admin name is listed twice")
        for admin in self.admins:
            for dep in admin.departments:
                if dep not in self.departments:
                    raise ValueError(f"admin {admin.name} manages unknown department {dep!r}")
            if admin.profile is not None and admin.profile not in self.access_profiles:
                known = ", ".join(sorted(self.access_profiles)) or "none defined"
                raise ValueError(
                    f"admin {admin.name} has unknown access profile {admin.profile!r} ({known})"
                )
        self._check_nodes()
        for did, target in self.dids.items():
            if target.room_access and self.access_number(target.room_access) is None:
                raise ValueError(f"DID {did} goes to unknown access number {target.room_access!r}")
            if target.extension and target.extension not in numbers:
                raise ValueError(f"DID {did} goes to unknown extension {target.extension!r}")
        for where, value in [("operator", self.operator)] + [
            (f"room {r.name}: operator", r.operator) for r in self.rooms
        ]:
            for ext in operator_list(value):
                if ext not in numbers:
                    raise ValueError(
                        f"{where} {ext} is not an extension: list it under `extensions:` "
                        "(the operator's phone registers to Kamailio as one)"
                    )
        return self

    def _check_nodes(self) -> None:
        if not self.nodes:
            return
        names = [n.name for n in self.nodes]
        if len(names) != len(set(names)):
            raise ValueError("a node name is listed twice")
        listens = [n.listen for n in self.nodes]
        if len(listens) != len(set(listens)):
            raise ValueError("two nodes have the same listen address")
        if "://" not in self.database:
            raise ValueError(
                "nodes: app-server nodes share their records, rooms and guards through a "
                "PostgreSQL `database` (a postgresql:// URL), not a SQLite file"
            )
        remote = [n.name for n in self.nodes if not n.on_loopback]
        if remote and not self.pbx.internal_listen:
            raise ValueError(
                f"nodes: {remote[0]} is on another machine: set pbx.internal_listen, "
                "the edge's address on the nodes' network"
            )

    def node(self, name: str) -> NodeEntry | None:
        """The `nodes:` entry called `name`, if listed."""
        return next((n for n in self.nodes if n.name == name), None)

    def trunk_for_number(self, number: str) -> tuple[Trunk, str] | None:
        """The trunk whose longest outbound prefix starts the dialed number."""
        best: tuple[int, Trunk] | None = None
        for t in self.trunks:
            for p in t.outbound_prefixes:
                if number.startswith(p) and (best is None or len(p) > best[0]):
                    best = (len(p), t)
        return (best[1], number) if best else None

    def did_target(self, user: str) -> DidTarget | None:
        """The DID route for a dialed user part ('+55…' or '55…')."""
        for candidate in (user, "+" + user.lstrip("+"), user.lstrip("+")):
            if candidate in self.dids:
                return self.dids[candidate]
        return None

    def admin(self, name: str) -> Admin | None:
        """The admin called `name`, if listed."""
        return next((a for a in self.admins if a.name == name), None)

    def operators(self, room: str | None) -> tuple[str, ...]:
        """The extensions a help call from `room` rings (None: from the PIN
        prompt): the room's own `operator:`, else the global one."""
        r = next((x for x in self.rooms if x.name == room), None) if room else None
        if r is not None and r.operator is not None:
            return operator_list(r.operator)
        return operator_list(self.operator)

    def access_number(self, user: str) -> AccessNumber | None:
        """The access number whose SIP user part is `user`, if any."""
        return next((a for a in self.access_numbers if a.user == user), None)


def json_schema() -> dict:
    """The JSON Schema of the provisioning file, from the same models.

    Cross-field rules (unique PINs, known profiles, overlapping groups) are
    checked by `ponte check`; the schema carries everything an editor can
    check as the admin types: keys, types, patterns, ranges and choices.
    """
    schema = Config.model_json_schema(mode="validation")
    # `- conf` is accepted as shorthand for `- {user: conf}`.
    access = schema["properties"]["access_numbers"]
    access["items"] = {"anyOf": [access["items"], {"type": "string"}]}
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "ponte provisioning"
    return schema
