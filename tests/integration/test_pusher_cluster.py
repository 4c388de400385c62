"""The Pusher protocol on two nodes sharing PostgreSQL and Redis: the HTTP API's channel
listings answer for the whole cluster, presence members are counted per user across nodes,
and a signed HTTP request is accepted once by the cluster, not once per node. Driven by
unmodified pusher-js under Node and the `pusher` PyPI library."""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.integration.test_cluster import shared_broker
from tests.integration.test_pusher import (
    JS_DIR,
    lib,
    new_app,
    signed,
    start_pusher_js,
    subscribed,
)
from tests.support.receiver import Receiver
from tests.support.server import ServerProcess, cluster_nodes

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not (JS_DIR / "node_modules" / "pusher-js").exists(),
    reason="Node or the npm packages are missing (make test installs them)",
)

Json = dict[str, Any]
STATS_INTERVAL = 0.5


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServerProcess]]:
    broker = shared_broker("redis")
    env = {
        "XSHATHRA_BROKER_PREFIX": f"xs_pc_{secrets.token_hex(4)}",
        "XSHATHRA_NODE_STATS_INTERVAL": str(STATS_INTERVAL),
    }
    with cluster_nodes(tmp_path_factory, broker, env) as nodes:
        yield nodes


async def test_channel_listings_span_both_nodes(pair: list[ServerProcess]) -> None:
    """Subscribers on node B are listed, with their counts, when node A is asked."""
    a, b = pair
    app = new_app(a)
    api = lib(a, app)
    async with (
        start_pusher_js(b, app, user="ann") as ann_b,
        start_pusher_js(b, app, user="bob") as bob_b,
        start_pusher_js(a, app, user="ann") as ann_a,
    ):
        await subscribed(ann_b, "presence-room")
        await subscribed(bob_b, "presence-room")
        await subscribed(ann_b, "only-on-b")
        await subscribed(ann_a, "presence-room")
        listed = await asyncio.to_thread(api.channels_info)
        assert listed == {"channels": {"only-on-b": {}, "presence-room": {}}}
        presence = await asyncio.to_thread(
            api.channels_info, "presence-", ["user_count", "subscription_count"]
        )
        assert presence == {
            "channels": {"presence-room": {"user_count": 2, "subscription_count": 3}}
        }
        counted = await asyncio.to_thread(api.channels_info, "only-", ["subscription_count"])
        assert counted == {"channels": {"only-on-b": {"subscription_count": 1}}}
        one = await asyncio.to_thread(
            api.channel_info, "presence-room", ["user_count", "subscription_count"]
        )
        assert one == {"occupied": True, "user_count": 2, "subscription_count": 3}
        elsewhere = await asyncio.to_thread(api.channel_info, "only-on-b", ["subscription_count"])
        assert elsewhere == {"occupied": True, "subscription_count": 1}
        await ann_b.send("unsubscribe", channel="only-on-b")
        await ann_b.next("unsubscribed")
        await bob_b.send("exit")
        await bob_b.next("bye")
        # The unsubscribe reaches node B over its socket; node A asks until B's answer shows it.
        deadline = asyncio.get_running_loop().time() + 20
        while True:
            listed = await asyncio.to_thread(api.channels_info, "", ["subscription_count"])
            if listed == {"channels": {"presence-room": {"subscription_count": 2}}}:
                break
            assert asyncio.get_running_loop().time() < deadline, listed
            await asyncio.sleep(0.1)  # the close is B's to notice; nothing to await here


def test_a_signed_request_is_accepted_once_by_the_cluster(pair: list[ServerProcess]) -> None:
    """The replay guard is the cluster's: a signed POST accepted by node A is refused when
    replayed to node B (or to A), while the pusher library's own requests pass on both.
    (Its signature has a seconds timestamp and no nonce: identical requests within one second
    sign alike, so these differ in their data.)"""
    a, b = pair
    app = new_app(a)
    path = f"/apps/{app['app_id']}/events"
    body = json.dumps({"name": "e", "channels": ["c"], "data": "{}"}).encode()
    good = signed(app, "POST", path, body)
    assert httpx.post(a.base_url + path, params=good, content=body).status_code == 200
    for node in (b, a):
        replay = httpx.post(node.base_url + path, params=good, content=body)
        assert replay.status_code == 401 and "Replayed" in replay.text
        assert str(app["app_secret"]) not in replay.text
    for i, node in enumerate((a, b, a, b)):
        assert lib(node, app).trigger("c", "e", {"i": i}) == {}


