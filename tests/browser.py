"""Headless Debian Chromium driven by Playwright, for browser tests (never downloads one).

    with chromium(wav) as page:
        page.goto(url)

The browser gets a fresh user-data-dir, fake media devices (the microphone plays `wav` in a
loop) and is always killed on exit, test failure included.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"

BASE_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--use-fake-ui-for-media-stream",  # grant getUserMedia without a prompt
    "--use-fake-device-for-media-stream",
    # WebRTC on loopback (see web/webrtc.py): Chromium leaves loopback interfaces out of
    # its WebRTC network list unless told otherwise; without this no candidate at all is
    # gathered in loopback_netns(). Host addresses are not hidden behind mDNS names because
    # the fake UI grants the microphone. (--disable-features=WebRtcHideLocalIpsWithMdns is
    # not needed then, and a second --disable-features would replace Playwright's own list.)
    "--allow-loopback-in-peer-connection",
    # WebAudio measurement (ponteMeasure) starts outside a user gesture.
    "--autoplay-policy=no-user-gesture-required",
    # No DNS at all (it still looked up clients2.google.com despite the flags above);
    # tests use IP literals.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]

CLONE_NEWNET = 0x40000000


def available() -> bool:
    """Chromium and Playwright are installed (scripts/setup installs both)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False
    return os.access(CHROMIUM, os.X_OK)


@contextlib.contextmanager
def loopback_netns() -> Iterator[bool]:
    """Run the calling thread in a fresh network namespace whose only interface is `lo`.

    Threads and processes started inside the block (the server under test, Playwright's
    driver and Chromium) inherit it, so Chromium can gather ICE candidates on 127.0.0.1 and
    ::1 only: without it, Chromium also pairs its real interface's address with our
    127.0.0.1 and sends (unanswered) checks from that address over `lo`. Yields False, and
    changes nothing, where namespaces can't be made (not root); the leg's own loopback-only
    mode (web/webrtc.py) still keeps the selected pair on 127.0.0.1 then.
    Everything started inside must have stopped before the block ends. Set
    PONTE_TEST_NO_NETNS=1 to run in the machine's own namespace.
    """
    if os.environ.get("PONTE_TEST_NO_NETNS"):
        yield False
        return
    libc = ctypes.CDLL(None, use_errno=True)
    original = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
    try:
        if libc.unshare(CLONE_NEWNET) != 0:
            yield False
            return
        try:
            subprocess.run(["ip", "link", "set", "lo", "up"], check=True, capture_output=True)
            yield True
        finally:
            if libc.setns(original, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back to the original netns failed")
    finally:
        os.close(original)


def _pids_using(marker: str) -> list[int]:
    """Processes whose command line mentions `marker` (our unique user-data-dir)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline:
            pids.append(int(entry))
    return pids


def _kill_leftovers(marker: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        pids = _pids_using(marker)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise RuntimeError(f"chromium processes survived SIGKILL: {pids}")
        time.sleep(0.05)


@contextlib.contextmanager
def in_netns(name: str | None) -> Iterator[None]:
    """The calling thread inside the named network namespace (/run/netns/NAME)
    for the block, back in its own after; None: no change. Processes started
    inside stay in it for life (Playwright's driver, and the Chromium it runs)."""
    if name is None:
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)
    original = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {name} failed")
        try:
            yield
        finally:
            if libc.setns(original, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back to the original netns failed")
    finally:
        os.close(target)
        os.close(original)


@contextlib.contextmanager
def chromium(
    audio_wav: Path | None = None, extra_flags: list[str] = (), netns: str | None = None
) -> Iterator:
    """A Playwright Page in a fresh headless Chromium; `audio_wav` is the fake microphone
    (a PCM WAV file; 16-bit, 48 kHz is the safe choice, it loops); `netns`: the network
    namespace Chromium runs in (e.g. a LAN host of tests/netns.py)."""
    from playwright.sync_api import sync_playwright

    tmp = tempfile.mkdtemp(prefix="ponte-chromium-")
    profile = os.path.join(tmp, "profile")
    flags = list(BASE_FLAGS) + list(extra_flags)
    if audio_wav is not None:
        flags.append(f"--use-file-for-fake-audio-capture={audio_wav}")
    try:
        with in_netns(netns):
            manager = sync_playwright()
            pw_started = manager.__enter__()
        with contextlib.ExitStack() as stack:
            stack.push(manager.__exit__)
            pw = pw_started
            context = pw.chromium.launch_persistent_context(
                profile,
                executable_path=CHROMIUM,
                headless=True,
                args=flags,
                ignore_default_args=["--mute-audio"],
            )
            try:
                page = context.pages[0] if context.pages else context.new_page()
                yield page
            finally:
                with contextlib.suppress(Exception):
                    context.close()
    finally:
        _kill_leftovers(profile)
        shutil.rmtree(tmp, ignore_errors=True)
