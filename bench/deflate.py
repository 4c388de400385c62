"""CPU cost of the per-message work that the channel features and permessage-deflate add, on
the server's own code paths: `python -m bench.deflate` (a few seconds, one core).

- permessage-deflate: `deflate_message` per message, by payload size and zlib level, with the
  compression ratio. A fanned-out publication is compressed once per (codec, framing) group,
  not per subscriber, so at fan-out N its cost per delivery is this divided by N; replies and
  pushes to one connection pay it whole (when at least XSHATHRA_WEBSOCKET_COMPRESSION_MIN_SIZE).
- fossil delta: `fossil.encode` between successive versions of a JSON document, once per
  channel and publication for all its delta subscribers.

The fan-out benchmark's load client (C) does not speak permessage-deflate, so compression is
measured here rather than as a fan-out stack.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from xshathra.protocol import fossil
from xshathra.transports.frames import deflate_message


def _per_call(fn: Callable[[], object], budget: float = 0.3) -> float:
    """Microseconds per call, over about `budget` seconds."""
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < budget:
        for _ in range(50):
            fn()
        calls += 50
    return elapsed / calls * 1e6


def _publication(size: int) -> bytes:
    """A Centrifuge publication push of about `size` bytes, as the hub encodes it."""
    rows, body = [], b""
    while len(body) < size:
        rows.append({"id": len(rows), "name": f"item-{len(rows)}", "price": len(rows) * 1.25})
        body = json.dumps(
            {"push": {"channel": "bench:fanout", "pub": {"data": {"rows": rows}, "offset": 7}}}
        ).encode()
    return body


def _document(version: int) -> bytes:
    return json.dumps(
        {
            "title": "order book",
            "rows": [{"price": 100 + i, "size": (i * version) % 13} for i in range(40)],
            "version": version,
        }
    ).encode()


def main() -> None:
    print("## permessage-deflate: one message\n")
    print("| payload bytes | level | compressed bytes | µs per message |")
    print("| ---: | ---: | ---: | ---: |")
    for size in (100, 1000, 10_000):
        payload = _publication(size)
        for level in (1, 6):
            compressed = deflate_message(payload, level, 15)
            cost = _per_call(lambda p=payload, lv=level: deflate_message(p, lv, 15))
            print(f"| {len(payload)} | {level} | {len(compressed)} | {cost:.1f} |")
    print("\n## fossil delta: one publication (computed once per channel)\n")
    print("| document bytes | delta bytes | µs per delta |")
    print("| ---: | ---: | ---: |")
    before, after = _document(1), _document(2)
    delta = fossil.encode(before, after)
    cost = _per_call(lambda: fossil.encode(before, after))
    print(f"| {len(after)} | {len(delta)} | {cost:.1f} |")


if __name__ == "__main__":
    main()
