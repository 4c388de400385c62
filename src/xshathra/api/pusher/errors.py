"""Pusher's error shape. Pusher answers errors with a plain-text message and the status; its
server libraries show that text. Routes of this surface answer `text/plain`; the rare error
that reaches no route (a body over the limit, an unknown path) is `{"error": "..."}`."""

from __future__ import annotations

from typing import Any

from starlette.responses import PlainTextResponse


def pusher_error(message: str, status: int) -> dict[str, Any]:
    return {"error": message}


def error_text(
    status: int, message: str, headers: dict[str, str] | None = None
) -> PlainTextResponse:
    return PlainTextResponse(message + "\n", status_code=status, headers=headers)
