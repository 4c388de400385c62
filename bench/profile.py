"""Where the server's time goes: py-spy attached to the Xshathra server during a measured
step, summed up as the share of samples per source line (self time) and per function
(inclusive). The report shows the top of each, so a missed target says where the time went
without anyone re-running a profiler by hand.

py-spy comes with the `bench` extra. It samples the interpreter from outside (ptrace): the
server runs unmodified. Time inside a C call (a `transport.write` syscall, uvloop's own loop)
is charged to the Python line that made the call.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

RATE_HZ = 250  # samples per second: enough for a 1% line over a few seconds, light on the core


@dataclass
class Profile:
    samples: int
    self_time: list[tuple[str, float]]  # (frame, share of samples), largest first
    inclusive: list[tuple[str, float]]

    def markdown(self, top: int = 12) -> str:
        if not self.samples:
            return "No samples (py-spy could not attach).\n"
        rows = ["| self % | where |", "| --- | --- |"]
        rows += [f"| {share:.1f} | `{frame}` |" for frame, share in self.self_time[:top]]
        rows += ["", "| inclusive % | function |", "| --- | --- |"]
        rows += [f"| {share:.1f} | `{frame}` |" for frame, share in self.inclusive[:top]]
        return f"{self.samples:,} samples.\n\n" + "\n".join(rows) + "\n"


def pyspy() -> str | None:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return found if Path(found).exists() else None


async def record(pid: int, seconds: float, out: Path) -> Profile:
    """Sample `pid` for `seconds` into `out` (py-spy's collapsed-stack text) and sum it up."""
    exe = pyspy()
    if exe is None:
        return Profile(0, [], [])
    proc = await asyncio.create_subprocess_exec(
        exe,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, round(seconds))),
        "--rate",
        str(RATE_HZ),
        "--format",
        "raw",
        "--nonblocking",  # never pause the server being measured
        "--output",
        str(out),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await proc.wait()
    return summarize(out.read_text() if out.exists() else "")


def summarize(collapsed: str) -> Profile:
    own: Counter[str] = Counter()
    within: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        own[_short(frames[-1])] += n
        for function in {_function(f) for f in frames}:
            within[function] += n
    if not total:
        return Profile(0, [], [])

    def shares(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(frame, 100 * n / total) for frame, n in counter.most_common()]

    inclusive = shares(within)
    # The chain every busy sample passes through (the CLI, uvicorn's and asyncio's entry
    # points) says nothing about where the time goes: leave it out.
    root = inclusive[0][1]
    inclusive = [(f, share) for f, share in inclusive if share < root - 0.05]
    return Profile(total, shares(own), inclusive)


def _short(frame: str) -> str:
    """`send_frame (/long/path/site-packages/xshathra/transports/websocket.py:271)` ->
    `send_frame (xshathra/transports/websocket.py:271)`."""
    name, _, where = frame.partition(" (")
    for marker in ("site-packages/", "/src/", "/lib/python3"):
        if marker in where:
            where = where.split(marker, 1)[1]
            break
    return f"{name} ({where}" if where else name


def _function(frame: str) -> str:
    """The frame without its line number, so a function's lines add up."""
    short = _short(frame)
    return short.rsplit(":", 1)[0] + ")" if short.endswith(")") and ":" in short else short
