"""Outgoing frames and the per-connection writer: batching within a loop tick, bounded memory.

A frame is encoded once (per publication and (codec, framing) pair, not per subscriber) and the
same object is queued to every subscriber of that pair. Writers never await: a tick's messages
for one connection are joined into one write by the connection's codec, and a connection whose
transport buffer passes its limit is disconnected as slow (3008) instead of growing memory.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from xshathra.protocol.codec import Codec

# Connections written per loop iteration by a flush; see FlushScheduler.
FLUSH_CHUNK = 256


class OutgoingFrame:
    """One encoded reply or push. `wire` caches the transport's framing of `payload` alone, so a
    frame fanned out to thousands of connections is framed once. A frame therefore only ever
    goes to sinks of one codec and one framing (the hub encodes once per such pair)."""

    __slots__ = ("payload", "wire")

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.wire: bytes | None = None


class FrameSink(Protocol):
    """What a transport offers the writer (and the hub, which groups subscribers by the pair
    `codec`, `framing`)."""

    @property
    def codec(self) -> Codec:
        """The wire format chosen for this connection; it also merges a tick's frames."""

    @property
    def framing(self) -> str:
        """How this sink wraps one message into `OutgoingFrame.wire` ("websocket", "sse"...):
        sinks that frame alike share the framed bytes of a fanned-out frame."""

    def send_frame(self, frame: OutgoingFrame) -> int:
        """Write this message; return the bytes written but not yet accepted by the kernel."""


class FlushScheduler:
    """Flushes every writer that got frames during this loop iteration, once, in one callback.

    One callback for all dirty writers (not one per writer or per frame) keeps the per-delivery
    cost to a list append. Writers holding several frames send them as one message, and when a
    fan-out gave a thousand writers the same frames, that message is built (and framed by the
    transport) once for all of them: `merged` remembers it for the rest of the flush.

    The flush loop does each writer's work inline rather than calling a method per writer, and
    writers append themselves to `dirty` directly: at a fan-out to thousands, every Python call
    per delivery shows in the profile next to the write itself.

    A flush writes at most FLUSH_CHUNK connections per loop iteration and continues in the next
    one. In between, the loop reads what arrived: a publication that comes in while a large
    fan-out is being written joins the frames still queued for the connections not written
    yet, so they get both in one write, instead of waiting for the whole fan-out to end and
    then costing every connection a second write.
    """

    __slots__ = ("_done", "_loop", "_merged", "dirty")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        # Writers with frames to send. Never replaced, only cleared once all are flushed, since
        # every writer holds it; a writer appended during the flush is flushed by it too.
        self.dirty: list[Writer] = []
        self._done = 0  # how many of `dirty` this flush has written
        # Frames (by identity) -> the frames and their merged frame; holding the frames keeps
        # their ids unique until the flush ends.
        self._merged: dict[tuple[int, ...], tuple[list[OutgoingFrame], OutgoingFrame]] = {}

    def merged(self, frames: list[OutgoingFrame], codec: Codec) -> OutgoingFrame:
        """The frames as one message, joined by `codec` (the one that encoded them: the same
        frames are never encoded by two codecs, so the frames alone are the key)."""
        key = tuple(map(id, frames))
        found = self._merged.get(key)
        if found is None:
            found = self._merged[key] = (
                frames,
                OutgoingFrame(codec.join_frames([f.payload for f in frames])),
            )
        return found[1]

    def schedule(self) -> None:
        """Called by the first writer to become dirty while no flush is under way."""
        self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        dirty = self.dirty
        start = self._done
        self._done = end = start + FLUSH_CHUNK
        try:
            for writer in dirty[start:end]:
                pending = writer._pending
                if pending is None or writer.closed:
                    continue
                writer._pending = None
                sink = writer._sink
                frame = self.merged(pending, sink.codec) if type(pending) is list else pending
                if sink.send_frame(frame) > writer._max_buffered:  # type: ignore[arg-type]
                    writer.closed = True
                    writer._owner.writer_slow()
        finally:
            if end < len(dirty):
                self._loop.call_soon(self._flush)
            else:
                dirty.clear()
                self._done = 0
                self._merged.clear()


class SlowListener(Protocol):
    def writer_slow(self) -> None:
        """The transport buffer passed its limit: the peer does not read fast enough."""


class Writer:
    __slots__ = ("_dirty", "_max_buffered", "_owner", "_pending", "_scheduler", "_sink", "closed")

    def __init__(
        self,
        sink: FrameSink,
        scheduler: FlushScheduler,
        max_buffered: int,
        owner: SlowListener,
    ) -> None:
        self._sink = sink
        self._scheduler = scheduler
        self._dirty = scheduler.dirty
        self._max_buffered = max_buffered
        # The owner itself, not a bound method: that would be one more object per connection.
        self._owner = owner
        # What this tick queued: None (nearly always, for an idle connection), the one frame
        # (a fan-out's usual case: no list allocated per delivery), or a list of them.
        self._pending: OutgoingFrame | list[OutgoingFrame] | None = None
        self.closed = False

    def enqueue(self, frame: OutgoingFrame) -> None:
        pending = self._pending
        if pending is None:
            if self.closed:
                return
            self._pending = frame
            dirty = self._dirty
            if not dirty:
                self._scheduler.schedule()
            dirty.append(self)
        elif type(pending) is list:
            pending.append(frame)
        else:
            self._pending = [pending, frame]  # type: ignore[list-item]

    def flush(self) -> None:
        """Send what is queued now, ahead of the tick's flush (before a close frame)."""
        pending, self._pending = self._pending, None
        if self.closed or pending is None:
            return
        sink = self._sink
        frame = self._scheduler.merged(pending, sink.codec) if type(pending) is list else pending
        if sink.send_frame(frame) > self._max_buffered:  # type: ignore[arg-type]
            self.closed = True
            self._owner.writer_slow()

    def close(self) -> None:
        self.closed = True
        self._pending = None
