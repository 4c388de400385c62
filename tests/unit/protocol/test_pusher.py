"""The Pusher protocol module: events as pusher-js reads them, the codec's mapping of
publications, joins and leaves, and the three signatures (channel auth, sign-in, HTTP query)."""

from __future__ import annotations

import hashlib
import hmac
import json

import msgspec
import pytest

from xshathra.protocol import messages as m
from xshathra.protocol import pusher as p


def test_connection_established_data_is_a_json_string() -> None:
    """pusher-js parses `data` a second time: it must be a string holding JSON."""
    event = json.loads(p.connection_established("1.2"))
    assert event["event"] == "pusher:connection_established"
    assert json.loads(event["data"]) == {"socket_id": "1.2", "activity_timeout": 120}


def test_error_data_is_an_object() -> None:
    assert json.loads(p.error_event(4001, "no app")) == {
        "event": "pusher:error",
        "data": {"code": 4001, "message": "no app"},
    }


def pub(data: bytes, tags: dict[str, str] | None = None, user: str = "") -> m.Reply:
    info = m.ClientInfo(user=user, client="1.1") if user else None
    publication = m.Publication(data=msgspec.Raw(data), tags=tags, info=info)
    return m.Reply(push=m.Push(channel="ch", pub=publication))


def test_publication_becomes_its_tagged_event() -> None:
    event = json.loads(p.PUSHER_CODEC.encode_reply(pub(b'{"a":1}', {"event": "e"})))
    assert event == {"event": "e", "channel": "ch", "data": '{"a":1}'}


@pytest.mark.parametrize("tags", [None, {}, {"event": "pusher_internal:member_added"}])
def test_untagged_or_reserved_events_are_publication(tags: dict[str, str] | None) -> None:
    event = json.loads(p.PUSHER_CODEC.encode_reply(pub(b"[1]", tags)))
    assert (event["event"], event["data"]) == ("publication", "[1]")


def test_a_json_string_goes_out_as_that_string() -> None:
    event = json.loads(p.PUSHER_CODEC.encode_reply(pub(b'"hello"', {"event": "e"})))
    assert event["data"] == "hello"


def test_client_events_carry_the_user_id() -> None:
    event = json.loads(p.PUSHER_CODEC.encode_reply(pub(b"{}", {"event": "client-x"}, "u1")))
    assert event["user_id"] == "u1"


def test_join_and_leave_are_member_events() -> None:
    info = m.ClientInfo(user="u", client="c", chan_info=msgspec.Raw(b'{"n":1}'))
    added = json.loads(
        p.PUSHER_CODEC.encode_reply(
            m.Reply(push=m.Push(channel="presence-x", join=m.Join(info=info)))
        )
    )
    assert added["event"] == "pusher_internal:member_added"
    assert json.loads(added["data"]) == {"user_id": "u", "user_info": {"n": 1}}
    removed = json.loads(
        p.PUSHER_CODEC.encode_reply(
            m.Reply(push=m.Push(channel="presence-x", leave=m.Leave(info=info)))
        )
    )
    assert json.loads(removed["data"]) == {"user_id": "u"}


def test_frames_join_with_newlines_and_json_never_holds_one() -> None:
    frame = p.PUSHER_CODEC.encode_reply(pub(b'{"t":"a\\nb"}', {"event": "e"}))
    assert b"\n" not in frame
    assert p.PUSHER_CODEC.join_frames([frame, b"", frame]) == frame + b"\n" + frame


@pytest.mark.parametrize(
    ("given", "stored"),
    [('{"a":1}', b'{"a":1}'), ("plain", b'"plain"'), ("", b'""'), ("42", b"42")],
)
def test_pusher_data_as_publication_data(given: str, stored: bytes) -> None:
    assert p.publication_to_data(given) == stored


def test_channel_auth_and_signin_signatures() -> None:
    def sign(text: str) -> str:
        return hmac.new(b"sec", text.encode(), hashlib.sha256).hexdigest()

    assert p.channel_auth("k", "sec", "1.2", "private-a", None) == "k:" + sign("1.2:private-a")
    assert p.channel_auth("k", "sec", "1.2", "presence-a", '{"user_id":"u"}') == "k:" + sign(
        '1.2:presence-a:{"user_id":"u"}'
    )
    assert p.signin_auth("k", "sec", "1.2", '{"id":"u"}') == "k:" + sign('1.2::user::{"id":"u"}')


def test_http_signature_signs_the_sorted_query_without_the_signature() -> None:
    params = {"b": "2", "auth_signature": "x", "A": "1"}
    assert p.query_string_to_sign(params) == "a=1&b=2"
    expected = hmac.new(b"s", b"POST\n/apps/1/events\na=1&b=2", hashlib.sha256).hexdigest()
    assert p.http_signature("s", "post", "/apps/1/events", params) == expected


def test_decoders_refuse_with_their_own_error() -> None:
    for bad in (b"", b"[]", b'{"event":1}', b"\xff"):
        with pytest.raises(p.PusherDecodeError):
            p.decode_event(bad)
    with pytest.raises(p.PusherDecodeError):
        p.decode_channel_data('{"user_info":{}}')
    assert p.decode_channel_data('{"user_id":7}').user_id == 7


def test_cache_channels_are_named_as_pusher_names_them() -> None:
    for name in ("cache-a", "private-cache-a", "private-encrypted-cache-a", "presence-cache-a"):
        assert p.is_cache(name), name
    for name in ("a-cache-b", "private-a", "presence-cachea", "cache", "public:cache-a"):
        assert not p.is_cache(name), name
    assert json.loads(p.cache_miss("cache-a")) == {
        "event": "pusher:cache_miss",
        "channel": "cache-a",
    }
