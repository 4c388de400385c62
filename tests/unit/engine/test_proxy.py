"""The engine's side of backend proxies (SPEC §9), through its `ProxyCaller` seam: a scripted
caller stands in for the HTTP one (tested against a real backend in
tests/integration/test_proxies.py). Centrifugo's rules that are hard to reach from outside:
a token bypasses the connect proxy, server-side refresh, send failures, header retention."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import msgspec

from tests.unit.engine.conftest import MakeHarness
from xshathra.protocol import proxy as p
from xshathra.tenancy.apps import Application, NamespaceOptions
from xshathra.tenancy.proxies import ProxyTarget, parse_proxy_config

R = TypeVar("R")
Script = Callable[[Any], Any]


class ScriptedCaller:
    """Answers each kind of request with a script; None is a backend that failed."""

    def __init__(self, **scripts: Script) -> None:
        self.scripts = scripts
        self.calls: list[tuple[str, Any, Sequence[tuple[str, str]] | None]] = []

    async def call(
        self,
        app: Application,
        target: ProxyTarget,
        request: p.ProxyRequest,
        reply_type: type[R],
        client_headers: Sequence[tuple[str, str]] | None = None,
    ) -> R | None:
        kind = p.KINDS[type(request)]
        self.calls.append((kind, request, client_headers))
        reply: R | None = self.scripts[kind](request)
        return reply

    def kinds(self) -> list[str]:
        return [kind for kind, _, _ in self.calls]


PROXIES = parse_proxy_config(
    {
        "client": {
            "proxy": {
                "connect": {"enabled": True, "endpoint": "http://backend/connect"},
                "refresh": {"enabled": True, "endpoint": "http://backend/refresh"},
                "send": {"enabled": True, "endpoint": "http://backend/send"},
            }
        }
    }
)


async def test_a_token_bypasses_the_connect_proxy(make_harness: MakeHarness) -> None:
    """Centrifugo's rule: a client with a token is checked by it; the backend is not asked."""
    caller = ScriptedCaller()
    h = await make_harness(proxy=caller, proxies=PROXIES)
    await h.connect("token-user")
    assert caller.calls == []


async def test_server_side_refresh_extends_then_expires(make_harness: MakeHarness) -> None:
    answers = iter(
        [
            p.RefreshReply(result=p.RefreshResult(expire_at=int(time.time()) + 1)),
            p.RefreshReply(result=p.RefreshResult(expired=True)),
        ]
    )
    caller = ScriptedCaller(
        connect=lambda r: p.ConnectReply(
            result=p.ConnectResult(user="px", expire_at=int(time.time()) + 1)
        ),
        refresh=lambda r: next(answers),
    )
    h = await make_harness(proxy=caller, proxies=PROXIES)
    client = h.open(query=f"key={h.app.client_api_key}")
    reply = await client.call("connect")
    assert reply["connect"].get("expires") is None  # the server refreshes, not the client
    code, _ = await client.transport.wait_closed(timeout=10)
    assert code == 3005 and caller.kinds() == ["connect", "refresh", "refresh"]
    assert caller.calls[1][1].user == "px"


async def test_refresh_backend_failing_past_the_grace_expires(make_harness: MakeHarness) -> None:
    caller = ScriptedCaller(
        connect=lambda r: p.ConnectReply(
            result=p.ConnectResult(user="px", expire_at=int(time.time()) + 1)
        ),
        refresh=lambda r: None,
    )
    h = await make_harness(proxy=caller, proxies=PROXIES, expired_close_delay=0.0)
    client = h.open(query=f"key={h.app.client_api_key}")
    assert "connect" in await client.call("connect")
    code, _ = await client.transport.wait_closed(timeout=10)
    assert code == 3005


async def test_failed_send_gets_no_reply_and_keeps_the_connection(
    make_harness: MakeHarness,
) -> None:
    caller = ScriptedCaller(
        connect=lambda r: p.ConnectReply(result=p.ConnectResult(user="s")),
        send=lambda r: None,
    )
    h = await make_harness(proxy=caller, proxies=PROXIES)
    client = h.open(query=f"key={h.app.client_api_key}")
    assert "connect" in await client.call("connect")
    client.send({"send": {"data": {"n": 1}}})
    assert await client.result("ping") == {}  # answered after the send was handled
    assert caller.kinds() == ["connect", "send"] and client.transport.closed is None


