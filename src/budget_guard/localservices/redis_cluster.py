"""A real Redis Cluster on loopback: three primaries with one replica each, made by
``redis-cli --cluster create`` from ``redis-server`` processes that each have their
own port and directory.

``NODE_TIMEOUT_MS`` is low so that a killed primary's replica takes over in a few
seconds. ``migrate_slot`` moves one slot the way ``redis-cli --cluster reshard``
does (``CLUSTER SETSLOT`` importing / migrating, ``MIGRATE`` in batches, then
``SETSLOT NODE``), a few keys at a time, so that a test can run traffic across it.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from budget_guard.localservices.processes import (
    LocalService,
    ServiceStartError,
    free_port,
    wait_until_all,
)
from budget_guard.localservices.redis_server import RedisServer

NODE_TIMEOUT_MS = 1000  # a primary unreachable this long is suspected; then its replica fails over
SLOTS = 16384


def find_redis_cli() -> str:
    found = shutil.which("redis-cli") or shutil.which("/usr/bin/redis-cli")
    if not found:
        raise ServiceStartError(
            "redis-cli is not on PATH; it comes with redis-server "
            "('apt-get install -y redis-server', which make test does when run as root)."
        )
    return found


@dataclass(frozen=True)
class ClusterNodeView:
    """One line of CLUSTER NODES, as one node sees another."""

    port: int
    node_id: str
    flags: frozenset[str]
    primary_id: str | None
    slots: tuple[tuple[int, int], ...]

    @property
    def is_primary(self) -> bool:
        return "master" in self.flags

    @property
    def failed(self) -> bool:
        return bool({"fail", "fail?"} & self.flags)

    def owns(self, slot: int) -> bool:
        return any(start <= slot <= end for start, end in self.slots)


class RedisClusterSet(LocalService):
    """Start with ``with RedisClusterSet() as cluster:``; ``cluster.url`` is one node's
    ``redis://`` URL, ``cluster.cluster_url`` the ``redis+cluster://`` one."""

    def __init__(
        self,
        workdir: Path | None = None,
        start_timeout_seconds: float = 30.0,
        primaries: int = 3,
        replicas_per_primary: int = 1,
    ) -> None:
        self._owns_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="budget-guard-cluster-"))
        self._timeout = start_timeout_seconds
        self._primaries = primaries
        self._replicas_per_primary = replicas_per_primary
        self.nodes: dict[int, RedisServer] = {}  # by port, in start order

    @property
    def seed_ports(self) -> list[int]:
        return list(self.nodes)[: self._primaries]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.seed_ports[0]}"

    @property
    def cluster_url(self) -> str:
        seeds = ",".join(f"127.0.0.1:{port}" for port in self.seed_ports)
        return f"redis+cluster://{seeds}"

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> RedisClusterSet:
        count = self._primaries * (1 + self._replicas_per_primary)
        for number in range(1, count + 1):
            self._start_node(self.workdir / f"node-{number}")
        self._create()
        self._wait_until_healthy("a healthy cluster (all slots served, replicas in sync)")
        return self

    def _start_node(self, directory: Path, port: int | None = None) -> None:
        # The bus port is kept across restarts (nodes.conf records it); Redis's default,
        # port + 10000, may be taken or above 65535.
        bus_port_file = directory / "bus-port"
        if not bus_port_file.exists():
            directory.mkdir(parents=True, exist_ok=True)
            bus_port_file.write_text(str(free_port()))
        cluster = [
            "--cluster-enabled",
            "yes",
            "--cluster-port",
            bus_port_file.read_text(),
            "--cluster-config-file",
            "nodes.conf",  # in the node's own directory
            "--cluster-node-timeout",
            str(NODE_TIMEOUT_MS),
            "--repl-diskless-sync-delay",
            "0",
        ]
        node = RedisServer(workdir=directory, extra_args=cluster)
        self.nodes[node.start(port).port] = node

    def _create(self) -> None:
        addresses = [f"127.0.0.1:{port}" for port in self.nodes]
        replicas = ["--cluster-replicas", str(self._replicas_per_primary)]
        argv = [find_redis_cli(), "--cluster", "create", *addresses, *replicas, "--cluster-yes"]
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=self._timeout, check=False
        )
        if result.returncode != 0:
            raise ServiceStartError(f"redis-cli --cluster create failed:\n{result.stdout}")

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- what the nodes say ----------------------------------------------------

    def live_ports(self) -> list[int]:
        return [port for port, node in self.nodes.items() if node.running]

    def info(self, port: int) -> dict[str, Any]:
        """CLUSTER INFO of one node (``cluster_state``, ``cluster_slots_ok``, ...)."""
        with redis.Redis(port=port, socket_timeout=1, decode_responses=True) as node:
            answer: dict[str, Any] = node.execute_command("CLUSTER INFO")
        return answer

    def view(self, port: int) -> list[ClusterNodeView]:
        """The cluster as the node on ``port`` sees it."""
        with redis.Redis(port=port, socket_timeout=1, decode_responses=True) as node:
            lines: dict[str, dict[str, Any]] = node.execute_command("CLUSTER NODES")
        return [_node_view(address, line) for address, line in lines.items()]

    def primary_ports(self) -> list[int]:
        """The live primaries, as the first live node sees them."""
        return [
            seen.port
            for seen in self.view(self.live_ports()[0])
            if seen.is_primary and not seen.failed
        ]

    def slot_owner(self, slot: int) -> int:
        """The port of the primary that serves ``slot``, as a live node sees it."""
        for seen in self.view(self.live_ports()[0]):
            if seen.is_primary and not seen.failed and seen.owns(slot):
                return seen.port
        raise RuntimeError(f"no live primary serves slot {slot}")

    def key_slot(self, key: str) -> int:
        with redis.Redis(port=self.live_ports()[0], socket_timeout=1) as node:
            return int(node.execute_command("CLUSTER KEYSLOT", key))

    # -- failures --------------------------------------------------------------

    def kill_primary(self, port: int | None = None) -> int:
        """SIGKILL a primary (the one on ``port``, or the first); returns its port."""
        victim = port if port is not None else self.primary_ports()[0]
        self.nodes[victim].kill()
        return victim

    def wait_for_failover(self, old_primary: int, timeout_seconds: float = 30.0) -> float:
        """Wait until a replica serves the killed primary's slots and every live node
        says the cluster is ok; returns the seconds since this was called."""
        started = time.monotonic()

        def failed_over() -> bool:
            return all(
                self.info(port)["cluster_state"] == "ok"
                and old_primary not in self._serving_ports(port)
                for port in self.live_ports()
            )

        self._wait(failed_over, f"failed over from {old_primary}", timeout_seconds)
        return time.monotonic() - started

    def restore(self) -> None:
        """Start every killed node again on its port and directory: it rejoins as a
        replica of the primary that took over its slots."""
        for port, node in list(self.nodes.items()):
            if not node.running:
                self._start_node(node.workdir, port)
        self._wait_until_healthy("restored (every node back, replicas in sync)")

    # -- slot migration ----------------------------------------------------------

    def migrate_slot(self, slot: int, to_port: int, keys_per_batch: int = 10) -> None:
        """Move ``slot`` to the primary on ``to_port``, keys and all, as ``redis-cli
        --cluster reshard`` does; clients meanwhile get ASK and MOVED redirections."""
        from_port = self.slot_owner(slot)
        if from_port == to_port:
            return
        source, target = _node_id(from_port), _node_id(to_port)
        with (
            redis.Redis(port=from_port, socket_timeout=5) as source_node,
            redis.Redis(port=to_port, socket_timeout=5) as target_node,
        ):
            target_node.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", source)
            source_node.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", target)
            for keys in _batches(from_port, slot, keys_per_batch):
                source_node.migrate("127.0.0.1", to_port, keys, 0, 5000)
            for port in [to_port, from_port, *self.primary_ports()]:
                with redis.Redis(port=port, socket_timeout=5) as node:
                    node.execute_command("CLUSTER SETSLOT", slot, "NODE", target)
        self._wait(
            lambda: all(self._owner_seen_by(port, slot) == to_port for port in self.live_ports()),
            f"slot {slot} owned by {to_port} in every node's view",
            self._timeout,
        )

    # -- waiting -----------------------------------------------------------------

    def _serving_ports(self, port: int) -> set[int]:
        return {seen.port for seen in self.view(port) if seen.is_primary and seen.slots}

    def _owner_seen_by(self, port: int, slot: int) -> int | None:
        owners = [seen.port for seen in self.view(port) if seen.is_primary and seen.owns(slot)]
        return owners[0] if len(owners) == 1 else None

    def _wait_until_healthy(self, what: str) -> None:
        def healthy() -> bool:
            return all(self._healthy_as_seen_by(port) for port in self.live_ports())

        self._wait(healthy, what, self._timeout)

    def _healthy_as_seen_by(self, port: int) -> bool:
        """Every slot served, every node known and up, as many primaries as made."""
        info = self.info(port)
        view = self.view(port)
        return (
            info["cluster_state"] == "ok"
            and int(info["cluster_slots_ok"]) == SLOTS
            and len(view) == len(self.nodes)
            and not any(seen.failed for seen in view)
            and sum(seen.is_primary for seen in view) == self._primaries
            and self._replica_in_sync(port)
        )

    def _replica_in_sync(self, port: int) -> bool:
        with redis.Redis(port=port, socket_timeout=1) as node:
            replication = node.info("replication")
        return bool(replication["role"] == "master" or replication["master_link_status"] == "up")

    def _wait(self, condition: Callable[[], bool], what: str, timeout_seconds: float) -> None:
        def holds() -> bool:
            try:
                return condition()
            except redis.RedisError:  # a node down, or not yet up
                return False

        processes = [node.process for node in self.nodes.values() if node.running]
        wait_until_all(holds, processes, timeout_seconds, what)


def _node_view(address: str, line: dict[str, Any]) -> ClusterNodeView:
    primary_id = line["master_id"]
    return ClusterNodeView(
        port=int(address.rpartition(":")[2].partition("@")[0]),
        node_id=line["node_id"],
        flags=frozenset(line["flags"].split(",")),
        primary_id=None if primary_id == "-" else primary_id,
        slots=tuple((int(r[0]), int(r[-1])) for r in line["slots"]),
    )


def _node_id(port: int) -> str:
    with redis.Redis(port=port, socket_timeout=1, decode_responses=True) as node:
        return str(node.execute_command("CLUSTER MYID"))


def _batches(port: int, slot: int, size: int) -> Iterator[list[bytes]]:
    """The keys left in ``slot`` on the node on ``port``, ``size`` at a time."""
    with redis.Redis(port=port, socket_timeout=5) as node:
        while keys := node.execute_command("CLUSTER GETKEYSINSLOT", slot, size):
            yield list(keys)
