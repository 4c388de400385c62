"""Errors the engine raises: a `ClientError` answers one command with a Centrifuge error
code, a `DisconnectError` ends the connection with a disconnect code. Callers outside the
engine (the HTTP APIs) translate them into their own error format; nothing here knows one.
"""

from __future__ import annotations

from xshathra.protocol.codes import DISCONNECT_REASONS, ERROR_MESSAGES, DisconnectCode, ErrorCode


class ClientError(Exception):
    def __init__(self, code: ErrorCode, message: str | None = None) -> None:
        super().__init__(message or ERROR_MESSAGES[code])
        self.code = code
        self.message = message or ERROR_MESSAGES[code]


class DisconnectError(Exception):
    def __init__(self, code: DisconnectCode, reason: str | None = None) -> None:
        super().__init__(reason or DISCONNECT_REASONS[code])
        self.code = code
        self.reason = reason or DISCONNECT_REASONS[code]
