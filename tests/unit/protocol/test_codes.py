"""Error and disconnect codes: the values the SDKs act on, and the reconnect ranges."""

from __future__ import annotations

import pytest

from xshathra.protocol.codes import (
    DISCONNECT_REASONS,
    ERROR_MESSAGES,
    TEMPORARY_ERRORS,
    DisconnectCode,
    ErrorCode,
    should_reconnect,
)


@pytest.mark.parametrize(
    ("code", "reconnect"),
    [
        (3000, True),
        (3005, True),
        (3012, True),
        (3499, True),
        (3500, False),
        (3501, False),
        (3999, False),
        (4000, True),
        (4499, True),
        (4500, False),
        (4999, False),
        (1000, False),
        (1001, False),
        (2999, False),
        (5000, False),
        (0, False),
        (-1, False),
    ],
)
def test_should_reconnect_ranges(code: int, reconnect: bool) -> None:
    """3000-3499 and 4000-4499 reconnect; 3500-3999 and 4500-4999 do not; other codes are not
    Centrifuge disconnects and do not ask for a reconnect."""
    assert should_reconnect(code) is reconnect


def test_every_disconnect_code_falls_in_its_documented_range() -> None:
    """Codes below 3500 are reconnecting ones, codes from 3500 are final."""
    reconnecting = {c for c in DisconnectCode if should_reconnect(c)}
    assert reconnecting == {c for c in DisconnectCode if c < 3500}
    assert all(3000 <= c < 4000 for c in DisconnectCode)


@pytest.mark.parametrize(
    ("code", "value", "reason"),
    [
        (DisconnectCode.CONNECTION_CLOSED, 3000, "connection closed"),
        (DisconnectCode.SHUTDOWN, 3001, "shutdown"),
        (DisconnectCode.SERVER_ERROR, 3004, "internal server error"),
        (DisconnectCode.EXPIRED, 3005, "connection expired"),
        (DisconnectCode.SUB_EXPIRED, 3006, "subscription expired"),
        (DisconnectCode.SLOW, 3008, "slow"),
        (DisconnectCode.WRITE_ERROR, 3009, "write error"),
        (DisconnectCode.INSUFFICIENT_STATE, 3010, "insufficient state"),
        (DisconnectCode.FORCE_RECONNECT, 3011, "force reconnect"),
        (DisconnectCode.NO_PONG, 3012, "no pong"),
        (DisconnectCode.TOO_MANY_REQUESTS, 3013, "too many requests"),
        (DisconnectCode.INVALID_TOKEN, 3500, "invalid token"),
        (DisconnectCode.BAD_REQUEST, 3501, "bad request"),
        (DisconnectCode.STALE, 3502, "stale"),
        (DisconnectCode.FORCE_NO_RECONNECT, 3503, "force disconnect"),
        (DisconnectCode.CONNECTION_LIMIT, 3504, "connection limit"),
        (DisconnectCode.CHANNEL_LIMIT, 3505, "channel limit"),
        (DisconnectCode.INAPPROPRIATE_PROTOCOL, 3506, "inappropriate protocol"),
        (DisconnectCode.PERMISSION_DENIED, 3507, "permission denied"),
        (DisconnectCode.NOT_AVAILABLE, 3508, "not available"),
        (DisconnectCode.TOO_MANY_ERRORS, 3509, "too many errors"),
    ],
)
def test_disconnect_codes_match_centrifuge(code: DisconnectCode, value: int, reason: str) -> None:
    """Numbers and reasons are Centrifuge's (`disconnect.go`)."""
    assert int(code) == value
    assert DISCONNECT_REASONS[code] == reason


@pytest.mark.parametrize(
    ("code", "value"),
    [
        (ErrorCode.INTERNAL, 100),
        (ErrorCode.UNAUTHORIZED, 101),
        (ErrorCode.UNKNOWN_CHANNEL, 102),
        (ErrorCode.PERMISSION_DENIED, 103),
        (ErrorCode.METHOD_NOT_FOUND, 104),
        (ErrorCode.ALREADY_SUBSCRIBED, 105),
        (ErrorCode.LIMIT_EXCEEDED, 106),
        (ErrorCode.BAD_REQUEST, 107),
        (ErrorCode.NOT_AVAILABLE, 108),
        (ErrorCode.TOKEN_EXPIRED, 109),
        (ErrorCode.EXPIRED, 110),
        (ErrorCode.TOO_MANY_REQUESTS, 111),
        (ErrorCode.UNRECOVERABLE_POSITION, 112),
    ],
)
def test_error_codes_match_centrifuge(code: ErrorCode, value: int) -> None:
    """The numbers are Centrifuge's (`errors.go`)."""
    assert int(code) == value


def test_every_code_has_a_message() -> None:
    """Each error code has a message and each disconnect code a reason, short enough for a
    WebSocket close frame (123 bytes)."""
    assert set(ERROR_MESSAGES) == set(ErrorCode)
    assert set(DISCONNECT_REASONS) == set(DisconnectCode)
    assert all(ERROR_MESSAGES.values())
    assert all(0 < len(r.encode()) <= 123 for r in DISCONNECT_REASONS.values())


def test_only_transient_errors_are_temporary() -> None:
    """Internal errors and rate limits are temporary (the SDK retries); permission and
    validation errors are not."""
    assert ErrorCode.INTERNAL in TEMPORARY_ERRORS
    assert ErrorCode.TOO_MANY_REQUESTS in TEMPORARY_ERRORS
    for final in (ErrorCode.PERMISSION_DENIED, ErrorCode.BAD_REQUEST, ErrorCode.TOKEN_EXPIRED):
        assert final not in TEMPORARY_ERRORS
