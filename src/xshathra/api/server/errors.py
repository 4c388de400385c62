"""Centrifugo's error shape, `{"error": {"code": N, "message": "..."}}`, for the answers the
server API's own handlers never reach (a body too large, an unknown path, a crash)."""

from __future__ import annotations

from typing import Any

from xshathra.protocol.codes import ErrorCode

# Centrifugo error codes by HTTP status.
_CODES = {
    400: ErrorCode.BAD_REQUEST,
    401: ErrorCode.UNAUTHORIZED,
    403: ErrorCode.PERMISSION_DENIED,
    404: ErrorCode.METHOD_NOT_FOUND,
    405: ErrorCode.METHOD_NOT_FOUND,
    413: ErrorCode.LIMIT_EXCEEDED,
    429: ErrorCode.TOO_MANY_REQUESTS,
}


def server_error(message: str, status: int) -> dict[str, Any]:
    return {"error": {"code": int(_CODES.get(status, ErrorCode.INTERNAL)), "message": message}}
