"""py-spy attached to a benchmark's server process: the top of its profile, as the
table rows docs/benchmarks.md shows (inclusive share, own share, function)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def profiled(pid: int, profiles: dict[str, list[str]], phase: str, on: bool) -> Iterator[None]:
    """py-spy samples process ``pid`` for the block; its top lines go to ``profiles``."""
    if not on:
        yield
        return
    out = Path(tempfile.mkdtemp(prefix="bench-pyspy-")) / f"{phase}.txt"
    spy = Path(sys.executable).with_name("py-spy")
    argv = [str(spy), "record", "--pid", str(pid), "--rate", "50", "--format", "raw"]
    process = subprocess.Popen(
        [*argv, "--nonblocking", "--output", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        process.send_signal(2)  # SIGINT: py-spy writes what it has and exits
        process.wait(timeout=60)
    profiles[phase] = top_of_profile(out.read_text() if out.exists() else "")


def top_of_profile(raw: str, lines: int = 12) -> list[str]:
    """The functions with the most samples on the stack (inclusive), from py-spy's raw
    (collapsed) output, as table rows: inclusive %, self %, function."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_short(frame) for frame in stack.split(";")]
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return []
    ranked = [(f, n) for f, n in inclusive.most_common() if not _plumbing(f)]
    return [
        f"| {100 * n / total:.0f} % | {100 * own[f] / total:.0f} % | `{f}` |"
        for f, n in ranked[:lines]
    ]


_PLUMBING = frozenset(
    (
        *("runners", "base_events", "events", "__main__", "<frozen runpy>", "main", "cli"),
        *("threading", "thread", "selectors", "tasks", "futures"),
    )
)


def _plumbing(function: str) -> bool:
    """The event loop, the interpreter's start, the thread bootstrap: on every stack."""
    return function.split(".", 1)[0] in _PLUMBING


def _short(frame: str) -> str:
    """``function (path/to/module.py:line)`` into ``module.function``."""
    name, _, where = frame.partition(" (")
    module = where.split(":", 1)[0].rsplit("/", 1)[-1].removesuffix(".py")
    return f"{module}.{name}"
