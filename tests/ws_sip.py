"""A bare SIP-over-WebSocket client (RFC 7118) for attack tests: a raw socket
(made in a test namespace), the handshake, masked text frames, and a few
requests as a browser or an attacker would send them. No SIP stack: what it
sends is exactly what the test wrote."""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import socket
import struct
import time


class WsSip:
    """One WebSocket connection to Kamailio carrying SIP text frames."""

    def __init__(self, sock: socket.socket, host: str, port: int) -> None:
        self.sock = sock
        self.host = host
        self.port = port
        self.sock.settimeout(5)
        self.sock.connect((host, port))
        self.local = f"{secrets.token_hex(4)}.invalid"
        self._buf = b""

    def handshake(self, origin: str | None) -> int:
        """The HTTP Upgrade (subprotocol `sip`); the status code answered."""
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            "GET / HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            "Sec-WebSocket-Protocol: sip",
        ]
        if origin is not None:
            lines.append(f"Origin: {origin}")
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        while b"\r\n\r\n" not in self._buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            self._buf += chunk
        head, _, self._buf = self._buf.partition(b"\r\n\r\n")
        first = head.split(b"\r\n", 1)[0].split()
        return int(first[1]) if len(first) > 1 and first[1].isdigit() else 0

    def send(self, text: str) -> None:
        """One masked text frame."""
        data = text.encode()
        mask = os.urandom(4)
        n = len(data)
        if n < 126:
            head = struct.pack("!BB", 0x81, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x81, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        self.sock.sendall(head + mask + masked)

    def _read(self, n: int, deadline: float) -> bytes:
        while len(self._buf) < n:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self._buf += chunk
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def recv(self, timeout: float = 5.0) -> str | None:
        """The next text frame (pings answered), or None when closed/timed out."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                b0, b1 = self._read(2, deadline)
                n = b1 & 0x7F
                if n == 126:
                    n = struct.unpack("!H", self._read(2, deadline))[0]
                elif n == 127:
                    n = struct.unpack("!Q", self._read(8, deadline))[0]
                payload = self._read(n, deadline)
                op = b0 & 0x0F
                if op == 0x8:
                    return None
                if op == 0x9:  # ping: pong with the same data
                    mask = os.urandom(4)
                    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
                    self.sock.sendall(struct.pack("!BB", 0x8A, 0x80 | n) + mask + masked)
                    continue
                if op == 0x1:
                    return payload.decode(errors="replace")
        except (TimeoutError, ConnectionError, OSError):
            return None

    def final(self, timeout: float = 5.0) -> int | None:
        """The first final status code answered (1xx skipped), or None."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.recv(deadline - time.monotonic())
            if msg is None:
                return None
            first = msg.split("\r\n", 1)[0].split()
            if first[:1] == ["SIP/2.0"] and len(first) > 1 and first[1].isdigit():
                code = int(first[1])
                if code >= 200:
                    return code
        return None

    def request(self, method: str, uri: str, body: str = "", extra: str = "") -> str:
        """Send a request outside any dialog; its Call-ID."""
        call_id = secrets.token_hex(8)
        branch = "z9hG4bK" + secrets.token_hex(6)
        tag = secrets.token_hex(4)
        ctype = "Content-Type: application/sdp\r\n" if body else ""
        msg = (
            f"{method} {uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/WS {self.local};branch={branch}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:browser@{self.local}>;tag={tag}\r\n"
            f"To: <{uri}>\r\n"
            f"Call-ID: {call_id}\r\n"
            f"CSeq: 1 {method}\r\n"
            f"Contact: <sip:browser@{self.local};transport=ws>\r\n"
            f"{extra}{ctype}"
            f"Content-Length: {len(body.encode())}\r\n\r\n{body}"
        )
        self.send(msg)
        return call_id

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def webrtc_sdp(address: str) -> str:
    """A browser-like offer (DTLS-SRTP, ICE, rtcp-mux, Opus); no media follows."""
    return (
        "v=0\r\n"
        f"o=- 1 1 IN IP4 {address}\r\n"
        "s=-\r\n"
        "t=0 0\r\n"
        "a=group:BUNDLE 0\r\n"
        "m=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\n"
        f"c=IN IP4 {address}\r\n"
        "a=mid:0\r\n"
        "a=rtcp-mux\r\n"
        "a=ice-ufrag:abcd\r\n"
        "a=ice-pwd:abcdefghijklmnopqrstuvwx\r\n"
        "a=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\n"
        "a=setup:actpass\r\n"
        f"a=candidate:1 1 udp 2122260223 {address} 50000 typ host\r\n"
        "a=rtpmap:111 opus/48000/2\r\n"
        "a=rtpmap:0 PCMU/8000\r\n"
        "a=sendrecv\r\n"
    )
