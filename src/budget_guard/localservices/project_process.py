"""One of the project's own commands (``python -m budget_guard ...``, or an installed
``budget-guard`` script) as a child process, ready once a line of its JSON log says so."""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Self

from budget_guard.localservices.processes import LocalService, ManagedProcess, ServiceStartError


class ProjectProcess(LocalService):
    command = ""  # the budget-guard subcommand
    ready_message = ""  # a log line containing this means the process is ready

    def __init__(
        self,
        args: Sequence[str],
        env: Mapping[str, str] | None = None,
        workdir: Path | None = None,
        start_timeout_seconds: float = 30.0,
        launcher: Sequence[str] = (sys.executable, "-m", "budget_guard"),
    ) -> None:
        self.args = list(args)
        self.launcher = list(launcher)  # what runs the command: this checkout, or an install
        self.env = {**os.environ, **(env or {})}
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix=f"budget-guard-{self.command}-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / f"{self.command}.log"
        self._timeout = start_timeout_seconds
        self._process: ManagedProcess | None = None

    def log_lines(self) -> list[str]:
        try:
            return self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []

    def logged(self, text: str) -> bool:
        return any(text in line for line in self.log_lines())

    def argv(self) -> list[str]:
        return [*self.launcher, self.command, *self.command_args()]

    def command_args(self) -> list[str]:
        return self.args

    def on_ready(self, line: str) -> None:
        """Read what the ready line tells (ports, ...)."""

    def start(self) -> Self:
        self.log_path.write_text("")
        name = f"budget-guard {self.command}"
        self._process = ManagedProcess(name, self.argv(), self.log_path, self.env)
        deadline = time.monotonic() + self._timeout
        while time.monotonic() < deadline:
            for line in self.log_lines():
                if self.ready_message in line:
                    self.on_ready(line)
                    return self
            if not self._process.running():
                break
            time.sleep(0.05)
        tail = "\n".join(self.log_lines()[-30:])
        self.stop()
        raise ServiceStartError(f"the {self.command} did not start; its log:\n{tail}")

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError(f"the {self.command} is not running")
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.running()

    def stop(self, grace_seconds: float = 20.0) -> int | None:
        """SIGTERM, wait; returns the exit code."""
        if self._process is None:
            return None
        self._process.stop(grace_seconds=grace_seconds)
        code = self._process.returncode
        self._process = None
        return code

    def kill(self) -> None:
        """SIGKILL: no clean-up, as when a node dies."""
        if self._process is None:
            return
        os.kill(self._process.pid, signal.SIGKILL)
        self._process.stop()
        self._process = None
