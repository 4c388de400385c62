"""Connection deadlines: one heap for all, stale entries ignored, the heap kept bounded."""

from __future__ import annotations

from xshathra.engine.deadlines import Deadlines


class Owner:
    def __init__(self, at: float | None) -> None:
        self.expiry_deadline = at
        self.reached = 0

    def deadline_reached(self) -> None:
        self.reached += 1


def test_due_owners_come_in_time_order_and_stale_entries_are_skipped() -> None:
    deadlines = Deadlines()
    late, early, moved, closed = Owner(30.0), Owner(10.0), Owner(20.0), Owner(15.0)
    for owner in (late, early, moved, closed):
        assert owner.expiry_deadline is not None
        deadlines.add(owner, owner.expiry_deadline)
    moved.expiry_deadline = 40.0  # refreshed: its new deadline was added, the old is stale
    deadlines.add(moved, 40.0)
    closed.expiry_deadline = None  # the connection went away
    assert deadlines.due(5.0) == []
    assert deadlines.due(25.0) == [early]
    assert deadlines.due(100.0) == [late, moved]
    assert len(deadlines) == 0


def test_stale_entries_are_compacted_away() -> None:
    """Connections that come and go never grow the heap without bound."""
    deadlines = Deadlines()
    keeper = Owner(1e12)
    deadlines.add(keeper, 1e12)
    for i in range(20_000):
        gone = Owner(1e9 + i)
        deadlines.add(gone, 1e9 + i)
        gone.expiry_deadline = None
    assert len(deadlines) <= 8192
    assert deadlines.due(2e12) == [keeper]