async def test_upgrade_headers_are_kept_only_for_apps_with_proxies(
    make_harness: MakeHarness,
) -> None:
    caller = ScriptedCaller(connect=lambda r: p.ConnectReply(result=p.ConnectResult(user="h")))
    headers = [("Cookie", "c=1")]
    h = await make_harness(proxy=caller, proxies=PROXIES)
    client = h.open(query=f"key={h.app.client_api_key}", request_headers=headers)
    assert "connect" in await client.call("connect")
    assert caller.calls[0][2] == headers and client.transport.request_headers == headers
    plain = await make_harness()
    other = plain.open(request_headers=headers)
    assert "connect" in await other.call("connect", {"token": plain.token()})
    assert other.transport.request_headers is None  # idle connections do not hold them


async def test_a_wrong_app_id_or_unknown_key_is_refused(make_harness: MakeHarness) -> None:
    caller = ScriptedCaller(connect=lambda r: p.ConnectReply(result=p.ConnectResult(user="x")))
    h = await make_harness(proxy=caller, proxies=PROXIES)
    for query in (f"key={h.app.client_api_key}&app_id=other", "key=xc_nope", ""):
        client = h.open(query=query)
        client.send({"id": 1, "connect": {}})
        code, _ = await client.transport.wait_closed()
        assert code == 3500
    client = h.open(query="&".join(f"f{i}=1" for i in range(50)))
    client.send({"id": 1, "connect": {}})
    assert (await client.transport.wait_closed())[0] == 3501
    assert caller.calls == []


async def test_emulated_headers_reach_the_proxy(make_harness: MakeHarness) -> None:
    """A browser's `headers` in the connect request join the upgrade request's headers."""
    caller = ScriptedCaller(connect=lambda r: p.ConnectReply(result=p.ConnectResult(user="e")))
    h = await make_harness(proxy=caller, proxies=PROXIES)
    client = h.open(query=f"key={h.app.client_api_key}", request_headers=[("Cookie", "c=1")])
    reply = await client.call("connect", {"headers": {"Authorization": "Bearer t"}})
    assert "connect" in reply
    assert caller.calls[0][2] == [("Cookie", "c=1"), ("Authorization", "Bearer t")]


ROOM_PROXIES = parse_proxy_config(
    {
        "proxies": [{"name": "default", "endpoint": "http://backend/channel"}],
        "client": {"proxy": {"connect": {"enabled": True, "proxy_name": "default"}}},
    }
)
ROOM = NamespaceOptions(
    presence=True,
    subscribe_proxy_enabled=True,
    publish_proxy_enabled=True,
    sub_refresh_proxy_enabled=True,
)


async def test_sub_refresh_extends_then_ends_and_overrides_apply(
    make_harness: MakeHarness,
) -> None:
    """The subscribe reply's `override` turns presence off for this subscription; its
    `expire_at` is then extended once by the sub_refresh proxy and ended by the next answer
    (2501). A publish refused by the backend answers the backend's code."""
    answers = iter(
        [
            p.SubRefreshReply(result=p.RefreshResult(expire_at=int(time.time()) + 1)),
            p.SubRefreshReply(result=p.RefreshResult(expired=True)),
        ]
    )
    caller = ScriptedCaller(
        connect=lambda r: p.ConnectReply(result=p.ConnectResult(user="sr")),
        subscribe=lambda r: p.SubscribeReply(
            result=p.SubscribeResult(
                expire_at=int(time.time()) + 1,
                override=p.SubscribeOptionOverride(presence=p.BoolValue(value=False)),
            )
        ),
        sub_refresh=lambda r: next(answers),
        publish=lambda r: p.PublishReply(error=p.Error(code=1409, message="read only")),
    )
    h = await make_harness(proxy=caller, proxies=ROOM_PROXIES, namespaces={"room": ROOM})
    client = h.open(query=f"key={h.app.client_api_key}")
    assert "connect" in await client.call("connect")
    result = await client.subscribe("room:1")
    assert "expires" not in result  # refreshed by the server
    assert await h.node.presence(h.ref("room:1")) == {}  # overridden off
    assert await client.error("publish", {"channel": "room:1", "data": {"x": 1}}) == 1409
    push = await client.transport.wait_for(lambda m: "unsubscribe" in m.get("push", {}), 10)
    assert push["push"]["unsubscribe"]["code"] == 2501
    assert caller.kinds().count("sub_refresh") == 2


