"""What this node knows of the others, through the broker's control bus.

- Heartbeats: every node publishes `NodeStats` every `interval` seconds (1 s by default; the
  first with `hello`, answered by every other node's at once; and once with `leaving` as it
  stops). A node is live while its last heartbeat is younger than three intervals (3 s by
  default): a node that died without a word stops counting that soon. `info` answers from
  the latest heartbeat of each live node (as Centrifugo does), the cluster-wide connection
  quota counts the other nodes' connections from them, and emulation requests are forwarded
  only to a live node.
- Queries: `channels` and `connections` ask every node (`Query`); each answers with a
  `QueryReply` to the asking node, which waits until every live node answered or a deadline
  passed, whichever comes first (a node that died meanwhile costs the deadline, never a hang).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from xshathra.engine.control import NodeStats, Query, QueryReply

if TYPE_CHECKING:
    from xshathra.engine.node import Node

log = logging.getLogger("xshathra.cluster")
LIVE_INTERVALS = 3  # heartbeats a node may miss before it counts as gone


def _max_age(stats: NodeStats) -> float:
    """How old a node's last heartbeat may be while the node counts: three of its intervals."""
    return LIVE_INTERVALS * max(stats.interval, 0.1)


@dataclass(slots=True)
class _Pending:
    waiting: set[str]  # nodes not answered yet
    replies: list[QueryReply] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)


class Cluster:
    def __init__(self, node: Node, *, interval: float, query_timeout: float) -> None:
        self._node = node
        self.interval = interval
        self.query_timeout = query_timeout
        self._peers: dict[str, tuple[float, NodeStats]] = {}  # node id -> (seen, stats)
        self._pending: dict[str, _Pending] = {}
        self._task: asyncio.Task[None] | None = None

    # --- heartbeats ---------------------------------------------------------------------------

    def start(self) -> None:
        self._task = self._node.loop.create_task(self._heartbeats())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await self._node.send_control(self._node.local_stats(leaving=True))

    async def _heartbeats(self) -> None:
        hello = True
        while True:
            try:
                await self._node.send_control(self._node.local_stats(hello=hello))
                hello = False
            except Exception as exc:  # the broker is away: the next beat tries again
                log.debug("heartbeat not sent: %s", type(exc).__name__)
            await asyncio.sleep(self.interval)

    def on_stats(self, stats: NodeStats) -> None:
        """A heartbeat (called in the bus's order, not in a task)."""
        if stats.origin_node == self._node.node_id:
            return
        if stats.leaving:
            self._peers.pop(stats.origin_node, None)
        else:
            self._peers[stats.origin_node] = (time.monotonic(), stats)
            if stats.hello:  # a node just started: it learns of this one now, not in a beat
                self._node.spawn_control(self._node.local_stats())
        for pending in self._pending.values():
            if stats.leaving and stats.origin_node in pending.waiting:
                pending.waiting.discard(stats.origin_node)
                if not pending.waiting:
                    pending.done.set()

    def peers(self) -> list[NodeStats]:
        """The latest heartbeat of every other live node."""
        now = time.monotonic()
        live: list[NodeStats] = []
        for node_id, (seen, stats) in list(self._peers.items()):
            if now - seen > _max_age(stats):
                del self._peers[node_id]
            else:
                live.append(stats)
        return live

    def is_live(self, node_id: str) -> bool:
        """Another node heard of within its liveness window."""
        entry = self._peers.get(node_id)
        return entry is not None and time.monotonic() - entry[0] <= _max_age(entry[1])

    def connections_elsewhere(self, app_id: str) -> int:
        """The app's connections on the other live nodes, as of their last heartbeat."""
        total = 0
        for stats in self.peers():
            counts = stats.apps.get(app_id)
            if counts is not None:
                total += counts[0]
        return total

    # --- queries ------------------------------------------------------------------------------

    async def query(self, app_id: str, kind: str, user: str = "") -> list[QueryReply]:
        """Every live node's answer (this node's included), as many as came by the deadline."""
        node = self._node
        query = Query(app_id=app_id, query_id=secrets.token_hex(8), kind=kind, user=user)
        local = node.answer_query(query)
        peers = {stats.origin_node for stats in self.peers()}
        if not peers:
            return [local]
        pending = _Pending(waiting=peers)
        self._pending[query.query_id] = pending
        try:
            await node.send_control(query)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.query_timeout):
                    await pending.done.wait()
        finally:
            self._pending.pop(query.query_id, None)
        return [local, *pending.replies]

    async def on_query(self, query: Query) -> None:
        if query.origin_node == self._node.node_id:
            return
        reply = self._node.answer_query(query)
        await self._node.send_control(reply)

    def on_reply(self, reply: QueryReply) -> None:
        if reply.to_node != self._node.node_id:
            return
        pending = self._pending.get(reply.query_id)
        if pending is None or reply.origin_node not in pending.waiting:
            return
        pending.waiting.discard(reply.origin_node)
        pending.replies.append(reply)
        if not pending.waiting:
            pending.done.set()
