"""WAV files written from the conference bridge without ever blocking its clock.

A recorder is a pbx/_pjx.c MediaPort made with `keep_silence`: on every tick
pjmedia's clock thread copies one frame (the port's mix, or zeros when nothing
reached it) into the port's ring under a plain mutex, and returns. No file I/O
and no Python ever run on the clock thread, unlike pjmedia's own WAV writer
(AudioMediaRecorder), which writes from the clock thread.

Two Python threads, shared by every recorder of the process, do the rest:

* the **drain** thread pulls every port's ring every DRAIN_SECONDS into a
  queue (it only copies bytes, so it keeps up even when the disk does not);
* the **writer** thread takes frames off that queue and writes the files.

A disk that stalls holds up the writer only: frames wait in the queue (up to
QUEUE_FRAMES, minutes of audio), the drain thread goes on emptying the rings,
and the bridge never waits. The port's ring (RING_FRAMES) only has to cover
the drain thread's own scheduling delays; a frame it had to drop is counted
(`dropped`) and shows in the recording's record. This module imports no
pjsua2: the adapter (pbx/sipua.py) creates and closes the ports.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("ponte.sip")

DRAIN_SECONDS = 0.02  # one frame: the ring never holds more than a few
RING_FRAMES = 250  # 5 s of 20 ms frames: the most a MediaPort holds
QUEUE_FRAMES = 15000  # 5 min of one 20 ms stream waiting for a slow disk

Pull = Callable[[], bytes | None]
Stats = Callable[[], dict[str, int]]


@dataclass
class Track:
    """One file being recorded: where its frames come from and how it went."""

    path: Path
    rate: int
    pull: Pull
    stats: Stats
    frames: int = 0  # frames written to the file
    dropped: int = 0  # frames lost (the ring or the queue overflowed)
    started: float = field(default_factory=time.monotonic)
    closed: bool = False
    ended: float | None = None
    done: threading.Event = field(default_factory=threading.Event)
    error: str | None = None
    on_done: Callable[[Result], None] | None = None  # called on the writer thread

    def result(self) -> Result:
        """What was written (complete once `done` is set)."""
        size = self.path.stat().st_size if self.path.exists() else 0
        seconds = (self.ended or time.monotonic()) - self.started
        return Result(self.path, self.frames, size, self.dropped, seconds, self.error)

    def finish(self) -> None:
        """The file is complete: wake whoever waits, tell whoever asked."""
        self.done.set()
        if self.on_done is not None:
            try:
                self.on_done(self.result())
            except Exception:  # a report must never stop the writer
                log.exception("recording %s: on_done failed", self.path)


@dataclass(frozen=True)
class Result:
    """A closed recording: its file, length, and any frames lost."""

    path: Path
    frames: int
    bytes: int
    dropped: int
    seconds: float  # wall time from open to close
    error: str | None


class RecorderPool:
    """The drain and writer threads of every recorder of one user agent."""

    def __init__(self) -> None:
        self._tracks: dict[int, Track] = {}
        self._lock = threading.Lock()
        self._queue: queue.Queue[tuple[Track, bytes | None]] = queue.Queue(QUEUE_FRAMES)
        self._stop = threading.Event()
        self._drain: threading.Thread | None = None
        self._writer: threading.Thread | None = None
        self._files: dict[int, wave.Wave_write] = {}
        # The longest the writer took for one frame, and the deepest the
        # queue got: what a test or a bench reads to show the disk kept up.
        self.max_write_seconds = 0.0
        self.max_queued = 0

    def _start(self) -> None:
        if self._drain is None:
            self._drain = threading.Thread(target=self._drain_loop, name="rec-drain", daemon=True)
            self._writer = threading.Thread(target=self._write_loop, name="rec-write", daemon=True)
            self._drain.start()
            self._writer.start()

    def open(self, key: int, path: Path, rate: int, pull: Pull, stats: Stats) -> None:
        """Start writing frames pulled with `pull` into a WAV at `path`."""
        path.parent.mkdir(parents=True, exist_ok=True)
        track = Track(path, rate, pull, stats)
        with self._lock:
            self._tracks[key] = track
        self._start()

    def close(self, key: int, on_done: Callable[[Result], None] | None = None) -> Track | None:
        """Stop pulling (the last frames are taken now); the writer finishes
        the file and then calls `on_done` (on its own thread). Call before the
        port is closed; it never waits for the disk."""
        with self._lock:
            track = self._tracks.pop(key, None)
            if track is None:
                return None
            track.on_done = on_done
            self._pull_all(track)
            with contextlib.suppress(Exception):
                track.dropped += track.stats().get("dropped_out", 0)
            track.closed = True
            track.ended = time.monotonic()
        self._put(track, None)
        return track

    def shutdown(self) -> None:
        """Close every track and stop the threads (the files are completed)."""
        for key in list(self._tracks):
            self.close(key)
        self._stop.set()
        if self._writer is not None:
            self._put_blocking_end()
            self._writer.join(10)
        if self._drain is not None:
            self._drain.join(2)

    # -- threads --------------------------------------------------------------
    def _pull_all(self, track: Track) -> None:
        while True:
            frame = track.pull()
            if frame is None:
                return
            self._put(track, frame)

    def _put(self, track: Track, frame: bytes | None) -> None:
        try:
            self._queue.put_nowait((track, frame))
        except queue.Full:
            if frame is None:
                self._queue.put((track, None))  # the end of a file is never lost
            else:
                track.dropped += 1
        depth = self._queue.qsize()
        if depth > self.max_queued:
            self.max_queued = depth

    def _put_blocking_end(self) -> None:
        dummy = Track(Path("/dev/null"), 8000, lambda: None, dict)
        dummy.closed = True
        self._queue.put((dummy, b""))

    def _drain_loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                for track in self._tracks.values():
                    # ValueError: the port was closed under us, nothing left.
                    with contextlib.suppress(ValueError):
                        self._pull_all(track)
            time.sleep(DRAIN_SECONDS)

    def _write_loop(self) -> None:
        while True:
            track, frame = self._queue.get()
            if frame == b"" and track.path == Path("/dev/null"):
                return
            began = time.monotonic()
            try:
                self._write(track, frame)
            except OSError as exc:
                if track.error is None:
                    track.error = str(exc)
                    log.error("recording %s: %s", track.path, exc)
                if frame is None:
                    self._files.pop(id(track), None)
                    track.finish()
            took = time.monotonic() - began
            if took > self.max_write_seconds:
                self.max_write_seconds = took

    def _write(self, track: Track, frame: bytes | None) -> None:
        key = id(track)
        out = self._files.get(key)
        if out is None and track.error is None:
            out = wave.open(str(track.path), "wb")  # noqa: SIM115 (kept open across frames)
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(track.rate)
            self._files[key] = out
        if frame is None:
            self._files.pop(key, None)
            if out is not None:
                out.close()
            track.finish()
            return
        if out is not None:
            out.writeframesraw(frame)
            track.frames += 1
