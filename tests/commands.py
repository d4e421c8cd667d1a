"""``budget-guard`` run in process from async tests: off the event loop (each command
runs its own), its output written to a file and read back."""

from __future__ import annotations

import asyncio
from pathlib import Path

from budget_guard.cli import main


def _run(argv: list[str], output: Path) -> tuple[int, str]:
    code = main([*argv, "--output", str(output)])
    return code, output.read_text() if output.exists() else ""


async def cli(*argv: str, output: Path) -> tuple[int, str]:
    """The command's exit code and what it wrote (empty when it wrote nothing)."""
    return await asyncio.to_thread(_run, list(argv), output)
