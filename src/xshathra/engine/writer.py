"""Outgoing frames and the per-connection writer: batching within a loop tick, bounded memory.

A frame is encoded once (per publication, not per subscriber) and the same object is queued to
every subscriber. Writers never await: a tick's messages for one connection are joined into one
write, and a connection whose transport buffer passes its limit is disconnected as slow (3008)
instead of growing memory.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from xshathra.protocol.json_codec import join_frames


class OutgoingFrame:
    """One encoded reply or push. `wire` caches the transport's framing of `payload` alone, so a
    frame fanned out to thousands of connections is framed once."""

    __slots__ = ("payload", "wire")

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.wire: bytes | None = None


class FrameSink(Protocol):
    """What a transport offers the writer."""

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
    """

    __slots__ = ("_loop", "_merged", "dirty")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        # Writers with frames this tick. Never replaced, only cleared, since every writer
        # holds it; a writer appended during the flush is flushed by the same loop.
        self.dirty: list[Writer] = []
        # Frames (by identity; all alive until the flush ends) -> their merged frame.
        self._merged: dict[tuple[int, ...], OutgoingFrame] = {}

    def merged(self, frames: list[OutgoingFrame]) -> OutgoingFrame:
        key = tuple(map(id, frames))
        frame = self._merged.get(key)
        if frame is None:
            frame = self._merged[key] = OutgoingFrame(join_frames([f.payload for f in frames]))
        return frame

    def schedule(self) -> None:
        """Called by the first writer to become dirty this tick."""
        self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        dirty = self.dirty
        try:
            for writer in dirty:
                pending = writer._pending
                if pending is None or writer.closed:
                    continue
                writer._pending = None
                frame = self.merged(pending) if type(pending) is list else pending
                if writer._sink.send_frame(frame) > writer._max_buffered:  # type: ignore[arg-type]
                    writer.closed = True
                    writer._owner.writer_slow()
        finally:
            dirty.clear()
            self._merged.clear()  # ids are only unique while the frames are alive


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
        frame = self._scheduler.merged(pending) if type(pending) is list else pending
        if self._sink.send_frame(frame) > self._max_buffered:  # type: ignore[arg-type]
            self.closed = True
            self._owner.writer_slow()

    def close(self) -> None:
        self.closed = True
        self._pending = None
