"""Hypothesis on every decoder: arbitrary input never crashes it, it only refuses.

Decoders face the network: client frames, tokens, channel names, server API bodies, control
and broker messages. Each may refuse input only with its own error type, and must do so fast.
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
from datetime import timedelta
from typing import Any

import jwt
import msgspec
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from xshathra.api.server.routes import METHODS
from xshathra.engine.channels import MAX_CHANNEL_LENGTH, is_valid_channel, namespace_of
from xshathra.protocol import messages as m
from xshathra.protocol import proxy as proxy_messages
from xshathra.protocol.codec import ProtocolDecodeError
from xshathra.protocol.json_codec import (
    MAX_COMMANDS_PER_FRAME,
    decode_commands,
    encode_reply,
)
from xshathra.tenancy.apps import generate_app
from xshathra.tenancy.tokens import TokenError, TokenService

# A decoder that takes longer than this on a few hundred bytes is as good as hung.
FAST = timedelta(milliseconds=500)
SECRET = "property-server-secret-" + "s" * 32
APP, _ = generate_app(name="property")
TOKENS = TokenService(SECRET)

# Text that includes lone surrogates: JSON can carry them as `\ud800` escapes.
any_text = st.text(max_size=12) | st.builds(
    lambda head, lone, tail: head + lone + tail,
    st.text(max_size=4),
    st.text(st.characters(categories=["Cs"]), min_size=1, max_size=2),
    st.text(max_size=4),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
# Only what JSON can spell (no Infinity): the payloads an SDK could send or a backend hold.
strict_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
COMMAND_KEYS = [
    "id",
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
    "bogus",
]
REQUEST_KEYS = [
    "channel",
    "token",
    "data",
    "subs",
    "name",
    "version",
    "headers",
    "recover",
    "epoch",
    "offset",
    "positioned",
    "recoverable",
    "join_leave",
    "delta",
    "limit",
    "since",
    "reverse",
    "method",
    "unknown",
]
# Values shaped like what a request holds, nested: `since` and `subs` hold objects too.
request_values: st.SearchStrategy[Any] = st.recursive(
    json_values,
    lambda inner: st.dictionaries(st.sampled_from(REQUEST_KEYS), inner, max_size=5),
    max_leaves=10,
)
command_docs = st.dictionaries(
    st.sampled_from(COMMAND_KEYS),
    st.dictionaries(st.sampled_from(REQUEST_KEYS), request_values, max_size=5)
    | json_values
    | st.integers(min_value=-(2**65), max_value=2**65),
    max_size=4,
)
# Bytes that look like JSON more often than uniform noise does.
json_ish = st.lists(
    st.sampled_from(
        [
            *(b"{", b"}", b"[", b"]", b":", b",", b" ", b"\n", b"\\", b'"\\u', b"\xff"),
            *(b'"id"', b'"connect"', b'"data"', b'"channel"', b'"x"'),
            *(b"1", b"-1", b"1e999", b"null", b"true"),
        ]
    ),
    max_size=60,
).map(b"".join)


def _only_refuses(frame: bytes) -> list[m.Command]:
    try:
        commands = decode_commands(frame)
    except ProtocolDecodeError:
        return []
    assert all(isinstance(c, m.Command) for c in commands)
    assert all(0 <= c.id <= 0xFFFFFFFF for c in commands)
    assert len(commands) <= MAX_COMMANDS_PER_FRAME
    return commands


# --- client frames ---------------------------------------------------------------------------


@settings(max_examples=300, deadline=FAST)
@given(st.binary(max_size=512) | json_ish)
def test_arbitrary_bytes_only_refuse(data: bytes) -> None:
    """Any bytes decode to commands or raise `ProtocolDecodeError`, nothing else."""
    _only_refuses(data)


@settings(max_examples=300, deadline=FAST)
@given(json_values)
def test_arbitrary_json_values_only_refuse(value: object) -> None:
    """Any JSON document (objects, arrays, scalars) decodes or raises `ProtocolDecodeError`."""
    _only_refuses(json.dumps(value).encode())


@settings(max_examples=150, deadline=FAST)
@given(st.lists(command_docs, min_size=1, max_size=3), st.booleans())
def test_command_shaped_frames_only_refuse(docs: list[dict[str, Any]], blank: bool) -> None:
    """Frames of nested command-like objects decode, one command per non-blank line, or raise
    `ProtocolDecodeError`."""
    sep = b"\n\n" if blank else b"\n"
    frame = sep.join(json.dumps(d).encode() for d in docs)
    commands = _only_refuses(frame)
    assert commands == [] or len(commands) == len(docs)


@settings(max_examples=50, deadline=FAST)
@given(st.integers(min_value=1, max_value=20_000), st.sampled_from([b"[", b'{"a":']))
def test_deep_nesting_only_refuses(depth: int, opener: bytes) -> None:
    """However deep a payload nests, decoding answers or refuses; it never raises
    RecursionError."""
    closer = b"]" if opener == b"[" else b"}"
    frame = b'{"id":1,"publish":{"channel":"c","data":' + opener * depth + b"1" + closer * depth
    _only_refuses(frame + b"}}")


def _requests() -> st.SearchStrategy[m.Command]:
    raw = strict_json.map(lambda v: msgspec.Raw(json.dumps(v).encode()))
    small = st.integers(min_value=0, max_value=2**32 - 1)
    text = st.text(max_size=10)
    sub = st.builds(
        m.SubscribeRequest,
        channel=text,
        token=text,
        recover=st.booleans(),
        epoch=text,
        offset=small,
        data=raw,
        join_leave=st.booleans(),
    )
    return st.builds(
        m.Command,
        id=small,
        connect=st.none()
        | st.builds(
            m.ConnectRequest,
            token=text,
            data=raw,
            subs=st.none() | st.dictionaries(text, sub, max_size=2),
            headers=st.none() | st.dictionaries(text, text, max_size=2),
        ),
        subscribe=st.none() | sub,
        publish=st.none() | st.builds(m.PublishRequest, channel=text, data=raw),
        history=st.none()
        | st.builds(
            m.HistoryRequest,
            channel=text,
            limit=st.integers(min_value=-1, max_value=1000),
            since=st.none() | st.builds(m.StreamPosition, offset=small, epoch=text),
            reverse=st.booleans(),
        ),
        rpc=st.none() | st.builds(m.RPCRequest, data=raw, method=text),
    )


@settings(max_examples=200, deadline=FAST)
@given(_requests())
def test_every_encodable_command_decodes_to_itself(command: m.Command) -> None:
    """What an SDK can send (any valid command) is accepted and decodes to the same command."""
    assert decode_commands(msgspec.json.encode(command)) == [command]


# --- replies ----------------------------------------------------------------------------------

raw_json = strict_json.map(lambda v: msgspec.Raw(json.dumps(v).encode()))
u32 = st.integers(min_value=0, max_value=2**32 - 1)
u64 = st.integers(min_value=0, max_value=2**64 - 1)
names = st.text(max_size=12)
client_infos = st.builds(
    m.ClientInfo,
    user=names,
    client=names,
    conn_info=st.just(m.EMPTY) | raw_json,
    chan_info=st.just(m.EMPTY) | raw_json,
)
publications = st.builds(
    m.Publication,
    data=raw_json,
    info=st.none() | client_infos,
    offset=u64,
    tags=st.none() | st.dictionaries(names, names, max_size=3),
)
subscribe_results = st.builds(
    m.SubscribeResult,
    expires=st.booleans(),
    ttl=u32,
    recoverable=st.booleans(),
    epoch=names,
    publications=st.none() | st.lists(publications, max_size=3),
    recovered=st.booleans(),
    offset=u64,
    was_recovering=st.booleans(),
)
pushes = st.builds(
    m.Push,
    channel=names,
    pub=st.none() | publications,
    join=st.none() | st.builds(m.Join, info=client_infos),
    leave=st.none() | st.builds(m.Leave, info=client_infos),
    unsubscribe=st.none() | st.builds(m.Unsubscribe, code=u32, reason=names),
    subscribe=st.none()
    | st.builds(m.Subscribe, recoverable=st.booleans(), epoch=names, offset=u64),
    disconnect=st.none() | st.builds(m.Disconnect, code=u32, reason=names, reconnect=st.booleans()),
    refresh=st.none() | st.builds(m.Refresh, expires=st.booleans(), ttl=u32),
)
errors = st.builds(m.Error, code=u32, message=names, temporary=st.booleans())
results: list[tuple[str, st.SearchStrategy[Any]]] = [
    ("push", pushes),
    (
        "connect",
        st.builds(
            m.ConnectResult,
            client=names,
            version=names,
            expires=st.booleans(),
            ttl=u32,
            subs=st.none() | st.dictionaries(names, subscribe_results, max_size=2),
            ping=u32,
            pong=st.booleans(),
            node=names,
        ),
    ),
    ("subscribe", subscribe_results),
    (
        "presence",
        st.builds(
            m.PresenceResult,
            presence=st.none() | st.dictionaries(names, client_infos, max_size=3),
        ),
    ),
    ("presence_stats", st.builds(m.PresenceStatsResult, num_clients=u32, num_users=u32)),
    (
        "history",
        st.builds(
            m.HistoryResult,
            publications=st.none() | st.lists(publications, max_size=3),
            epoch=names,
            offset=u64,
        ),
    ),
    ("refresh", st.builds(m.RefreshResult, client=names, expires=st.booleans(), ttl=u32)),
    ("sub_refresh", st.builds(m.SubRefreshResult, expires=st.booleans(), ttl=u32)),
    ("rpc", st.builds(m.RPCResult, data=raw_json)),
    ("ping", st.just(m.PingResult())),
    ("unsubscribe", st.just(m.UnsubscribeResult())),
    ("publish", st.just(m.PublishResult())),
]
replies = st.one_of(
    [
        st.builds(lambda i, v, f=field: m.Reply(id=i, **{f: v}), u32, strategy)
        for field, strategy in results
    ]
    + [st.builds(lambda i, e: m.Reply(id=i, error=e), u32, errors)]
)


def _as_json(value: Any) -> Any:
    """What a client parsing the reply should see: the struct's non-default fields, raw
    payloads as the JSON they hold."""
    if isinstance(value, msgspec.Raw):
        return json.loads(bytes(value))
    if isinstance(value, msgspec.Struct):
        out = {}
        for name in value.__struct_fields__:
            field = getattr(value, name)
            default = _default(type(value), name)
            is_default = field is None or (
                not isinstance(field, msgspec.Struct) and field == default
            )
            # Zero values are left out, except by a struct that writes them (omit_defaults off).
            if is_default and type(value).__struct_config__.omit_defaults:
                continue
            out[name] = _as_json(field)
        return out
    if isinstance(value, dict):
        return {k: _as_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_json(v) for v in value]
    return value


def _default(cls: type[msgspec.Struct], name: str) -> Any:
    index = cls.__struct_fields__.index(name)
    defaults = cls.__struct_defaults__
    offset = len(cls.__struct_fields__) - len(defaults)
    return defaults[index - offset] if index >= offset else msgspec.NODEFAULT


@settings(max_examples=250, deadline=FAST)
@given(replies)
def test_replies_round_trip_through_json(reply: m.Reply) -> None:
    """Any reply encodes to one line of valid JSON holding exactly its set fields (payloads
    verbatim), and decodes back to an equal reply."""
    wire = encode_reply(reply)
    assert b"\n" not in wire
    assert json.loads(wire) == _as_json(reply)
    assert msgspec.json.decode(wire, type=m.Reply) == reply


# --- tokens -----------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


jwt_shaped = st.builds(
    lambda header, payload, sig: f"{_b64(header)}.{_b64(payload)}.{sig}",
    st.one_of(
        json_values.map(lambda v: json.dumps(v).encode()),
        st.just(b'{"alg":"HS256","typ":"JWT"}'),
        st.just(b'{"alg":"none"}'),
        st.binary(max_size=20),
    ),
    st.one_of(
        json_values.map(lambda v: json.dumps(v).encode()),
        st.builds(lambda v: json.dumps({"app_id": APP.app_id, "sub": v}).encode(), json_values),
        st.binary(max_size=20),
    ),
    st.text(
        alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_=", max_size=44
    ),
)


@settings(max_examples=300, deadline=FAST)
@given(st.text(max_size=300) | jwt_shaped)
def test_unsigned_garbage_tokens_raise_only_token_errors(token: str) -> None:
    """Arbitrary strings and JWT-shaped forgeries: `peek_app_id` and verification raise only
    `TokenError` (and forgeries never verify)."""
    with contextlib.suppress(TokenError):
        TOKENS.peek_app_id(token)
    for verify in (TOKENS.verify_connection_token, TOKENS.verify_subscription_token):
        try:
            verify(token, APP)
        except TokenError:
            continue
        raise AssertionError(f"an unsigned token verified: {token!r}")


NOW = int(time.time())
timestamps = st.integers(min_value=NOW - 10**6, max_value=NOW + 10**6)
fuzzed_claims = st.fixed_dictionaries(
    {},
    optional={
        "app_id": st.just(APP.app_id) | json_values,
        "sub": any_text | json_values,
        "exp": timestamps | json_values,
        "iat": timestamps | json_values,
        "nbf": timestamps | json_values,
        "channels": st.lists(any_text, max_size=3) | json_values,
        "channel": any_text | json_values,
        "info": json_values | any_text | st.lists(any_text, max_size=2),
        "aud": json_values,
        "iss": json_values,
    },
)
# Mostly valid claims with a few fuzzed on top, so that many tokens get past the signature
# and time checks and their content is exercised too.
valid_claims = st.fixed_dictionaries(
    {"app_id": st.just(APP.app_id), "sub": any_text, "exp": st.just(NOW + 600)},
    optional={
        "channels": st.lists(any_text, max_size=3),
        "info": strict_json | any_text | st.dictionaries(any_text, any_text, max_size=2),
    },
)
claims_strategy = fuzzed_claims | st.builds(lambda a, b: {**a, **b}, valid_claims, fuzzed_claims)
subscription_claims = st.builds(lambda c, ch: {**c, "channel": ch}, valid_claims, any_text)


def _sign(claims: dict[str, Any], key: str) -> str:
    try:
        return jwt.encode(claims, key, algorithm="HS256")
    except (TypeError, ValueError, jwt.PyJWTError):
        assume(False)
        raise


@settings(max_examples=300, deadline=FAST)
@given(
    valid_claims | claims_strategy | subscription_claims,
    st.sampled_from([SECRET, APP.app_secret]),
)
def test_signed_tokens_with_any_claims_raise_only_token_errors(
    claims: dict[str, Any], key: str
) -> None:
    """A correctly signed token with arbitrary claims is accepted or refused with `TokenError`,
    and what is accepted can be put on the wire (user, channels and info encode as JSON)."""
    token = _sign(claims, key)
    try:
        conn = TOKENS.verify_connection_token(token, APP)
    except TokenError:
        pass
    else:
        info = m.ClientInfo(
            user=conn.user, client="c", conn_info=msgspec.Raw(conn.info) if conn.info else m.EMPTY
        )
        encode_reply(m.Reply(push=m.Push(channel="public:x", join=m.Join(info=info))))
        encode_reply(
            m.Reply(
                id=1, connect=m.ConnectResult(subs={c: m.SubscribeResult() for c in conn.channels})
            )
        )
    try:
        sub = TOKENS.verify_subscription_token(token, APP)
    except TokenError:
        pass
    else:
        info = m.ClientInfo(user=sub.user, chan_info=msgspec.Raw(sub.info) if sub.info else m.EMPTY)
        encode_reply(m.Reply(push=m.Push(channel=sub.channel, join=m.Join(info=info))))


# --- channel names ----------------------------------------------------------------------------


@settings(max_examples=300, deadline=FAST)
@given(any_text | st.text(max_size=300) | st.text(alphabet="ab:\n -_$", max_size=20))
def test_channel_grammar_never_raises_and_admits_only_safe_names(name: str) -> None:
    """`is_valid_channel` answers for any text; what it admits is 1-255 printable ASCII
    characters without space, quotes, backslash or newline."""
    namespace_of(name)
    if is_valid_channel(name):
        assert 1 <= len(name) <= MAX_CHANNEL_LENGTH
        assert all(33 <= ord(c) < 127 for c in name)
        assert not set(name) & set(" \"'\\<>\n\r\t")


# --- server API, control and broker wire ------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(sorted(METHODS)),
    st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode())),
)
def test_server_api_request_decoders_only_refuse(method: str, body: bytes) -> None:
    """Every server API method's decoder: arbitrary bodies decode or raise msgspec errors."""
    from xshathra.api.server.routes import REQUEST_DECODERS

    with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
        REQUEST_DECODERS[method].decode(body or b"{}")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_control_and_broker_wire_decoders_never_crash(data: bytes) -> None:
    """Node control messages and Redis/NATS channel messages: garbage is refused with a
    ValueError (which the brokers log and skip), never another exception."""
    from xshathra.brokers import nats, redis
    from xshathra.engine.control import decode_control

    with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
        decode_control(data)
    for prefix in (b"", b"p", b"p1:e:", b"j", b"l", b"m"):
        for parse in (redis.parse_channel_message, nats.parse_channel_message):
            with contextlib.suppress(ValueError):
                parse(prefix + data)


