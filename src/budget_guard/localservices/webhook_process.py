"""The project's own webhook as a separate process, for the demo and end-to-end tests.

It is started with ``python -m budget_guard webhook`` and ports 0; the bound ports
are read from its JSON start-up log line, so there is no race for a free port.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from budget_guard.localservices.processes import ManagedProcess, ServiceStartError

_READY_MESSAGE = "webhook listening"


class WebhookProcess:
    def __init__(
        self,
        args: Sequence[str],
        env: Mapping[str, str] | None = None,
        workdir: Path | None = None,
        start_timeout_seconds: float = 30.0,
    ) -> None:
        self.args = list(args)
        self.env = {**os.environ, **(env or {})}
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="budget-guard-webhook-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / "webhook.log"
        self._timeout = start_timeout_seconds
        self._process: ManagedProcess | None = None
        self.check_port = 0
        self.api_port = 0

    @property
    def check_url(self) -> str:
        return f"http://127.0.0.1:{self.check_port}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def log_lines(self) -> list[str]:
        try:
            return self.log_path.read_text().splitlines()
        except OSError:
            return []

    def start(self) -> WebhookProcess:
        argv = [
            sys.executable,
            "-m",
            "budget_guard",
            "webhook",
            "--check-port",
            "0",
            "--api-port",
            "0",
            "--host",
            "127.0.0.1",
            *self.args,
        ]
        self._process = ManagedProcess("budget-guard webhook", argv, self.log_path, self.env)
        deadline = time.monotonic() + self._timeout
        while time.monotonic() < deadline:
            for line in self.log_lines():
                if _READY_MESSAGE in line:
                    entry = json.loads(line)
                    self.check_port, self.api_port = entry["check_port"], entry["api_port"]
                    return self
            if not self._process.running():
                break
            time.sleep(0.05)
        tail = "\n".join(self.log_lines()[-20:])
        self.stop()
        raise ServiceStartError(f"the webhook did not start; its log:\n{tail}")

    def stop(self) -> int | None:
        """SIGTERM, wait; returns the exit code."""
        if self._process is None:
            return None
        self._process.stop()
        code = self._process.returncode
        self._process = None
        return code

    def __enter__(self) -> WebhookProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
