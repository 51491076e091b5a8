"""The pjsua2 objects the adapter (pbx/sipua.py) subclasses or keeps per call.

Part of the adapter, so bound by its rules (pbx/sipua.py's docstring): pjsua2
runs every callback here on the one polling thread, and `SipUA._legs` holds
the only reference to each `_Call` until its DISCONNECTED callback. These
objects turn pjsua2's callbacks into calls on their owner, the `SipUA`, which
they know by its shape (`_Owner`): pbx/sipua.py imports this module, never
the reverse.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import pjsua2 as pj

from pbx.sipevents import SipError, SipEvents
from pbx.sipmsg import printable

if TYPE_CHECKING:
    # Loaded at run time by pbx/sipua.py, which must make _pjsua2's symbols
    # global first; only the port's type is needed here.
    from pbx import _pjx

log = logging.getLogger("ponte.sip")

DTMF_METHODS = {
    pj.PJSUA_DTMF_METHOD_RFC2833: "rfc2833",
    pj.PJSUA_DTMF_METHOD_SIP_INFO: "info",
}


class _Owner(Protocol):
    """What these objects call on their `SipUA` (all on the polling thread)."""

    events: SipEvents
    _ep: Any  # the pj.Endpoint, None before start and after shutdown
    _port_ended: list[tuple[int, int]]  # (leg, code) of ports hung up, ended on the next poll

    def _on_incoming(self, acc: _Account, prm: Any) -> None: ...
    def _on_call_state(self, call: _Call, prm: Any) -> None: ...
    def _on_media_state(self, call: _Call) -> None: ...


class _Call(pj.Call):
    """One pjsua call, owned by `SipUA._legs` until its DISCONNECTED callback.

    pjsua must never make a call of its own on one of ours: following a
    REFER it places the new call with our Call as its user data, and pjsua2
    then repoints this object at whichever of the two calls last had an
    event (`Call::lookup`). Our DISCONNECTED handling dropped the leg when
    the transferred call failed, the object was freed, and the next event
    of the surviving call read freed memory: a segfault in _pjsua2. So
    transfers and replacements are refused here (and by the SIP screen in
    pbx/_pjx.c before pjsua sees them), and an event for a pjsua call that
    is not ours is never taken for our leg's.
    """

    def __init__(self, ua: _Owner, leg: int, acc: pj.Account, call_id: int | None = None) -> None:
        if call_id is None:
            super().__init__(acc)
        else:
            super().__init__(acc, call_id)
        self.ua = ua
        self.leg = leg
        # pjsua's id for our call: known now for an inbound call, learnt from
        # the first event (during makeCall) for an outbound one.
        self.pj_id: int | None = call_id
        self.audio: pj.AudioMedia | None = None
        self.media_reported = False  # on_media_ready was sent (later states: on_media_changed)
        self.confirmed = False
        self.answered = False  # we sent a 2xx (an inbound call)

    def ours(self) -> bool:
        """Whether pjsua2 points this object at our own call right now."""
        current = int(self.getId())
        if self.pj_id is None:
            self.pj_id = current
        if current == self.pj_id:
            return True
        log.error(
            "call %d: pjsua reported pjsua call %d on this call's object "
            "(a call pjsua made by itself); ignored",
            self.leg,
            current,
        )
        return False

    def onCallState(self, prm: pj.OnCallStateParam) -> None:  # noqa: N802
        if self.ours():
            self.ua._on_call_state(self, prm)

    def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:  # noqa: N802
        if self.ours():
            self.ua._on_media_state(self)

    def onDtmfDigit(self, prm: pj.OnDtmfDigitParam) -> None:  # noqa: N802
        if self.ours():
            self.ua.events.on_digit(self.leg, prm.digit, DTMF_METHODS.get(prm.method, "rfc2833"))

    def onCallTransferRequest(self, prm: pj.OnCallTransferRequestParam) -> None:  # noqa: N802
        # A final refusal: pjsua answers the REFER with it and places no call.
        prm.statusCode = 403
        log.warning(
            "call %d: REFER to %s refused (403): the app server never transfers",
            self.leg,
            printable(str(prm.dstUri)),
        )

    def onCallTransferStatus(self, prm: pj.OnCallTransferStatusParam) -> None:  # noqa: N802
        # Progress of a REFER we sent (test phones only: see SipUA.refer).
        handler = getattr(self.ua.events, "on_transfer_status", None)
        if handler is not None and self.ours():
            handler(self.leg, int(prm.statusCode), bool(prm.finalNotify))

    def onCallReplaceRequest(self, prm: pj.OnCallReplaceRequestParam) -> None:  # noqa: N802
        # pjsua would answer the replacing INVITE itself, a call that never
        # reaches _on_incoming. prm.reason is left alone: pjsua2 2.12.1 hands
        # pjsua a pointer into it that dies with prm, and pjsua only
        # replaces a 2-character reason ("OK") with the code's own text.
        prm.statusCode = 403
        log.warning("call %d: INVITE with Replaces refused (403)", self.leg)


class _PortCall:
    """A conference port fed by Python (a recorder's, pbx/recorder.py) instead of RTP.

    It stands where a `_Call` stands in `_Leg`, so players, recorders,
    connect/disconnect and levels work on it unchanged; `hangup` removes the
    port and reports the leg disconnected on the next poll, as a call would.
    """

    def __init__(self, ua: _Owner, leg: int, port: _pjx.MediaPort) -> None:
        self.ua = ua
        self.leg = leg
        self.port = port
        self.confirmed = True
        # pjsua2 has no AudioMedia constructor for a bare slot; its port list
        # holds one per slot. The vector is kept: its elements live in it.
        self._ports = ua._ep.mediaEnumPorts2() if ua._ep is not None else None
        self.audio: pj.AudioMedia | None = None
        for i in range(len(self._ports or ())):
            assert self._ports is not None  # for mypy: the loop runs only with the vector
            if self._ports[i].getPortId() == port.slot:
                self.audio = self._ports[i]
                break
        if self.audio is None:
            raise SipError(f"media port slot {port.slot} not on the bridge")

    def hangup(self, prm: pj.CallOpParam) -> None:
        self.ua._port_ended.append((self.leg, int(prm.statusCode or 200)))


class _Account(pj.Account):
    def __init__(self, ua: _Owner, key: str) -> None:
        super().__init__()
        self.ua = ua
        self.key = key

    def onIncomingCall(self, prm: pj.OnIncomingCallParam) -> None:  # noqa: N802
        self.ua._on_incoming(self, prm)

    def onInstantMessage(self, prm: pj.OnInstantMessageParam) -> None:  # noqa: N802
        handler = getattr(self.ua.events, "on_message", None)
        if handler is not None:
            handler(str(prm.fromUri), str(prm.msgBody))

    def onRegState(self, prm: pj.OnRegStateParam) -> None:  # noqa: N802
        info = self.getInfo()
        handler = getattr(self.ua.events, "on_registration", None)
        if handler is not None:
            handler(self.key, int(prm.code), str(prm.reason), bool(info.regIsActive))


def _header_vector(headers: dict[str, str] | None) -> pj.SipHeaderVector:
    vec = pj.SipHeaderVector()
    for name, value in (headers or {}).items():
        h = pj.SipHeader()
        h.hName = name
        h.hValue = value
        vec.append(h)
    return vec


@dataclass
class _Leg:
    call: _Call
    players: dict[str, pj.AudioMediaPlayer]
    recorder: pj.AudioMediaRecorder | None = None
