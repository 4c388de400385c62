"""The JSON wire format: newline-delimited batches in, newline-joined replies out."""

from __future__ import annotations

import contextlib

import msgspec
import pytest

from xshathra.protocol import messages as m
from xshathra.protocol.codec import ProtocolDecodeError
from xshathra.protocol.json_codec import (
    MAX_COMMANDS_PER_FRAME,
    PING_FRAME,
    decode_commands,
    encode_reply,
    join_frames,
)

# --- batches -------------------------------------------------------------------------------


def test_one_command_per_line_in_order() -> None:
    """A frame carries several commands separated by newlines, decoded in order."""
    cmds = decode_commands(
        b'{"id":1,"ping":{}}\n{"id":2,"presence":{"channel":"c"}}\n{"id":3,"history":{}}'
    )
    assert [c.id for c in cmds] == [1, 2, 3]
    assert cmds[0].ping == m.PingRequest()
    assert cmds[1].presence == m.PresenceRequest(channel="c")
    assert cmds[2].history == m.HistoryRequest()


def test_empty_lines_are_skipped() -> None:
    """Blank lines, a trailing newline and CRLF line ends add no commands."""
    cmds = decode_commands(b'\n{"id":1,"ping":{}}\r\n\n   \n{"id":2,"ping":{}}\n')
    assert [c.id for c in cmds] == [1, 2]


def test_an_empty_frame_has_no_commands() -> None:
    """An empty or all-blank frame decodes to no commands, not an error."""
    assert decode_commands(b"") == []
    assert decode_commands(b"\n \n") == []


def test_max_commands_per_frame_is_accepted() -> None:
    """Exactly the per-frame maximum is accepted."""
    frame = b"\n".join(b'{"id":%d,"ping":{}}' % (i + 1) for i in range(MAX_COMMANDS_PER_FRAME))
    assert len(decode_commands(frame)) == MAX_COMMANDS_PER_FRAME


def test_too_many_commands_per_frame_are_refused() -> None:
    """One command past the per-frame maximum refuses the whole frame."""
    frame = b"\n".join([b"{}"] * (MAX_COMMANDS_PER_FRAME + 1))
    with pytest.raises(ProtocolDecodeError):
        decode_commands(frame)


def test_blank_lines_do_not_count_towards_the_limit() -> None:
    """The limit counts commands, not lines."""
    frame = b"\n\n".join([b"{}"] * MAX_COMMANDS_PER_FRAME)
    assert len(decode_commands(frame)) == MAX_COMMANDS_PER_FRAME


def test_one_bad_line_refuses_the_frame() -> None:
    """A malformed line anywhere makes the whole frame a decode error."""
    with pytest.raises(ProtocolDecodeError):
        decode_commands(b'{"id":1,"ping":{}}\n{"id":2,')


# --- ids ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("cid", [0, 1, 2**31, 2**32 - 1])
def test_ids_in_the_uint32_range_are_accepted(cid: int) -> None:
    """Command ids are uint32 in client.proto: 0 through 2**32-1."""
    assert decode_commands(b'{"id":%d}' % cid)[0].id == cid


@pytest.mark.parametrize(
    "raw", [b"-1", b"4294967296", b"18446744073709551616", b'"1"', b"1.5", b"true", b"null"]
)
def test_ids_outside_uint32_or_not_integers_are_refused(raw: bytes) -> None:
    """Negative, too large, and non-integer ids are decode errors."""
    with pytest.raises(ProtocolDecodeError):
        decode_commands(b'{"id":' + raw + b"}")


# --- the pong and unknown content ------------------------------------------------------------


def test_empty_command_is_a_pong() -> None:
    """`{}` is a command with no id and no method: the client's answer to a ping."""
    (pong,) = decode_commands(b"{}")
    assert pong == m.Command()


def test_unknown_fields_are_ignored() -> None:
    """Fields this server does not know (newer clients) are ignored, as protobuf JSON does."""
    (cmd,) = decode_commands(b'{"id":4,"future":{"x":1},"subscribe":{"channel":"c","cursor":"x"}}')
    assert cmd.id == 4 and cmd.subscribe == m.SubscribeRequest(channel="c")


