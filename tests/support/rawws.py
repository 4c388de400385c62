"""A WebSocket client by hand, on a blocking socket, for tests that need byte-level control:
what exactly the server sends before a reset, or a client that stops reading."""

from __future__ import annotations

import base64
import json
import secrets
import socket
import struct
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.support.server import ServerProcess

ENGINE_PATH = "/realtime/connection/websocket"


def client_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """One masked client frame."""
    mask = secrets.token_bytes(4)
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + struct.pack("!H", n)
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + struct.pack("!Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise AssertionError(f"end of stream after {data!r}")
        data += chunk
    return data


def read_frame(sock: socket.socket) -> tuple[int, bytes]:
    """The next server frame (unmasked): its opcode and payload."""
    first, second = recv_exactly(sock, 2)
    size = second & 0x7F
    if size == 126:
        size = struct.unpack("!H", recv_exactly(sock, 2))[0]
    elif size == 127:
        size = struct.unpack("!Q", recv_exactly(sock, 8))[0]
    return first & 0x0F, recv_exactly(sock, size)


def upgrade(sock: socket.socket) -> None:
    """The opening handshake on a connected socket; asserts the server switched protocols."""
    key = base64.b64encode(secrets.token_bytes(16)).decode()
    sock.sendall(
        (
            f"GET {ENGINE_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += recv_exactly(sock, 1)
    assert head.startswith(b"HTTP/1.1 101"), head


def open_raw(server: ServerProcess, token: str | None = None) -> socket.socket:
    """An upgraded raw socket with a small receive buffer; connected when given a token."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: window size
    sock.settimeout(10)
    sock.connect(("127.0.0.1", server.port))
    upgrade(sock)
    if token is not None:
        sock.sendall(client_frame(json.dumps({"id": 1, "connect": {"token": token}}).encode()))
        opcode, payload = read_frame(sock)
        assert opcode == 0x1 and "connect" in json.loads(payload), payload
    return sock


def close_code_or_end(sock: socket.socket, deadline: float) -> int | None:
    """Read what the server sent, to its Close frame (its code) or the end of the stream."""
    sock.settimeout(deadline)
    try:
        while True:
            opcode, payload = read_frame(sock)
            if opcode == 0x8:
                return int(struct.unpack("!H", payload[:2])[0])
    except (AssertionError, OSError):  # AssertionError: rawws' end of stream
        return None
