"""How the adapter (pbx/sipua.py) configures pjsua2: the Endpoint, where its
accounts live, its codecs, and where pjsip's log goes.

Part of the adapter, like pbx/sipcalls.py: every function here is called on
the one thread that makes pjsua2 calls, and builds or applies pjsua2 config
objects without keeping any (`SipUA` keeps the log writer alive).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pjsua2 as pj

from pbx import _pjx
from pbx.opus import OpusSettings
from pbx.sipmsg import parse_name_addr, uri_user
from pcm import FRAME_MS

pjlog = logging.getLogger("ponte.pjsip")


class _LogWriter(pj.LogWriter):
    """Routes pjsip's log into Python logging."""

    _LEVELS = {0: logging.CRITICAL, 1: logging.ERROR, 2: logging.WARNING, 3: logging.INFO}

    def write(self, entry: pj.LogEntry) -> None:  # noqa: D102 - pjsua2 callback
        level = self._LEVELS.get(entry.level, logging.DEBUG)
        # pjsip's own level 3 is chatty; keep it out of our INFO call lines.
        pjlog.log(logging.DEBUG if level == logging.INFO else level, entry.msg.rstrip())


def ep_config(
    *,
    max_calls: int,
    user_agent: str,
    writer: _LogWriter,
    log_level: int,
    clock_rate: int,
    media_polled: bool = False,
    codec_vad: bool = False,
    jitter_ms: int = 0,
    jitter_hold_ms: int = 0,
) -> pj.EpConfig:
    """The Endpoint's config: one thread, the log into `writer`, the bridge
    at `clock_rate`; with `media_polled`, RTP is read by the poll too. With
    `codec_vad`, each codec's own `vad` setting counts (Opus DTX);
    `set_codecs` then turns it off for every other codec. With `jitter_ms`,
    the adaptive jitter buffer holds at most that much; with `jitter_hold_ms`,
    it fills that much before it plays, at the start and after running dry."""
    cfg = pj.EpConfig()
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = True
    cfg.uaConfig.maxCalls = max_calls
    cfg.uaConfig.userAgent = user_agent
    cfg.logConfig.writer = writer
    cfg.logConfig.level = log_level
    cfg.logConfig.consoleLevel = log_level
    cfg.logConfig.decor = 0
    cfg.medConfig.clockRate = clock_rate
    cfg.medConfig.sndClockRate = clock_rate
    cfg.medConfig.channelCount = 1
    cfg.medConfig.audioFramePtime = FRAME_MS
    cfg.medConfig.ptime = 20
    # pjsua's no_vad clears every codec's `vad` on every call, Opus's DTX
    # with it: kept only while no codec wants it.
    cfg.medConfig.noVad = not codec_vad
    cfg.medConfig.ecTailLen = 0  # a bridge has no acoustic echo to cancel
    cfg.medConfig.quality = 4
    # The null device must never auto-close: with it closed the bridge's
    # clock stops and no RTP (nor RFC 2833) goes out.
    cfg.medConfig.sndAutoCloseTime = -1
    if jitter_ms:
        # A test or bench phone's cap (pjmedia's own maximum is 500 ms): a
        # calling phone's buffer, filled by the start-up burst, otherwise
        # adds ~0.4 s to what it records and hides the bridge's own delay.
        # The app server keeps pjmedia's default.
        cfg.medConfig.jbMax = jitter_ms
    if jitter_hold_ms:
        # A test phone whose recording is read in 20 ms windows: its RTP is
        # read by a Python loop that a loaded machine delays now and then,
        # and a packet read late into an empty buffer is a glitch in the
        # recording that is not the far end's.
        cfg.medConfig.jbInit = jitter_hold_ms
        cfg.medConfig.jbMinPre = jitter_hold_ms
    if media_polled:
        # pjmedia's worker thread polls its sockets with a 500 ms timeout,
        # and an outbound call's first RTP is often read only when that
        # wait ends (measured: nothing for ~480 ms after the 200 OK, then
        # ~25 packets at once, though the answerer paced them): the
        # adaptive jitter buffer keeps the whole burst, ~500 ms of delay it
        # sheds at ~50 ms a second. Read by our own poll (no worker), RTP
        # is taken as it comes. For test phones, whose recordings must show
        # the server's delay, not their own start-up; the app server keeps
        # the worker (RTP off its Python loop; ponte/handoff.py deals with
        # the burst on its own outbound leg).
        cfg.medConfig.hasIoqueue = False
        cfg.medConfig.threadCnt = 0
    return cfg


