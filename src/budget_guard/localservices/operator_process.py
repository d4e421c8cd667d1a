"""The project's own operator as a separate process, for end-to-end tests.

Started with ``python -m budget_guard operator``; ready once its start-up handler
has logged. Stopping sends SIGTERM (Kopf finishes its cleanup and leaves the
peering); ``kill`` sends SIGKILL, as a crashed node would.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from budget_guard.localservices.processes import ManagedProcess, ServiceStartError

READY_MESSAGE = "operator started"


class OperatorProcess:
    def __init__(
        self,
        args: Sequence[str],
        env: Mapping[str, str] | None = None,
        workdir: Path | None = None,
        start_timeout_seconds: float = 60.0,
    ) -> None:
        self.args = list(args)
        self.env = {**os.environ, **(env or {})}
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="budget-guard-operator-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / "operator.log"
        self._timeout = start_timeout_seconds
        self._process: ManagedProcess | None = None

    def log_lines(self) -> list[str]:
        try:
            return self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []

    def logged(self, text: str) -> bool:
        return any(text in line for line in self.log_lines())

    def start(self) -> OperatorProcess:
        self.log_path.write_text("")
        argv = [sys.executable, "-m", "budget_guard", "operator", *self.args]
        self._process = ManagedProcess("budget-guard operator", argv, self.log_path, self.env)
        deadline = time.monotonic() + self._timeout
        while time.monotonic() < deadline:
            if self.logged(READY_MESSAGE):
                return self
            if not self._process.running():
                break
            time.sleep(0.05)
        tail = "\n".join(self.log_lines()[-30:])
        self.stop()
        raise ServiceStartError(f"the operator did not start; its log:\n{tail}")

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("the operator is not running")
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.running()

    def stop(self) -> int | None:
        """SIGTERM, wait; returns the exit code."""
        if self._process is None:
            return None
        self._process.stop(grace_seconds=20.0)
        code = self._process.returncode
        self._process = None
        return code

    def kill(self) -> None:
        """SIGKILL: no cleanup, no goodbye to the peers."""
        if self._process is None:
            return
        os.kill(self._process.pid, signal.SIGKILL)
        self._process.stop()
        self._process = None

    def __enter__(self) -> OperatorProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
