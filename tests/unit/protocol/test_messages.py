"""Message types: names as client.proto spells them, defaults left out on encode."""

from __future__ import annotations

import msgspec
import pytest

from xshathra.protocol import messages as m
from xshathra.protocol.json_codec import encode_reply

# Field names of client.proto (centrifugal/protocol, definitions/client.proto), as the JSON
# format spells them (the proto field names, snake_case). Written out here, not vendored.
PROTO_FIELDS: dict[str, set[str]] = {
    "Error": {"code", "message", "temporary"},
    "Command": {
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
    },
    "Reply": {
        "id",
        "error",
        "push",
        "connect",
        "subscribe",
        "unsubscribe",
        "publish",
        "presence",
        "presence_stats",
        "history",
        "ping",
        "rpc",
        "refresh",
        "sub_refresh",
    },
    "Push": {
        "id",
        "channel",
        "pub",
        "join",
        "leave",
        "unsubscribe",
        "message",
        "subscribe",
        "connect",
        "disconnect",
        "refresh",
    },
    "ClientInfo": {"user", "client", "conn_info", "chan_info"},
    "Publication": {
        "data",
        "info",
        "offset",
        "tags",
        "delta",
        "time",
        "channel",
        "key",
        "removed",
        "score",
        "epoch",
        "prev_data",
        "version",
    },
    "Join": {"info"},
    "Leave": {"info"},
    "Unsubscribe": {"code", "reason"},
    "Subscribe": {"recoverable", "epoch", "offset", "positioned", "data"},
    "Message": {"data"},
    "Disconnect": {"code", "reason", "reconnect"},
    "Refresh": {"expires", "ttl"},
    "ConnectRequest": {
        "token",
        "data",
        "subs",
        "name",
        "version",
        "headers",
        "flag",
        "profile",
        "dict",
    },
    "ConnectResult": {
        "client",
        "version",
        "expires",
        "ttl",
        "data",
        "subs",
        "ping",
        "pong",
        "session",
        "node",
        "time",
        "flag",
        "dict",
    },
    "RefreshRequest": {"token"},
    "RefreshResult": {"client", "version", "expires", "ttl"},
    "SubscribeRequest": {
        "channel",
        "token",
        "recover",
        "epoch",
        "offset",
        "data",
        "positioned",
        "recoverable",
        "join_leave",
        "delta",
        "tf",
        "flag",
        "type",
        "phase",
        "cursor",
        "limit",
        "asc",
    },
    "SubscribeResult": {
        "expires",
        "ttl",
        "recoverable",
        "epoch",
        "publications",
        "recovered",
        "offset",
        "positioned",
        "data",
        "was_recovering",
        "delta",
        "id",
        "type",
        "phase",
        "cursor",
        "state",
        "publish_debounce",
    },
    "SubRefreshRequest": {"channel", "token", "type", "track", "untrack"},
    "SubRefreshResult": {"expires", "ttl", "items"},
    "UnsubscribeRequest": {"channel"},
    "UnsubscribeResult": set(),
    "PublishRequest": {"channel", "data", "type", "key", "removed"},
    "PublishResult": set(),
    "PresenceRequest": {"channel"},
    "PresenceResult": {"presence"},
    "PresenceStatsRequest": {"channel"},
    "PresenceStatsResult": {"num_clients", "num_users"},
    "StreamPosition": {"offset", "epoch"},
    "HistoryRequest": {"channel", "limit", "since", "reverse"},
    "HistoryResult": {"publications", "epoch", "offset"},
    "PingRequest": set(),
    "PingResult": set(),
    "RPCRequest": {"data", "method"},
    "RPCResult": {"data"},
    "SendRequest": {"data"},
}

# What the SDKs (centrifuge-js, centrifuge-python) read or send: these must exist here.
REQUIRED: dict[str, set[str]] = {
    "Command": PROTO_FIELDS["Command"],
    "Reply": PROTO_FIELDS["Reply"],
    "ConnectResult": {"client", "version", "expires", "ttl", "data", "subs", "ping", "pong"},
    "SubscribeResult": {
        "expires",
        "ttl",
        "recoverable",
        "epoch",
        "publications",
        "recovered",
        "offset",
        "positioned",
        "data",
        "was_recovering",
    },
    "SubscribeRequest": {"channel", "token", "recover", "epoch", "offset", "data", "join_leave"},
    "Push": {
        "channel",
        "pub",
        "join",
        "leave",
        "unsubscribe",
        "message",
        "subscribe",
        "disconnect",
        "refresh",
    },
    "Publication": {"data", "info", "offset", "tags"},
    "ClientInfo": PROTO_FIELDS["ClientInfo"],
    "HistoryRequest": PROTO_FIELDS["HistoryRequest"],
    "HistoryResult": PROTO_FIELDS["HistoryResult"],
    "PresenceStatsResult": PROTO_FIELDS["PresenceStatsResult"],
    "Error": PROTO_FIELDS["Error"],
}


def _struct(name: str) -> type[msgspec.Struct]:
    cls: type[msgspec.Struct] = getattr(m, name)
    assert issubclass(cls, msgspec.Struct)
    return cls


