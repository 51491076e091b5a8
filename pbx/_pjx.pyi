"""Types of pbx/_pjx.c (a C extension, so the type checker cannot read it).

Kept by hand beside the C source: a change to a method table there changes this file.
"""

from typing_extensions import Buffer

class MediaPort:
    """A conference-bridge port fed and drained by Python, one frame per call."""

    def __init__(
        self,
        clock_rate: int = 8000,
        ptime_ms: int = 20,
        depth: int = 8,
        name: str = "ponte-port",
        keep_silence: bool = False,
    ) -> None: ...
    @property
    def slot(self) -> int:
        """Conference slot (-1 once closed)."""
    @property
    def frame_bytes(self) -> int:
        """Bytes per frame (s16le mono)."""
    def push(self, frame: Buffer, /) -> None:
        """Queue one frame for the bridge."""
    def pull(self) -> bytes | None:
        """The oldest frame the bridge delivered, if any."""
    def close(self) -> None:
        """Remove the port from the bridge (pjsua thread only)."""
    def stats(self) -> dict[str, int]:
        """Frame counters: frames_in/out, underruns, dropped_in/out, queued_in/out."""

def signal_level(slot: int, /) -> tuple[int, int]:
    """(tx, rx): last levels 0-255 of a conference slot (rx: what the member says)."""

def set_opus_config(rate: int, bitrate: int, complexity: int, cbr: bool, /) -> None:
    """pjmedia's Opus encoder for the legs opened from now on (bitrate 0: libopus chooses)."""

def install_screen() -> bool:
    """Install the SIP screen (once per process); False if it already was."""

def screen_stats() -> dict[str, int]:
    """{rule: requests refused (or ACKs dropped)}."""

def set_talker_gate(level: int, hangover_ms: int, /) -> None:
    """A member quieter than `level` (mean absolute sample, 0-32767) for longer than
    `hangover_ms` is mixed to nobody; level 0 turns the gate off (pjsua thread, after libInit)."""

def set_shared_encode(on: bool, /) -> None:
    """Listeners who hear the same talkers share one encode (True, the default); False:
    every leg encodes its own frames (takes effect from the next frame)."""

def set_jb_discard(algo: int, /) -> None:
    """The receive jitter buffer's discard algorithm of legs opened from now on: 0 none,
    1 static, 2 progressive, -1 pjsua's own (progressive)."""

def shared_encode_stats() -> dict[str, int]:
    """{shared: frames sent with a payload another stream of their listener group encoded,
    encoded: frames encoded for a group} (G.711, G.722 and Opus, since start)."""
