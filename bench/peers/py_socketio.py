"""Peer: python-socketio on uvicorn. POST /publish emits the body to every client."""

from __future__ import annotations

import sys
from typing import Any

import socketio  # type: ignore[import-untyped]  # no stubs, no py.typed
import uvicorn

sio = socketio.AsyncServer(async_mode="asgi", cors_allowed_origins="*")


async def publish(scope: dict[str, Any], receive: Any, send: Any) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await sio.emit("msg", body.decode())
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"{}"})


app = socketio.ASGIApp(sio, other_asgi_app=publish)

if __name__ == "__main__":
    print("ready", flush=True)
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
