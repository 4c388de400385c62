"""Protobuf clients on two nodes (PostgreSQL and Redis shared): a JSON subscriber on one node
and a protobuf subscriber on the other get the same publications, whichever node they were
published on, and presence spans the nodes. Formats are a node-local matter: what crosses the
broker is the publication, never an encoded frame."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Iterator

import pytest
from centrifuge import Client

from tests.integration.test_cluster import shared_broker
from tests.support.clients import Recorder, SubEvents, engine_api, make_client, realtime_token
from tests.support.server import ServerProcess, cluster_nodes


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServerProcess]]:
    broker = shared_broker("redis")
    env = {"XSHATHRA_BROKER_PREFIX": f"xs_pb_{secrets.token_hex(4)}"}
    with cluster_nodes(tmp_path_factory, broker, env) as nodes:
        yield nodes


@pytest.fixture
async def clients() -> AsyncIterator[list[Client]]:
    made: list[Client] = []
    yield made
    for client in made:
        await client.disconnect()


async def test_json_and_protobuf_subscribers_on_two_nodes(
    nodes: list[ServerProcess], clients: list[Client]
) -> None:
    a, b = nodes
    app = a.create_app(name="pb-cluster")
    rec_json, rec_pb = Recorder(), Recorder()
    as_json = make_client(a, rec_json, token=realtime_token(a, app, "json-user"))
    as_pb = make_client(b, rec_pb, token=realtime_token(b, app, "pb-user"), use_protobuf=True)
    clients += [as_json, as_pb]
    subs = []
    for client, rec in ((as_json, rec_json), (as_pb, rec_pb)):
        await client.connect()
        await client.ready(5)
        sub = client.new_subscription("public:both", SubEvents(rec))
        await sub.subscribe()
        await sub.ready(5)
        subs.append(sub)

    engine_api(a, app, "publish", {"channel": "public:both", "data": {"on": "a"}})
    engine_api(b, app, "publish", {"channel": "public:both", "data": {"on": "b"}})
    got_json = [(await rec_json.next("publication")).pub for _ in range(2)]
    got_pb = [(await rec_pb.next("publication")).pub for _ in range(2)]
    assert [(p.data, p.offset) for p in got_json] == [({"on": "a"}, 1), ({"on": "b"}, 2)]
    assert [(json.loads(p.data), p.offset) for p in got_pb] == [
        (p.data, p.offset) for p in got_json
    ]

    presence = await subs[1].presence()
    assert {c.user for c in presence.clients.values()} == {"json-user", "pb-user"}
    history = await subs[1].history(limit=10)
    assert [json.loads(p.data) for p in history.publications] == [{"on": "a"}, {"on": "b"}]
