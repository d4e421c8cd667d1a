"""The Sentinel set and the Redis Cluster of the test session are real processes
that fail over for real: no mocks, no stand-ins."""

from __future__ import annotations

import uuid

import pytest
import redis

from budget_guard.localservices import RedisClusterSet, RedisSentinelSet
from budget_guard.localservices.redis_cluster import SLOTS
from budget_guard.localservices.redis_sentinel import DOWN_AFTER_MS

pytestmark = pytest.mark.redis


def _info(port: int, section: str) -> dict[str, object]:
    with redis.Redis(port=port, socket_timeout=1) as node:
        return dict(node.info(section))


def test_sentinels_agree_on_a_primary_with_a_replica(redis_sentinel: RedisSentinelSet) -> None:
    primary = redis_sentinel.primary_port
    assert redis_sentinel.primaries_named() == [primary] * 3
    assert 26379 not in redis_sentinel.sentinel_ports
    assert _info(primary, "server")["process_id"] == redis_sentinel.data_nodes[primary].pid
    (replica,) = set(redis_sentinel.data_nodes) - {primary}
    replication = _info(replica, "replication")
    assert (replication["role"], replication["master_port"]) == ("slave", primary)
    assert replication["master_link_status"] == "up"
    with redis.Redis(port=redis_sentinel.sentinel_ports[0]) as sentinel:
        state = sentinel.sentinel_master(redis_sentinel.service_name)
    assert (state["num-slaves"], state["num-other-sentinels"]) == (1, 2)


def test_killing_the_primary_promotes_the_replica(redis_sentinel: RedisSentinelSet) -> None:
    old_primary = redis_sentinel.primary_port
    (replica,) = set(redis_sentinel.data_nodes) - {old_primary}
    key = f"before-failover:{uuid.uuid4()}"
    with redis.Redis(
        port=old_primary, username=redis_sentinel.username, password=redis_sentinel.password
    ) as primary:
        primary.set(key, "kept")
        assert primary.wait(1, 5000) == 1  # on the replica before the primary dies
    try:
        assert redis_sentinel.kill_primary() == old_primary
        seconds = redis_sentinel.wait_for_failover(old_primary)
        assert redis_sentinel.primary_port == replica
        assert redis_sentinel.role(replica) == "master"
        with redis.Redis(port=replica) as promoted:
            assert promoted.get(key) == b"kept"
        assert seconds > DOWN_AFTER_MS / 1000  # the sentinels waited, as configured
    finally:
        redis_sentinel.restore()
    assert redis_sentinel.role(old_primary) == "slave"


def test_cluster_serves_every_slot_from_three_primaries(redis_cluster: RedisClusterSet) -> None:
    for port in redis_cluster.live_ports():
        info = redis_cluster.info(port)
        assert info["cluster_state"] == "ok"
        assert int(info["cluster_slots_assigned"]) == SLOTS
        assert int(info["cluster_known_nodes"]) == 6
    view = redis_cluster.view(redis_cluster.seed_ports[0])
    primaries = [seen for seen in view if seen.is_primary]
    assert len(primaries) == 3
    assert sum(end - start + 1 for seen in primaries for start, end in seen.slots) == SLOTS
    replicas_of = sorted(seen.primary_id or "" for seen in view if not seen.is_primary)
    assert replicas_of == sorted(seen.node_id for seen in primaries)  # one replica each


def test_cluster_client_follows_a_slot_migration(redis_cluster: RedisClusterSet) -> None:
    tag = f"{{migrate-{uuid.uuid4().hex[:8]}}}"
    slot = redis_cluster.key_slot(tag)
    with redis.RedisCluster.from_url(redis_cluster.url) as client:
        for number in range(30):
            client.set(f"{tag}:{number}", number)
        owner = redis_cluster.slot_owner(slot)
        target = next(port for port in redis_cluster.primary_ports() if port != owner)
        redis_cluster.migrate_slot(slot, target)
        assert redis_cluster.slot_owner(slot) == target
        assert [int(client.get(f"{tag}:{number}") or -1) for number in range(30)] == list(range(30))
    with redis.Redis(port=target) as new_owner:
        assert new_owner.exists(*(f"{tag}:{number}" for number in range(30))) == 30


def test_killing_a_cluster_primary_promotes_its_replica(redis_cluster: RedisClusterSet) -> None:
    view = redis_cluster.view(redis_cluster.seed_ports[0])
    victim = next(seen for seen in view if seen.is_primary)
    (replica,) = [seen.port for seen in view if seen.primary_id == victim.node_id]
    try:
        assert redis_cluster.kill_primary(victim.port) == victim.port
        redis_cluster.wait_for_failover(victim.port)
        assert replica in redis_cluster.primary_ports()
        for start, _end in victim.slots:
            assert redis_cluster.slot_owner(start) == replica
    finally:
        redis_cluster.restore()
    assert _info(victim.port, "replication")["role"] == "slave"
