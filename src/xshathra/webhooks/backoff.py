"""Retry schedule for webhook deliveries: exponential with full jitter, capped, for at least an
hour before a delivery is given up."""

from __future__ import annotations

import random

BASE_SECONDS = 2.0
CAP_SECONDS = 600.0
# Even with the shortest jitter draws, 20 retries span more than an hour (see the test).
MAX_ATTEMPTS = 21


def next_delay(attempt: int, rng: random.Random | None = None, base: float = BASE_SECONDS) -> float:
    """Delay before retry number `attempt` (1 = first retry): jitter on an exponential."""
    ceiling: float = min(CAP_SECONDS, base * 2.0 ** (attempt - 1))
    r: float = (rng or random).random()
    # Never below half the ceiling, so the schedule still spans the hour whatever the draws.
    return ceiling / 2 + r * ceiling / 2


def minimum_total_seconds() -> float:
    """The shortest time between the first attempt and giving up, whatever the jitter."""
    return float(
        sum(min(CAP_SECONDS, BASE_SECONDS * 2.0 ** (a - 1)) / 2 for a in range(1, MAX_ATTEMPTS))
    )