# --- backend proxy replies (SPEC §9) ---------------------------------------------------------

PROXY_REPLY_KEYS = ["result", "error", "disconnect", "user", "data", "b64data", "subs", "code"]
proxy_reply_docs = st.dictionaries(
    st.sampled_from(PROXY_REPLY_KEYS),
    st.dictionaries(st.sampled_from(PROXY_REPLY_KEYS), request_values, max_size=4) | json_values,
    max_size=3,
).map(lambda doc: json.dumps(doc).encode())


@settings(max_examples=200, deadline=FAST)
@given(
    st.sampled_from(list(proxy_messages.REPLY_TYPES)),
    st.binary(max_size=256) | json_ish | proxy_reply_docs,
)
def test_proxy_replies_only_refuse(request_type: type[msgspec.Struct], body: bytes) -> None:
    """Whatever an app's backend answers decodes to its reply type or `ProxyDecodeError`."""
    try:
        reply = proxy_messages.decode_reply(request_type, body)
    except proxy_messages.ProxyDecodeError:
        return
    assert isinstance(reply, proxy_messages.REPLY_TYPES[request_type])


@settings(deadline=FAST)
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_pusher_event_decoder_only_refuses(frame: bytes) -> None:
    """A Pusher client's message: decoded, or refused with PusherDecodeError."""
    from xshathra.protocol import pusher as p

    with contextlib.suppress(p.PusherDecodeError):
        event = p.decode_event(frame)
        for decode in (p.decode_subscribe, p.decode_unsubscribe, p.decode_signin):
            with contextlib.suppress(p.PusherDecodeError):
                decode(bytes(event.data))
