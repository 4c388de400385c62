"""Hypothesis on every decoder: arbitrary input never crashes it, it only refuses."""

from __future__ import annotations

import contextlib
import json

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from xshathra.engine.channels import is_valid_channel
from xshathra.protocol import messages as m
from xshathra.protocol.json_codec import ProtocolDecodeError, decode_commands, encode_reply
from xshathra.tenancy.apps import generate_app
from xshathra.tenancy.tokens import TokenError, TokenService

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
methods = st.sampled_from(
    [
        "connect",
        "subscribe",
        "unsubscribe",
        "publish",
        "presence",
        "presence_stats",
        "history",
        "ping",
        "send",
        "rpc",
        "refresh",
        "sub_refresh",
        "id",
        "bogus",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_never_crash_the_command_decoder(data: bytes) -> None:
    try:
        commands = decode_commands(data)
    except ProtocolDecodeError:
        return
    assert all(isinstance(c, m.Command) for c in commands)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(methods, json_values, max_size=4))
def test_command_shaped_json_never_crashes_the_decoder(doc: dict[str, object]) -> None:
    with contextlib.suppress(ProtocolDecodeError):
        decode_commands(json.dumps(doc).encode())


@settings(max_examples=200, deadline=None)
@given(json_values, st.integers(min_value=0, max_value=2**32 - 1), st.text(max_size=20))
def test_publication_data_passes_through_untouched(data: object, offset: int, ch: str) -> None:
    raw = json.dumps(data).encode()
    reply = m.Reply(
        push=m.Push(channel=ch, pub=m.Publication(data=msgspec.Raw(raw), offset=offset))
    )
    decoded = json.loads(encode_reply(reply))
    assert decoded["push"]["pub"]["data"] == data
    assert decoded["push"]["pub"].get("offset", 0) == offset


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_token_verification_only_raises_token_errors(token: str) -> None:
    service = TokenService("s" * 48)
    app, _ = generate_app(name="p")
    for check in (
        service.peek_app_id,
        lambda t: service.verify_connection_token(t, app),
        lambda t: service.verify_subscription_token(t, app),
    ):
        with contextlib.suppress(TokenError):
            check(token)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_channel_grammar_never_raises(name: str) -> None:
    assert isinstance(is_valid_channel(name), bool)
