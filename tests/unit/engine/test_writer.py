"""The writer alone: one write per tick per connection, bounded, silent once closed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from xshathra.engine.writer import FLUSH_CHUNK, FlushScheduler, OutgoingFrame, Writer
from xshathra.protocol.json_codec import JSON_CODEC


class Owner:
    """The writer's owner, told when its peer reads too slowly."""

    def __init__(self, on_slow: Callable[[], object] = lambda: None) -> None:
        self.on_slow = on_slow

    def writer_slow(self) -> None:
        self.on_slow()


class Sink:
    codec = JSON_CODEC
    framing = "test"

    def __init__(self) -> None:
        self.writes: list[list[bytes]] = []
        self.buffered = 0
        self.written = asyncio.Event()

    def send_frame(self, frame: OutgoingFrame) -> int:
        self.writes.append([frame.payload])
        self.written.set()
        return self.buffered


def _writer(sink: Sink, max_buffered: int = 100) -> tuple[Writer, list[str]]:
    slow: list[str] = []
    scheduler = FlushScheduler(asyncio.get_running_loop())
    return Writer(sink, scheduler, max_buffered, Owner(lambda: slow.append("slow"))), slow


async def test_frames_of_one_tick_are_one_write_in_order() -> None:
    """Everything queued before the loop turns goes out as one message, in order (the
    protocol's newline-joined batch)."""
    sink = Sink()
    writer, _ = _writer(sink)
    for i in range(4):
        writer.enqueue(OutgoingFrame(b"%d" % i))
    assert sink.writes == []  # nothing is written synchronously
    await asyncio.wait_for(sink.written.wait(), 1)
    assert sink.writes == [[b"0\n1\n2\n3"]]


async def test_a_fan_out_batch_is_built_once_for_all_writers() -> None:
    """Writers given the same frames in one tick send the very same merged frame, so its
    joining and framing is done once, not once per subscriber."""
    loop = asyncio.get_running_loop()
    scheduler = FlushScheduler(loop)
    seen: list[OutgoingFrame] = []

    class Recording(Sink):
        def send_frame(self, frame: OutgoingFrame) -> int:
            seen.append(frame)
            return super().send_frame(frame)

    sinks = [Recording() for _ in range(3)]
    writers = [Writer(sink, scheduler, 1 << 20, Owner()) for sink in sinks]
    frames = [OutgoingFrame(b"a"), OutgoingFrame(b"b")]
    for writer in writers:
        for frame in frames:
            writer.enqueue(frame)
    await asyncio.wait_for(sinks[-1].written.wait(), 1)
    assert len(seen) == 3 and seen[0] is seen[1] is seen[2]
    assert seen[0].payload == b"a\nb"


async def test_one_scheduler_flushes_every_dirty_writer() -> None:
    """Several writers marked in one tick are all flushed by the one callback."""
    loop = asyncio.get_running_loop()
    scheduler = FlushScheduler(loop)
    sinks = [Sink() for _ in range(3)]
    writers = [Writer(s, scheduler, 100, Owner()) for s in sinks]
    frame = OutgoingFrame(b"same")
    for w in writers:
        w.enqueue(frame)
    await asyncio.wait_for(sinks[-1].written.wait(), 1)
    assert [s.writes for s in sinks] == [[[b"same"]]] * 3


async def test_over_the_buffer_limit_the_writer_reports_slow_once_and_stops() -> None:
    """A sink holding more than the limit after a write makes the writer call `on_slow` once and
    write nothing more."""
    sink = Sink()
    writer, slow = _writer(sink, max_buffered=10)
    sink.buffered = 11
    writer.enqueue(OutgoingFrame(b"a"))
    await asyncio.wait_for(sink.written.wait(), 1)
    assert slow == ["slow"] and writer.closed
    sink.written.clear()
    writer.enqueue(OutgoingFrame(b"b"))
    writer.flush()
    assert sink.writes == [[b"a"]] and slow == ["slow"]


async def test_closed_writer_drops_what_was_queued() -> None:
    """Closing a writer discards its queue; later frames are ignored."""
    scheduler = FlushScheduler(asyncio.get_running_loop())
    sink, witness = Sink(), Sink()
    writer = Writer(sink, scheduler, 100, Owner())
    other = Writer(witness, scheduler, 100, Owner())
    writer.enqueue(OutgoingFrame(b"lost"))
    writer.close()
    writer.enqueue(OutgoingFrame(b"ignored"))
    other.enqueue(OutgoingFrame(b"seen"))
    # The scheduler's one callback flushes both: once the witness is written, so was `writer`.
    await asyncio.wait_for(witness.written.wait(), 1)
    assert sink.writes == []


async def test_flush_writes_synchronously_and_once() -> None:
    """`flush` writes what is queued at once (as before a close frame); the flush scheduled for
    the tick then finds nothing left to write."""
    scheduler = FlushScheduler(asyncio.get_running_loop())
    sink, witness = Sink(), Sink()
    writer = Writer(sink, scheduler, 100, Owner())
    writer.enqueue(OutgoingFrame(b"x"))
    writer.flush()
    assert sink.writes == [[b"x"]]
    Writer(witness, scheduler, 100, Owner()).enqueue(OutgoingFrame(b"w"))
    await asyncio.wait_for(witness.written.wait(), 1)
    assert sink.writes == [[b"x"]]


async def test_a_frame_queued_during_a_large_flush_joins_the_connections_not_written_yet() -> None:
    """A flush writes FLUSH_CHUNK connections per loop iteration. A frame queued in between
    goes to the connections not written yet in one write with the first frame, and to those
    already written in a write of its own: every connection gets both, in order, and nobody
    waits for the whole fan-out before the second frame is taken in."""
    scheduler = FlushScheduler(asyncio.get_running_loop())
    sinks = [Sink() for _ in range(2 * FLUSH_CHUNK + 10)]
    writers = [Writer(sink, scheduler, 1 << 20, Owner()) for sink in sinks]
    first, second = OutgoingFrame(b"1"), OutgoingFrame(b"2")
    for writer in writers:
        writer.enqueue(first)
    # The flush was scheduled before this task's resumption: its first chunk runs, then this
    # task, then the next chunk (the loop's ready queue is first in, first out).
    await asyncio.sleep(0)
    assert sum(bool(sink.writes) for sink in sinks) == FLUSH_CHUNK
    last = sinks[FLUSH_CHUNK - 1]  # its second write is the flush's last: it was dirty again last
    last.written.clear()
    for writer in writers:
        writer.enqueue(second)
    await asyncio.wait_for(last.written.wait(), 1)
    assert all(sink.writes == [[b"1"], [b"2"]] for sink in sinks[:FLUSH_CHUNK])
    assert all(sink.writes == [[b"1\n2"]] for sink in sinks[FLUSH_CHUNK:])
    assert scheduler.dirty == []
