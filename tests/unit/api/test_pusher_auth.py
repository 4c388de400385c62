"""Pusher's signed query as `api.pusher.auth.verify` checks it."""

from __future__ import annotations

import pytest

from xshathra.api.pusher.auth import PusherAuthError, replay_mark, verify
from xshathra.protocol import pusher as p
from xshathra.tenancy.apps import generate_app

APP, _ = generate_app(name="a", app_id="1")
NOW = 1_800_000_000.0
PATH = "/apps/1/events"


def params(body: bytes = b"", **over: str) -> dict[str, str]:
    query = {"auth_key": APP.client_api_key, "auth_timestamp": str(int(NOW)), "auth_version": "1.0"}
    if body:
        query["body_md5"] = p.body_md5(body)
    query.update(over)
    query["auth_signature"] = p.http_signature(APP.app_secret, "POST", PATH, query)
    return query


def check(query: dict[str, str], body: bytes = b"") -> None:
    verify(APP, "POST", PATH, query, body, now=NOW)


def test_a_post_leaves_a_once_only_mark_until_its_timestamp_is_stale() -> None:
    query = params(b"{}")
    check(query, b"{}")
    key, ttl = replay_mark(APP, "POST", query, now=NOW) or ("", 0)
    assert key.endswith(query["auth_signature"]) and APP.app_id in key
    assert ttl == p.AUTH_TIMESTAMP_GRACE + 1
    late = replay_mark(APP, "POST", query, now=NOW + p.AUTH_TIMESTAMP_GRACE)
    assert late is not None and late[1] == 1
    assert replay_mark(APP, "GET", query, now=NOW) is None


@pytest.mark.parametrize("skew", [-601, 601])
def test_timestamps_outside_ten_minutes_are_refused(skew: int) -> None:
    with pytest.raises(PusherAuthError, match="Timestamp expired"):
        check(params(auth_timestamp=str(int(NOW) + skew)))


def test_wrong_key_signature_body_and_version_are_refused() -> None:
    for query, body in (
        (dict(params(), auth_key="other"), b""),
        (dict(params(), auth_signature="0" * 64), b""),
        (params(b"{}"), b"{ }"),
        (params(auth_version="2.0"), b""),
        ({k: v for k, v in params().items() if k != "auth_signature"}, b""),
    ):
        with pytest.raises(PusherAuthError) as refused:
            check(query, body)
        assert refused.value.status == 401 and APP.app_secret not in refused.value.message


def test_unknown_app_reads_as_an_unknown_key() -> None:
    with pytest.raises(PusherAuthError, match="Unknown auth_key"):
        verify(None, "POST", PATH, params(), b"", now=NOW)