ALL_PROXIES = parse_proxy_config(
    {
        "proxies": [{"name": "default", "endpoint": "http://backend/any"}],
        "client": {
            "proxy": {
                name: {"enabled": True, "proxy_name": "default"}
                for name in ("connect", "refresh", "send")
            }
        },
        "rpc": {"namespaces": [{"name": "", "proxy_enabled": True, "proxy_name": "default"}]},
    }
)


async def test_every_request_of_a_client_carries_one_envelope(make_harness: MakeHarness) -> None:
    """Connect, subscribe, publish, rpc, send, sub_refresh and refresh name the same client,
    transport, protocol and encoding; all but the connect carry its user and `meta`."""
    soon = int(time.time()) + 1
    caller = ScriptedCaller(
        connect=lambda r: p.ConnectReply(
            result=p.ConnectResult(user="env", expire_at=soon, meta=msgspec.Raw(b'{"m":1}'))
        ),
        refresh=lambda r: p.RefreshReply(result=p.RefreshResult(expired=True)),
        subscribe=lambda r: p.SubscribeReply(result=p.SubscribeResult(expire_at=soon)),
        sub_refresh=lambda r: p.SubRefreshReply(result=p.RefreshResult(expired=True)),
        publish=lambda r: p.PublishReply(result=p.PublishResult()),
        rpc=lambda r: p.RPCReply(result=p.RPCResult()),
        send=lambda r: p.SendReply(),
    )
    h = await make_harness(proxy=caller, proxies=ALL_PROXIES, namespaces={"room": ROOM})
    client = h.open(query=f"key={h.app.client_api_key}")
    connected = await client.result("connect", {"data": {"hello": 1}})
    await client.subscribe("room:1", data={"s": 1})
    assert await client.result("publish", {"channel": "room:1", "data": {"x": 1}}) == {}
    assert await client.result("rpc", {"method": "m", "data": {"r": 1}}) == {}
    client.send({"send": {"data": {"n": 1}}})
    await client.transport.wait_closed(timeout=10)  # the refresh proxy says it expired
    kinds = set(caller.kinds())
    assert kinds == {"connect", "subscribe", "publish", "rpc", "send", "sub_refresh", "refresh"}
    for kind, request, _ in caller.calls:
        body = msgspec.json.decode(p.encode_request(request))
        envelope = {k: body.pop(k) for k in ("app_id", "client", "transport", "protocol")}
        assert envelope == {
            "app_id": h.app.app_id,
            "client": connected["client"],
            "transport": "websocket",
            "protocol": "json",
        }, kind
        assert body.pop("encoding") == "json", kind
        if kind == "connect":
            assert "user" not in body and "meta" not in body
            continue
        assert (body.pop("user"), body.pop("meta")) == ("env", {"m": 1}), kind
    data = {
        kind: msgspec.json.decode(p.encode_request(r)).get("data") for kind, r, _ in caller.calls
    }
    assert data["connect"] == {"hello": 1} and data["subscribe"] == {"s": 1}
    assert data["publish"] == {"x": 1} and data["rpc"] == {"r": 1} and data["send"] == {"n": 1}


async def test_an_empty_or_garbled_answer_is_the_backend_failing(
    make_harness: MakeHarness,
) -> None:
    """A reply with no result (nor error, nor disconnect), or whose payload does not decode,
    is answered 100 (temporary), like a backend that did not answer; the connection stays."""
    caller = ScriptedCaller(
        connect=lambda r: p.ConnectReply(result=p.ConnectResult(user="g")),
        subscribe=lambda r: p.SubscribeReply(),
        publish=lambda r: p.PublishReply(result=p.PublishResult(b64data="not base64!")),
        rpc=lambda r: p.RPCReply(result=p.RPCResult(b64data="AAEC")),  # bytes, not JSON
    )
    h = await make_harness(proxy=caller, proxies=ALL_PROXIES, namespaces={"room": ROOM})
    client = h.open(query=f"key={h.app.client_api_key}")
    assert "connect" in await client.call("connect")
    assert await client.error("subscribe", {"channel": "room:1"}) == 100
    assert await client.error("publish", {"channel": "room:1", "data": {}}) == 100
    assert await client.error("rpc", {"method": "m"}) == 100
    assert client.transport.closed is None
