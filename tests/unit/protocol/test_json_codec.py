"""The JSON wire format: batches, pongs, raw payloads and proto field names."""

from __future__ import annotations

import msgspec
import pytest

from xshathra.protocol import messages as m
from xshathra.protocol.codes import should_reconnect
from xshathra.protocol.json_codec import (
    MAX_COMMANDS_PER_FRAME,
    ProtocolDecodeError,
    decode_commands,
    encode_reply,
    join_frames,
)


def test_newline_delimited_batch_with_blank_lines() -> None:
    """Several commands per frame, blank lines skipped, order kept."""
    cmds = decode_commands(b'{"id":1,"ping":{}}\n\n{"id":2,"presence":{"channel":"c"}}\n')
    assert [c.id for c in cmds] == [1, 2]
    assert cmds[1].presence == m.PresenceRequest(channel="c")


def test_empty_command_is_a_pong() -> None:
    """`{}` decodes to a command with no id and no method: the client's pong."""
    (pong,) = decode_commands(b"{}")
    assert pong.id == 0 and pong.connect is None and pong.ping is None


def test_payload_bytes_are_kept_verbatim() -> None:
    """`data` is raw JSON: big ints, unicode escapes and key order pass untouched."""
    raw = b'{"z":1,"a":123456789012345678901234567890,"s":"\\u00e9"}'
    (cmd,) = decode_commands(b'{"id":3,"publish":{"channel":"c","data":' + raw + b"}}")
    assert cmd.publish is not None and bytes(cmd.publish.data) == raw


def test_too_many_commands_and_bad_ids_are_refused() -> None:
    with pytest.raises(ProtocolDecodeError):
        decode_commands(b"\n".join([b"{}"] * (MAX_COMMANDS_PER_FRAME + 1)))
    with pytest.raises(ProtocolDecodeError):
        decode_commands(b'{"id":-1}')
    with pytest.raises(ProtocolDecodeError):
        decode_commands(b'{"id":"1"}')


def test_defaults_are_omitted_on_encode() -> None:
    """Like protobuf's JSON mapping: only set fields appear."""
    assert encode_reply(m.Reply(id=1, connect=m.ConnectResult(client="x"))) == (
        b'{"id":1,"connect":{"client":"x"}}'
    )
    assert (
        encode_reply(m.Reply(push=m.Push(channel="c", pub=m.Publication(data=msgspec.Raw(b"[1]")))))
        == b'{"push":{"channel":"c","pub":{"data":[1]}}}'
    )


def test_join_frames() -> None:
    assert join_frames([b"{}", b'{"id":1}']) == b'{}\n{"id":1}'


def test_field_names_follow_client_proto() -> None:
    """The JSON names the SDKs read, as client.proto spells them."""
    assert set(m.Command.__struct_fields__) >= {
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
    }
    assert set(m.SubscribeResult.__struct_fields__) >= {
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
    }
    assert set(m.ConnectResult.__struct_fields__) >= {
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
    }
    assert set(m.Push.__struct_fields__) >= {
        "channel",
        "pub",
        "join",
        "leave",
        "unsubscribe",
        "message",
        "subscribe",
        "disconnect",
        "refresh",
    }


@pytest.mark.parametrize(
    ("code", "reconnect"),
    [
        (3000, True),
        (3499, True),
        (3500, False),
        (3999, False),
        (4000, True),
        (4500, False),
        (1000, False),
    ],
)
def test_reconnect_ranges(code: int, reconnect: bool) -> None:
    assert should_reconnect(code) is reconnect
