"""``python -m bench.peak FILE budget-guard-args...``: run ``budget-guard`` in this process
and write its peak resident memory (VmHWM, KiB) to FILE at the end.

The benchmark's own ``ru_maxrss`` of a child would not do: Linux carries the parent's
high-water mark across fork and exec into it. VmHWM belongs to the process image, so
it starts afresh at exec.
"""

from __future__ import annotations

import sys
from pathlib import Path

from budget_guard.cli import main


def peak_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


if __name__ == "__main__":
    record, argv = Path(sys.argv[1]), sys.argv[2:]
    try:
        code = main(argv)
    except SystemExit as exit_:  # --version and argparse end this way
        code = exit_.code if isinstance(exit_.code, int) else 0
    record.write_text(str(peak_kib()))
    sys.exit(code)
