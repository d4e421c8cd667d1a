"""make demo stays working: it runs the whole story and cleans up after itself."""

from __future__ import annotations

import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parents[2]


def test_the_demo_tells_the_whole_story_and_exits_zero() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "budget_guard", "demo", "--budgets", str(ROOT / "examples/budgets")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "soft limit 70 %" in out
    assert "guard suggests gpt-4o-mini" in out
    assert "burst pool team-research/research-agent-launch takes over" in out
    assert "429 Budget exceeded: feature research-agent's daily budget" in out
    assert "It resets in" in out
    assert "team-research/research-agent-daily" in out and "Exhausted" in out
    assert "Everything started is stopped." in out
    strict = next(line for line in out.splitlines() if "(reservation: WorstCase)" in line)
    used, limit = (Decimal(x) for x in re.findall(r"\$([\d.]+)", strict))
    assert used <= limit  # settlement only lowered the worst-case reservations