def own_address(
    acfg: pj.AccountConfig,
    host: str,
    port: int,
    user: str,
    rtp_range: tuple[int, int],
    transport: str = "",
) -> None:
    """Every account's Contact and RTP stay on our own (loopback) address.

    Left alone, pjsua builds a dialog's Contact from the interface that
    routes to the top Record-Route (Kamailio's LAN address, with our
    port, where nothing listens) and binds a trunk account's RTP to
    0.0.0.0:4000; Kamailio and rtpengine face the network, we do not.
    `port` is the SIP port we are bound to; `user` the Contact's user
    when the account's idUri has none; `transport` the Contact's transport
    parameter ("tls" for an account on the TLS transport).
    """
    parsed = parse_name_addr(acfg.idUri)
    contact_user = (uri_user(parsed.uri) if parsed else "") or user
    params = f";transport={transport}" if transport else ""
    acfg.sipConfig.contactForced = f"<sip:{contact_user}@{host}:{port}{params}>"
    acfg.natConfig.contactRewriteUse = 0
    acfg.natConfig.viaRewriteUse = 0
    acfg.natConfig.sdpNatRewriteUse = 0
    lo, hi = rtp_range
    tcfg = acfg.mediaConfig.transportConfig
    tcfg.port = lo
    tcfg.portRange = hi - lo
    tcfg.boundAddress = host
    tcfg.publicAddress = host
    acfg.mediaConfig.transportConfig = tcfg


def set_codecs(
    ep: pj.Endpoint,
    codecs: Sequence[str],
    opus_rate: int,
    opus: OpusSettings | None = None,
) -> None:
    """Enable `codecs` ("PCMU/8000"...) in that order of preference, and no others.

    With `opus_rate`, opus runs at that clock rate (mono) instead of 48 kHz;
    `opus` sets its encoder (complexity, bitrate, DTX, FEC, CBR).
    """
    infos = ep.codecEnum2()  # held: a temporary's vector is freed under you
    wanted = {c.lower(): len(codecs) - i for i, c in enumerate(codecs)}
    for info in infos:
        cid = info.codecId
        key = cid.rsplit("/", 1)[0].lower()  # "PCMU/8000/1" -> "pcmu/8000"
        prio = wanted.get(key, 0)
        ep.codecSetPriority(cid, 128 + prio if prio else 0)
        if key == "opus/48000" and (opus_rate or opus is not None):
            _set_opus(ep, cid, opus_rate, opus or OpusSettings())
        elif opus is not None and opus.dtx and prio:
            # pjsua's no_vad is off for Opus's DTX (ep_config): silence
            # suppression stays off for the others (G.711's default is on),
            # whose phones expect a packet every 20 ms.
            param = ep.codecGetParam(cid)
            param.setting.vad = False
            ep.codecSetParam(cid, param)


def _set_opus(ep: pj.Endpoint, cid: str, opus_rate: int, opus: OpusSettings) -> None:
    # The encoder's own knobs live in pjmedia's Opus config (module-wide, read
    # when a leg's codec opens); DTX is the codec param's `vad`; the SDP's
    # fmtp says what we want from the far end, and is built here whole.
    param = ep.codecGetParam(cid)
    rate = opus_rate or int(param.info.clockRate)
    _pjx.set_opus_config(rate, opus.bitrate, opus.complexity, opus.cbr)
    param = ep.codecGetParam(cid)  # as the config just left it
    param.info.clockRate = rate
    param.info.channelCnt = 1
    param.info.avgBps = opus.bitrate
    param.setting.vad = opus.dtx
    param.setting.plc = opus.fec
    fmtp = pj.CodecFmtpVector()
    pairs = [("maxplaybackrate", str(rate)), ("sprop-maxcapturerate", str(rate))]
    if opus.fec:
        pairs.append(("useinbandfec", "1"))
    if opus.bitrate:
        pairs.append(("maxaveragebitrate", str(opus.bitrate)))
    if opus.dtx:
        pairs.append(("usedtx", "1"))
    if opus.cbr:
        pairs.append(("cbr", "1"))
    for name, value in pairs:
        f = pj.CodecFmtp()
        f.name, f.val = name, value
        fmtp.append(f)
    param.setting.decFmtp = fmtp
    ep.codecSetParam(cid, param)


def build_info() -> dict[str, object]:
    """This pjsua2 build's version and codecs, from a throwaway Endpoint.

    Meant for a child process (the benches ask with `python -m pbx.sipua`):
    one process may hold only one Endpoint.
    """
    ep = pj.Endpoint()
    ep.libCreate()
    cfg = pj.EpConfig()
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = True
    cfg.logConfig.level = 0
    cfg.logConfig.consoleLevel = 0
    ep.libInit(cfg)
    ep.audDevManager().setNullDev()
    ep.libStart()
    try:
        infos = ep.codecEnum2()  # held: a temporary's vector is freed under you
        return {"version": ep.libVersion().full, "codecs": [i.codecId for i in infos]}
    finally:
        ep.libDestroy()
