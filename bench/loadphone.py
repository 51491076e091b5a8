"""pbx/softphone.py, with opus at a chosen sample rate: the benches' load generator.

pjmedia runs opus at 48 kHz unless told otherwise, and pbx/softphone.py has
no option for it. `--opus-rate 16000` sets the opus codec's clock rate on the
phone's Endpoint (codecSetParam) and advertises it in the SDP
(maxplaybackrate / sprop-maxcapturerate = 16000), so the legs encode and
decode wideband (16 kHz) opus. Every other option is the softphone's own:

    .venv/bin/python bench/loadphone.py --opus-rate 16000 --codecs opus/48000 \\
        --target sip:conf@127.0.0.1:5080 --calls 50 --rate 50 --pins 1111 \\
        --script "wait_media 10; dtmf {pin}#; tone 440; wait_end 60"
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pjsua2 as pj  # noqa: E402

from pbx import softphone  # noqa: E402
from pbx.sipua import SipUA  # noqa: E402

OPUS_ID = "opus/48000/2"  # RFC 7587: always 48000/2 in the SDP, whatever the real rate


def set_opus_rate(ua: SipUA, rate: int) -> None:
    """Run opus at `rate` Hz, mono, on this Endpoint, and say so in the SDP."""
    ep = ua._ep  # the adapter holds the one Endpoint
    assert ep is not None
    param = ep.codecGetParam(OPUS_ID)
    param.info.clockRate = rate
    param.info.channelCnt = 1
    fmtp = pj.CodecFmtpVector()
    for name, value in (
        ("useinbandfec", "1"),
        ("maxplaybackrate", str(rate)),
        ("sprop-maxcapturerate", str(rate)),
    ):
        f = pj.CodecFmtp()
        f.name, f.val = name, value
        fmtp.append(f)
    param.setting.decFmtp = fmtp
    ep.codecSetParam(OPUS_ID, param)


def main(argv: list[str]) -> int:
    """Strip `--opus-rate N`, patch the adapter's codec set-up, run the softphone."""
    rate = 0
    if "--opus-rate" in argv:
        i = argv.index("--opus-rate")
        rate = int(argv[i + 1])
        del argv[i : i + 2]
    if rate:
        original = SipUA._set_codecs

        def with_opus_rate(self: SipUA) -> None:
            original(self)
            set_opus_rate(self, rate)

        SipUA._set_codecs = with_opus_rate  # type: ignore[method-assign]
    return softphone.main(argv)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