@pytest.mark.parametrize(
    "frame",
    [
        b"[]",
        b"1",
        b'"connect"',
        b"null",
        b'{"id":1,"connect":[]}',
        b'{"id":1,"subscribe":{"channel":1}}',
        b'{"id":1,"connect":{"subs":{"c":1}}}',
        b'{"id":1,"connect":{"headers":{"h":1}}}',
        b"\xff\xfe{}",
        b'{"id":1,"publish":{"channel":"c","data":}}',
        b'{"id":1,"publish":{"channel":"c","data":tru}}',
    ],
)
def test_wrong_shapes_are_decode_errors(frame: bytes) -> None:
    """Non-objects, wrongly typed fields, invalid UTF-8 and broken JSON raise only
    `ProtocolDecodeError`."""
    with pytest.raises(ProtocolDecodeError):
        decode_commands(frame)


def test_deep_nesting_is_a_decode_error() -> None:
    """Raw payloads nested thousands deep are refused with `ProtocolDecodeError`, like any
    other bad frame, not with a RecursionError escaping the decoder."""
    for depth in (1_000, 10_000, 30_000):
        frame = b'{"id":1,"publish":{"channel":"c","data":' + b"[" * depth + b"]" * depth + b"}}"
        with contextlib.suppress(ProtocolDecodeError):
            decode_commands(frame)  # anything else (RecursionError) fails the test


# --- payloads ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"123456789012345678901234567890",
        b"-0.000000000000000000001e-300",
        b'"\\u00e9\\ud83d\\ude00 plain \xc3\xa9"',
        b'{"z":1,"a":{"b":[1,{"c":null}]},"z":2}',
        b"[ 1 , 2 ]",
        b"true",
        b"null",
    ],
)
def test_data_passes_through_as_raw_json_bytes(raw: bytes) -> None:
    """`data` is kept as the exact bytes sent: big numbers, escapes, duplicate keys, spacing."""
    (cmd,) = decode_commands(b'{"id":3,"publish":{"channel":"c","data":' + raw + b"}}")
    assert cmd.publish is not None and bytes(cmd.publish.data) == raw


def test_raw_fields_of_connect_and_subscribe_pass_through() -> None:
    """Connect and subscribe `data` are raw too."""
    (cmd,) = decode_commands(
        b'{"id":1,"connect":{"token":"t","data":{"k":[1,2]},'
        b'"subs":{"c":{"recover":true,"offset":5,"epoch":"e","data":"s"}}}}'
    )
    assert cmd.connect is not None and bytes(cmd.connect.data) == b'{"k":[1,2]}'
    assert cmd.connect.subs is not None
    sub = cmd.connect.subs["c"]
    assert (sub.recover, sub.offset, sub.epoch, bytes(sub.data)) == (True, 5, "e", b'"s"')


def test_absent_data_is_empty() -> None:
    """Without `data`, the raw field is empty (falsy)."""
    (cmd,) = decode_commands(b'{"id":3,"publish":{"channel":"c"}}')
    assert cmd.publish is not None and not cmd.publish.data


def test_encoded_raw_data_is_written_verbatim() -> None:
    """A reply's raw payload is copied into the output untouched."""
    raw = b'{"big":123456789012345678901234567890,"s":"\\u00e9"}'
    out = encode_reply(m.Reply(push=m.Push(channel="c", pub=m.Publication(data=msgspec.Raw(raw)))))
    assert out == b'{"push":{"channel":"c","pub":{"data":' + raw + b"}}}"


# --- encoding ----------------------------------------------------------------------------------


def test_replies_have_no_trailing_newline_and_join_with_newlines() -> None:
    """One reply is one line; several are joined by single newlines."""
    one = encode_reply(m.Reply(id=1, ping=m.PingResult()))
    assert one == b'{"id":1,"ping":{}}'
    assert join_frames([one, b"{}"]) == b'{"id":1,"ping":{}}\n{}'
    assert join_frames([one]) == one


def test_joined_replies_decode_back_line_by_line() -> None:
    """A joined frame splits back into the replies it was made of."""
    replies = [
        m.Reply(id=1, subscribe=m.SubscribeResult(epoch="e", offset=3, recoverable=True)),
        m.Reply(push=m.Push(channel="c", join=m.Join(info=m.ClientInfo(user="u", client="c")))),
        m.Reply(id=2, error=m.Error(code=103, message="permission denied")),
    ]
    frame = join_frames([encode_reply(r) for r in replies])
    decoder = msgspec.json.Decoder(m.Reply)
    assert [decoder.decode(line) for line in frame.split(b"\n")] == replies


def test_ping_frame_is_an_empty_object() -> None:
    """The server's ping is `{}`, an empty reply."""
    assert PING_FRAME == b"{}" == encode_reply(m.Reply())
