"""Retry schedule and signatures of webhook deliveries."""

from __future__ import annotations

import random

from xshathra.outbound.signing import sign, signed_headers, verify
from xshathra.webhooks.backoff import CAP_SECONDS, MAX_ATTEMPTS, minimum_total_seconds, next_delay


def test_retries_span_more_than_an_hour_whatever_the_jitter() -> None:
    assert minimum_total_seconds() > 3600


def test_delays_grow_and_are_capped() -> None:
    rng = random.Random(7)
    delays = [next_delay(a, rng) for a in range(1, MAX_ATTEMPTS)]
    assert delays[0] < 2.0 < delays[5]
    assert all(d <= CAP_SECONDS for d in delays)
    assert all(
        next_delay(a, random.Random(a)) >= min(CAP_SECONDS, 2.0 * 2 ** (a - 1)) / 2
        for a in range(1, MAX_ATTEMPTS)
    )


def test_signature_covers_timestamp_and_body() -> None:
    headers = signed_headers("secret", 1700000000, b'{"a":1}')
    assert headers["X-Xshathra-Timestamp"] == "1700000000"
    assert headers["X-Xshathra-Signature"] == sign("secret", 1700000000, b'{"a":1}')
    assert verify("secret", "1700000000", b'{"a":1}', headers["X-Xshathra-Signature"])
    assert not verify("secret", "1700000001", b'{"a":1}', headers["X-Xshathra-Signature"])
    assert not verify("secret", "1700000000", b'{"a":2}', headers["X-Xshathra-Signature"])
