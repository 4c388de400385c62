"""Errors the engine raises: a `ClientError` answers one command with a Centrifuge error
code, a `DisconnectError` ends the connection with a disconnect code. Callers outside the
engine (the HTTP APIs) translate them into their own error format; nothing here knows one.

Codes are the protocol's own or, relayed from an app's backend proxy, the app's (1000+ for
errors, 4000+ for disconnects): those have no built-in message.
"""

from __future__ import annotations

from xshathra.protocol.codes import (
    DISCONNECT_REASONS,
    ERROR_MESSAGES,
    TEMPORARY_ERRORS,
    DisconnectCode,
    ErrorCode,
)


def error_message(code: int) -> str:
    """The protocol's message for its own codes; "" for an application's."""
    try:
        return ERROR_MESSAGES[ErrorCode(code)]
    except ValueError:
        return ""


def disconnect_reason(code: int) -> str:
    try:
        return DISCONNECT_REASONS[DisconnectCode(code)]
    except ValueError:
        return ""


class ClientError(Exception):
    def __init__(
        self, code: ErrorCode | int, message: str | None = None, *, temporary: bool = False
    ) -> None:
        text = message or error_message(code)
        super().__init__(text)
        self.code = code
        self.message = text
        self.temporary = temporary or code in TEMPORARY_ERRORS


class DisconnectError(Exception):
    def __init__(self, code: DisconnectCode | int, reason: str | None = None) -> None:
        text = reason or disconnect_reason(code)
        super().__init__(text)
        self.code = code
        self.reason = text
