"""Child processes that are always stopped: by their own pid, and with the parent."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

_PR_SET_PDEATHSIG = 1


class ServiceStartError(RuntimeError):
    """A local service did not start; the message names it and points at its log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: if the process that started us dies
    # (even by SIGKILL), the kernel sends us SIGTERM, so no service outlives a test run.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    os.setpgrp()


class LocalService(ABC):
    """A service started for a test, the demo or ``make cluster``: ``with`` starts it
    and always stops it, also when starting fails half way."""

    @abstractmethod
    def start(self) -> Any: ...

    @abstractmethod
    def stop(self) -> Any: ...

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class ManagedProcess:
    """One started service process, its log file, and how to stop it."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.log_path = log_path
        with log_path.open("ab") as log:
            self._popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                preexec_fn=_die_with_parent,
            )
        self.pid = self._popen.pid

    def running(self) -> bool:
        return self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._popen.returncode

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace_seconds: float = 10.0) -> None:
        """SIGTERM by pid, then SIGKILL if it lingers; safe to call twice."""
        if self._popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        try:
            self._popen.wait(timeout=grace_seconds)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self._popen.wait(timeout=grace_seconds)


def wait_until(
    ready: Callable[[], bool],
    process: ManagedProcess,
    timeout_seconds: float,
    what: str,
) -> None:
    """Poll ``ready`` until it holds; fail fast, with the log, if the process exits."""
    wait_until_all(ready, [process], timeout_seconds, what)


def wait_until_all(
    ready: Callable[[], bool],
    processes: Sequence[ManagedProcess],
    timeout_seconds: float,
    what: str,
) -> None:
    """``wait_until`` for a set of processes that must all stay up (a replicated set)."""
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        for process in processes:
            if not process.running():
                raise ServiceStartError(
                    f"{process.name} exited before {what}; log {process.log_path}:\n"
                    f"{process.log_tail()}"
                )
        with contextlib.suppress(OSError):
            if ready():
                return
        time.sleep(0.05)
    logs = "\n".join(
        f"-- {process.name}, log {process.log_path}:\n{process.log_tail(10)}"
        for process in processes
    )
    names = ", ".join(process.name for process in processes)
    raise ServiceStartError(f"{names} not {what} after {timeout_seconds:.0f}s\n{logs}")
