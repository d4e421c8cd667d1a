"""A Sentinel-managed Redis: a primary, one replica and three ``redis-sentinel``
processes (Debian's package), each on its own loopback port and in its own directory.

The sentinels are tuned to fail over fast (``DOWN_AFTER_MS``, ``FAILOVER_TIMEOUT_MS``)
so that a test can kill the primary and see the replica promoted in a few seconds.
Clients log in as an ACL user (``username`` / ``password``, in ``url``); the default
user stays open for the sentinels and for replication, as nothing but loopback sees it.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
import time
from pathlib import Path

import redis

from budget_guard.localservices.processes import (
    LocalService,
    ManagedProcess,
    free_port,
    wait_until,
    wait_until_all,
)
from budget_guard.localservices.redis_server import RedisServer, answers_ping, find_redis_binary

DOWN_AFTER_MS = 1000  # a primary silent this long is subjectively down
FAILOVER_TIMEOUT_MS = 3000  # also how long the sentinels wait to retry a failed election
QUORUM = 2


class RedisSentinelSet(LocalService):
    """Start with ``with RedisSentinelSet() as sentinel:``; ``sentinel.url`` is ready."""

    def __init__(
        self,
        workdir: Path | None = None,
        start_timeout_seconds: float = 30.0,
        service_name: str = "budget-guard",
    ) -> None:
        self._owns_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="budget-guard-sentinel-"))
        self.service_name = service_name
        self.username = "guard"
        self.password = secrets.token_urlsafe(16)
        self._timeout = start_timeout_seconds
        self.data_nodes: dict[int, RedisServer] = {}  # by port
        self.sentinel_ports: list[int] = []
        self._sentinels: list[ManagedProcess] = []

    @property
    def url(self) -> str:
        """``redis+sentinel://user:password@host:port,.../service_name/db``."""
        sentinels = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        credentials = f"{self.username}:{self.password}"
        return f"redis+sentinel://{credentials}@{sentinels}/{self.service_name}/0"

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> RedisSentinelSet:
        primary = self._start_data_node(self.workdir / "redis-1", replica_of=None)
        self._start_data_node(self.workdir / "redis-2", replica_of=primary)
        for number in (1, 2, 3):
            self._start_sentinel(f"sentinel-{number}", primary)
        self._wait_until_settled(primary, "settled (sentinels, primary and replica)")
        return self

    def _start_data_node(
        self, directory: Path, replica_of: int | None, port: int | None = None
    ) -> int:
        acl_user = ["--user", self.username, "on", f">{self.password}", "~*", "&*", "+@all"]
        tuning = ["--repl-diskless-sync-delay", "0"]
        replication = ["--replicaof", "127.0.0.1", str(replica_of)] if replica_of else []
        node = RedisServer(workdir=directory, extra_args=[*acl_user, *tuning, *replication])
        self.data_nodes[node.start(port).port] = node
        return node.port

    def _start_sentinel(self, name: str, primary_port: int) -> None:
        directory = self.workdir / name
        directory.mkdir(parents=True, exist_ok=True)
        port = free_port()
        config = directory / "sentinel.conf"  # the sentinel rewrites it: its own copy
        config.write_text(
            "\n".join(
                [
                    f"port {port}",
                    "bind 127.0.0.1",
                    f"dir {directory}",
                    'logfile ""',
                    "daemonize no",
                    f"sentinel monitor {self.service_name} 127.0.0.1 {primary_port} {QUORUM}",
                    f"sentinel down-after-milliseconds {self.service_name} {DOWN_AFTER_MS}",
                    f"sentinel failover-timeout {self.service_name} {FAILOVER_TIMEOUT_MS}",
                    f"sentinel parallel-syncs {self.service_name} 1",
                    "",
                ]
            )
        )
        binary = find_redis_binary("redis-sentinel", "BUDGET_GUARD_REDIS_SENTINEL")
        process = ManagedProcess(name, [binary, str(config)], directory / "log")
        self._sentinels.append(process)
        self.sentinel_ports.append(port)
        wait_until(lambda: answers_ping(port), process, self._timeout, "ready")

    def stop(self) -> None:
        for process in reversed(self._sentinels):
            process.stop()
        self._sentinels.clear()
        for node in self.data_nodes.values():
            node.stop()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- what the sentinels say ------------------------------------------------

    def primaries_named(self) -> list[int | None]:
        """The primary's port as each sentinel names it (None: it cannot be asked)."""
        return [self._primary_named_by(port) for port in self.sentinel_ports]

    def _primary_named_by(self, sentinel_port: int) -> int | None:
        try:
            with redis.Redis(port=sentinel_port, socket_timeout=1) as sentinel:
                address = sentinel.sentinel_get_master_addr_by_name(self.service_name)
        except redis.RedisError:
            return None
        return int(address[1]) if address else None

    @property
    def primary_port(self) -> int:
        """The primary the sentinels agree on (raises when they do not)."""
        named = set(self.primaries_named())
        if len(named) != 1 or None in named:
            raise RuntimeError(f"the sentinels do not agree on a primary: {named}")
        port = named.pop()
        assert port is not None
        return port

    def role(self, port: int) -> str:
        with redis.Redis(port=port, socket_timeout=1) as node:
            return str(node.info("replication")["role"])

    # -- failures --------------------------------------------------------------

    def kill_primary(self) -> int:
        """SIGKILL the primary, as when its node dies; returns its port."""
        port = self.primary_port
        self.data_nodes[port].kill()
        return port

    def wait_for_failover(self, old_primary: int, timeout_seconds: float = 30.0) -> float:
        """Wait until every sentinel names a new primary that says it is one; returns
        the seconds since this was called."""
        started = time.monotonic()
        self._wait_until_settled(
            None, f"failed over from {old_primary}", timeout_seconds, replicas=0, gone=old_primary
        )
        return time.monotonic() - started

    def restore(self) -> None:
        """Start every killed node again, as a replica of the current primary, and wait
        until the sentinels see it as one: the set is back to primary + replica."""
        primary = self.primary_port
        for port, node in list(self.data_nodes.items()):
            if not node.running:
                self._start_data_node(node.workdir, replica_of=primary, port=port)
        self._wait_until_settled(primary, "restored (primary and replica)")

    # -- waiting -----------------------------------------------------------------

    def _wait_until_settled(
        self,
        primary: int | None,
        what: str,
        timeout_seconds: float | None = None,
        *,
        replicas: int = 1,
        gone: int | None = None,
    ) -> None:
        processes = [*self._sentinels, *(n.process for n in self.data_nodes.values() if n.running)]

        def settled() -> bool:
            try:
                return agreed()
            except redis.RedisError:  # a node down, or not yet up
                return False

        def agreed() -> bool:
            named = set(self.primaries_named())
            if len(named) != 1 or None in named or named == {gone}:
                return False
            port = named.pop()
            assert port is not None
            if primary is not None and port != primary:
                return False
            return (
                self.role(port) == "master"
                and self._replicas_in_sync(port)
                and all(self._sentinel_sees(sentinel, replicas) for sentinel in self.sentinel_ports)
            )

        wait_until_all(settled, processes, timeout_seconds or self._timeout, what)

    def _replicas_in_sync(self, primary: int) -> bool:
        """Every other running data node says it is a replica of ``primary``, linked."""
        for port, node in self.data_nodes.items():
            if port == primary or not node.running:
                continue
            with redis.Redis(port=port, socket_timeout=1) as replica:
                replication = replica.info("replication")
            if (replication["role"], replication.get("master_port")) != ("slave", primary):
                return False
            if replication["master_link_status"] != "up":
                return False
        return True

    def _sentinel_sees(self, sentinel_port: int, replicas: int) -> bool:
        """The sentinel knows the other sentinels and at least ``replicas`` live replicas."""
        with redis.Redis(port=sentinel_port, socket_timeout=1) as sentinel:
            state = sentinel.sentinel_master(self.service_name)
            live = [
                replica
                for replica in sentinel.sentinel_slaves(self.service_name)
                if not (replica["is_sdown"] or replica["is_odown"])
                and replica["master-link-status"] == "ok"
            ]
        return bool(
            state["num-other-sentinels"] == len(self.sentinel_ports) - 1 and len(live) >= replicas
        )