@pytest.mark.parametrize("name", sorted(PROTO_FIELDS))
def test_every_field_is_a_client_proto_field(name: str) -> None:
    """No struct has a field client.proto does not name: a misspelt field would be silently
    dropped by the SDKs."""
    fields = set(_struct(name).__struct_fields__)
    assert fields <= PROTO_FIELDS[name], fields - PROTO_FIELDS[name]


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_fields_the_sdks_use_exist(name: str) -> None:
    """The fields the client SDKs read or send are all declared."""
    fields = set(_struct(name).__struct_fields__)
    assert REQUIRED[name] <= fields, REQUIRED[name] - fields


def test_no_struct_renames_its_fields() -> None:
    """JSON names are the attribute names (no camelCase renaming)."""
    for name in PROTO_FIELDS:
        cls = _struct(name)
        assert cls.__struct_encode_fields__ == cls.__struct_fields__, name


def test_connect_result_omits_defaults() -> None:
    """Only set fields appear: `{"id":1,"connect":{"client":"x"}}` exactly."""
    assert encode_reply(m.Reply(id=1, connect=m.ConnectResult(client="x"))) == (
        b'{"id":1,"connect":{"client":"x"}}'
    )


@pytest.mark.parametrize(
    ("reply", "wire"),
    [
        (m.Reply(), b"{}"),
        (m.Reply(id=2, subscribe=m.SubscribeResult()), b'{"id":2,"subscribe":{}}'),
        (m.Reply(id=3, unsubscribe=m.UnsubscribeResult()), b'{"id":3,"unsubscribe":{}}'),
        (m.Reply(id=4, publish=m.PublishResult()), b'{"id":4,"publish":{}}'),
        (
            m.Reply(id=5, error=m.Error(code=103, message="permission denied")),
            b'{"id":5,"error":{"code":103,"message":"permission denied"}}',
        ),
        (
            m.Reply(id=6, error=m.Error(code=100, message="internal", temporary=True)),
            b'{"id":6,"error":{"code":100,"message":"internal","temporary":true}}',
        ),
        (
            m.Reply(push=m.Push(channel="c", pub=m.Publication(data=msgspec.Raw(b"[1]")))),
            b'{"push":{"channel":"c","pub":{"data":[1]}}}',
        ),
        (
            m.Reply(push=m.Push(channel="c", pub=m.Publication(data=msgspec.Raw(b"1"), offset=7))),
            b'{"push":{"channel":"c","pub":{"data":1,"offset":7}}}',
        ),
        (
            m.Reply(push=m.Push(channel="c", join=m.Join(info=m.ClientInfo(user="u", client="k")))),
            b'{"push":{"channel":"c","join":{"info":{"user":"u","client":"k"}}}}',
        ),
        (
            m.Reply(push=m.Push(channel="c", unsubscribe=m.Unsubscribe(code=2000, reason="r"))),
            b'{"push":{"channel":"c","unsubscribe":{"code":2000,"reason":"r"}}}',
        ),
        (
            m.Reply(push=m.Push(refresh=m.Refresh(expires=True, ttl=60))),
            b'{"push":{"refresh":{"expires":true,"ttl":60}}}',
        ),
        (
            m.Reply(
                id=8,
                subscribe=m.SubscribeResult(recoverable=True, epoch="e", offset=0, recovered=False),
            ),
            b'{"id":8,"subscribe":{"recoverable":true,"epoch":"e"}}',
        ),
    ],
)
def test_defaults_are_left_out(reply: m.Reply, wire: bytes) -> None:
    """Zero numbers, false, empty strings, empty payloads and absent messages are omitted, as
    protobuf's JSON mapping does."""
    assert encode_reply(reply) == wire


def test_presence_stats_always_carry_both_counts() -> None:
    """centrifuge-js reads `num_clients` and `num_users` unguarded: zeros are written."""
    wire = encode_reply(m.Reply(id=1, presence_stats=m.PresenceStatsResult()))
    assert msgspec.json.decode(wire) == {
        "id": 1,
        "presence_stats": {"num_clients": 0, "num_users": 0},
    }


def test_history_publications_keep_their_order_and_payloads() -> None:
    """A history result lists publications with raw data, offsets and tags as given."""
    result = m.HistoryResult(
        publications=[
            m.Publication(data=msgspec.Raw(b'{"a":1}'), offset=1, tags={"event": "x"}),
            m.Publication(data=msgspec.Raw(b'"b"'), offset=2),
        ],
        epoch="ep",
        offset=2,
    )
    assert encode_reply(m.Reply(id=9, history=result)) == (
        b'{"id":9,"history":{"publications":[{"data":{"a":1},"offset":1,"tags":{"event":"x"}},'
        b'{"data":"b","offset":2}],"epoch":"ep","offset":2}}'
    )


def test_commands_round_trip_through_json() -> None:
    """Every request type encodes and decodes back to itself."""
    command = m.Command(
        id=42,
        connect=m.ConnectRequest(
            token="t",
            data=msgspec.Raw(b'{"x":1}'),
            subs={"c": m.SubscribeRequest(channel="c", recover=True, epoch="e", offset=3)},
            name="js",
            version="5",
            headers={"h": "v"},
        ),
        history=m.HistoryRequest(
            channel="c", limit=10, since=m.StreamPosition(offset=1, epoch="e"), reverse=True
        ),
        sub_refresh=m.SubRefreshRequest(channel="c", token="s"),
    )
    wire = msgspec.json.encode(command)
    assert msgspec.json.decode(wire, type=m.Command) == command
