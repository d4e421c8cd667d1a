"""A throwaway redis-server: loopback only, its own port and directory, no persistence
(unless asked to be durable)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import Sequence
from pathlib import Path

from budget_guard.localservices.processes import (
    LocalService,
    ManagedProcess,
    ServiceStartError,
    free_port,
    wait_until,
)


def find_redis_binary(name: str, variable: str) -> str:
    """The path of ``name`` (of the Debian package of the same name): ``$variable`` when
    set, else found on PATH."""
    found = os.environ.get(variable) or shutil.which(name) or shutil.which(f"/usr/bin/{name}")
    if not found:
        raise ServiceStartError(
            f"{name} is not on PATH. On Debian or Ubuntu: 'apt-get install -y {name}' "
            f"(make test does this when run as root); or set {variable} to its path."
        )
    return found


def answers_ping(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
        conn.sendall(b"PING\r\n")
        return conn.recv(16).startswith(b"+PONG")


class RedisServer(LocalService):
    """Start with ``with RedisServer() as redis:``; ``redis.url`` is ready to use."""

    def __init__(
        self,
        workdir: Path | None = None,
        start_timeout_seconds: float = 20.0,
        *,
        durable: bool = False,
        extra_args: Sequence[str] = (),
    ) -> None:
        """``durable``: every write is in an fsynced append-only file before Redis
        answers, so a restart (even after SIGKILL) keeps the data. ``extra_args``:
        more configuration, as ``redis-server`` takes it on its command line."""
        self._durable = durable
        self._extra_args = list(extra_args)
        self._owns_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="budget-guard-redis-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._start_timeout = start_timeout_seconds
        self._process: ManagedProcess | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def process(self) -> ManagedProcess:
        if self._process is None:
            raise RuntimeError("redis-server is not started")
        return self._process

    def start(self, port: int | None = None) -> RedisServer:
        """Start (again, on ``port`` to keep the same URL after ``stop_process``)."""
        binary = find_redis_binary("redis-server", "BUDGET_GUARD_REDIS_SERVER")
        self.port = port or free_port()
        argv = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.workdir),
            "--save",
            "",
            "--appendonly",
            "yes" if self._durable else "no",
            "--appendfsync",
            "always",
            "--daemonize",
            "no",
            "--logfile",
            "",
            *self._extra_args,
        ]
        self._process = ManagedProcess("redis-server", argv, self.workdir / "redis.log")
        wait_until(lambda: answers_ping(self.port), self._process, self._start_timeout, "ready")
        return self

    def stop_process(self) -> None:
        """Stop the server but keep its directory, to ``start(port)`` it again."""
        if self._process is not None:
            self._process.stop()
            self._process = None

    def kill(self) -> None:
        """SIGKILL, as when a node dies; its directory stays, to ``start(port)`` it again."""
        if self._process is not None:
            os.kill(self._process.pid, signal.SIGKILL)
            self._process.stop()
            self._process = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.running()

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open and nothing answers."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._process.pid, signal.SIGCONT)  # a paused server cannot exit
            self._process.stop()
            self._process = None
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
