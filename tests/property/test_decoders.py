"""Hypothesis on every decoder: arbitrary input never crashes it, it only refuses."""

from __future__ import annotations

import contextlib
import json

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from xshathra.api.routes_engine import METHODS
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


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(sorted(METHODS)),
    st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode())),
)
def test_server_api_request_decoders_only_refuse(method: str, body: bytes) -> None:
    """Every server API method's decoder: arbitrary bodies decode or raise msgspec errors."""
    from xshathra.api.routes_engine import _decoders

    with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
        _decoders[method].decode(body or b"{}")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_control_and_broker_wire_decoders_never_crash(data: bytes) -> None:
    """Node control messages and Redis channel messages: garbage is ignored, never raised."""
    from xshathra.brokers.redis import RedisBroker
    from xshathra.engine.channels import ChannelRef
    from xshathra.engine.node import _control_decoder
    from xshathra.tenancy.apps import AppId

    with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
        _control_decoder.decode(data)

    class Sink:
        def __getattr__(self, name: str) -> object:
            return lambda *args: None

    broker = RedisBroker.__new__(RedisBroker)
    broker._handler = Sink()  # type: ignore[assignment]
    broker._control = b"ctl"
    ref = ChannelRef(AppId("a"), "c")
    broker._topics = {b"topic": ref}
    for prefix in (b"", b"p", b"p1:e:", b"j", b"l"):
        broker._dispatch(b"topic", prefix + data)