async def wait_count(node: ServerProcess, app: Json, channel: str, count: int) -> None:
    """Until the channel has `count` subscribers: a connection's leave is published before
    its count is, so once the count shows it, its member events are out."""
    api = lib(node, app)
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        info = await asyncio.to_thread(api.channel_info, channel, ["subscription_count"])
        if info.get("subscription_count", 0) == count:
            return
        assert asyncio.get_running_loop().time() < deadline, info
        await asyncio.sleep(0.1)  # a close is the node's to notice; nothing to await here


async def test_members_are_users_not_connections_across_nodes(pair: list[ServerProcess]) -> None:
    """Ann joins a presence channel from both nodes: watchers get member_added when her first
    connection joins and member_removed when her last leaves, and so do the member_added /
    member_removed webhooks (once each, whichever node the connections were on)."""
    a, b = pair
    app = new_app(a)
    channel = "presence-tabs"
    with Receiver().running() as receiver:
        r = httpx.post(
            f"{a.base_url}/api/webhooks",
            headers={"X-API-Key": str(app["api_key"])},
            json={"url": receiver.url, "events": ["member_added", "member_removed"]},
        )
        assert r.status_code == 201, r.text
        async with (
            start_pusher_js(a, app, user="bob") as bob,
            start_pusher_js(a, app, user="ann") as ann_a,
            start_pusher_js(b, app, user="ann") as ann_b,
            start_pusher_js(b, app, user="carl") as carl,
        ):
            await subscribed(bob, channel)
            await subscribed(ann_a, channel)
            assert (await bob.next("member_added"))["id"] == "ann"
            await subscribed(ann_b, channel)
            # Carl joins on node B after Ann's second tab did: his join reaches Bob after hers.
            await subscribed(carl, channel)
            assert (await bob.next("member_added"))["id"] == "carl"
            await ann_a.send("exit")
            await wait_count(b, app, channel, 3)
            await ann_b.send("exit")
            assert (await bob.next("member_removed"))["id"] == "ann"
            await carl.send("exit")
            assert (await bob.next("member_removed"))["id"] == "carl"
            assert [e["id"] for e in bob.seen("member_added")] == ["ann", "carl"]
            assert [e["id"] for e in bob.seen("member_removed")] == ["ann", "carl"]
            await bob.send("exit")
            await bob.next("bye")
        requests = await asyncio.to_thread(receiver.wait_for, 6, 30.0)
    api = lib(a, app)
    events: list[tuple[str, str]] = []
    for request in requests:
        headers = {k.lower(): v for k, v in request.headers.items()}
        checked = api.validate_webhook(
            headers["x-pusher-key"], headers["x-pusher-signature"], request.body.decode()
        )
        assert checked is not None
        events += [(e["name"], e["user_id"]) for e in checked["events"]]
    assert sorted(events) == [
        ("member_added", "ann"),
        ("member_added", "bob"),
        ("member_added", "carl"),
        ("member_removed", "ann"),
        ("member_removed", "bob"),
        ("member_removed", "carl"),
    ]


async def test_subscription_counts_span_both_nodes(pair: list[ServerProcess]) -> None:
    """Subscription counting is cluster-wide: a subscriber on node A hears the count change
    when one joins and leaves on node B."""
    a, b = pair
    app = new_app(a, pusher_subscription_count=True)
    async with start_pusher_js(a, app) as here, start_pusher_js(b, app) as there:
        await subscribed(here, "gauge")
        assert (await here.next("subscription_count"))["count"] == 1
        await subscribed(there, "gauge")
        assert (await here.next("subscription_count"))["count"] == 2
        assert (await there.next("subscription_count"))["count"] == 2
        await there.send("exit")
        assert (await here.next("subscription_count"))["count"] == 1
