"""docs/install.md's local quick start, followed as written: `make cluster` (its Python
entry point) on a fresh Redis and API server, its export lines pasted into a shell, then
every line of the quick start, from an empty cluster to a budget enforced and visible."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from budget_guard.localservices.processes import ManagedProcess, free_port

pytestmark = [pytest.mark.kube, pytest.mark.redis]

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "docs" / "install.md"


def quickstart() -> list[str]:
    """The shell lines between the quick-start markers, continuation lines joined."""
    text = INSTALL.read_text()
    section = text.split("<!-- quickstart: start -->", 1)[1].split("<!-- quickstart: end -->")[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "the quick start has no sh block"
    joined = block.group(1).replace("\\\n", " ")
    return [line for line in joined.splitlines() if line.strip() and not line.startswith("#")]


def make_cluster(workdir: Path) -> tuple[ManagedProcess, list[str]]:
    """What `make cluster` runs, started in the background; returns its export lines."""
    process = ManagedProcess(
        "make cluster",
        [sys.executable, "-m", "budget_guard.localservices"],
        workdir / "make-cluster.log",
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        output = process.log_path.read_text()
        if "Press Ctrl-C" in output:
            return process, [line for line in output.splitlines() if line.startswith("export ")]
        assert process.running(), output
        time.sleep(0.2)
    process.stop()
    raise AssertionError("make cluster did not start in time")


def test_make_cluster_prints_what_budget_guard_reads(tmp_path: Path) -> None:
    process, exports = make_cluster(tmp_path)
    try:
        names = [line.split("=", 1)[0].removeprefix("export ") for line in exports]
        assert names == ["KUBECONFIG", "BUDGET_GUARD_REDIS_URL", "REDIS_URL", "PATH"]
        script = "\n".join(["set -euo pipefail", *exports, *_follow_the_quickstart(tmp_path)])
        result = subprocess.run(
            ["bash", "-c", script],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
    finally:
        process.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    assert process.returncode == 0
    assert "stopping..." in process.log_path.read_text()
    out = result.stdout
    assert "HTTP/1.1 200 OK" in out
    assert "x-budget-request-id:" in out.lower()
    assert re.search(r"tenant-acme\s+acme-monthly\s+tenant=acme\s+40\.00\s+Monthly", out), out
    assert '"configVersion"' in out and '"name": "acme-monthly"' in out


def _follow_the_quickstart(workdir: Path) -> list[str]:
    """The quick start's lines, run from a directory holding the repository's crds/ and
    examples/ (so that logs land in the test's directory), on free ports instead of the
    defaults, and with the background commands stopped on the way out."""
    for name in ("crds", "examples"):
        (workdir / name).symlink_to(ROOT / name)
    check, api = free_port(), free_port()
    lines = [
        "trap 'kill $(jobs -p) 2>/dev/null; wait' EXIT",
        f"export BUDGET_GUARD_CHECK_PORT={check} BUDGET_GUARD_API_PORT={api}",
    ]
    for line in quickstart():
        line = line.replace("127.0.0.1:8080", f"127.0.0.1:{check}")
        lines.append(line.replace("127.0.0.1:8081", f"127.0.0.1:{api}"))
    return lines
