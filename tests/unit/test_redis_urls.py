"""Redis URLs for every topology (store.connect): what each form means, the clients
made from them (built, never connected: no server here), errors, masked passwords."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection
from redis.asyncio.sentinel import SentinelConnectionPool

from budget_guard.store.connect import (
    RedisUrlError,
    SentinelPrimary,
    Topology,
    describe,
    parse_redis_url,
    redis_client,
)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "redis://127.0.0.1:7000/2",
            {"topology": Topology.SINGLE, "nodes": (("127.0.0.1", 7000),), "db": 2},
        ),
        ("redis://redis", {"nodes": (("redis", 6379),), "db": 0, "tls": False}),
        (
            "rediss://app:s%40cret@redis:6380/1?ssl_ca_certs=/etc/ca.pem&ssl_cert_reqs=required",
            {
                "tls": True,
                "username": "app",
                "password": "s@cret",
                "options": {"ssl_ca_certs": "/etc/ca.pem", "ssl_cert_reqs": "required"},
            },
        ),
        (
            "unix://:pw@/run/redis/redis.sock?db=3",
            {"socket_path": "/run/redis/redis.sock", "db": 3, "username": None, "password": "pw"},
        ),
        (
            "redis+sentinel://:pw@10.0.0.1:26379,10.0.0.2:26380,[::1]:26381/ledger/4",
            {
                "topology": Topology.SENTINEL,
                "nodes": (("10.0.0.1", 26379), ("10.0.0.2", 26380), ("::1", 26381)),
                "service_name": "ledger",
                "db": 4,
                "password": "pw",
            },
        ),
        (
            "rediss+sentinel://guard:pw@s1,s2/ledger?sentinel_password=other&socket_timeout=0.5",
            {
                "topology": Topology.SENTINEL,
                "tls": True,
                "nodes": (("s1", 26379), ("s2", 26379)),
                "db": 0,
                "username": "guard",
                "options": {"socket_timeout": 0.5},
                "sentinel_credentials": {"sentinel_password": "other"},
            },
        ),
        (
            "redis+cluster://n1:7000,n2:7001",
            {"topology": Topology.CLUSTER, "nodes": (("n1", 7000), ("n2", 7001)), "tls": False},
        ),
        ("rediss+cluster://user:pw@n1/0", {"tls": True, "username": "user", "db": 0}),
    ],
)
def test_each_form_says_its_topology_nodes_and_credentials(
    url: str, expected: dict[str, Any]
) -> None:
    parsed = parse_redis_url(url)
    assert {name: getattr(parsed, name) for name in expected} == expected


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://:hunter2@redis:6379", "scheme 'http'"),
        ("redis:6379", "no scheme"),
        ("redis+sentinel://:hunter2@s1:26379", "names no service"),
        ("redis+sentinel://:hunter2@/ledger", "names no sentinel"),
        ("redis+sentinel://:hunter2@s1:263x9/ledger", "port '263x9' of 's1:263x9' is not a port"),
        ("redis+sentinel://:hunter2@s1/ledger/zero", "database 'zero' is not a number"),
        ("redis+cluster://:hunter2@n1:7000/3", "a Redis Cluster has only database 0"),
        ("redis://:hunter2@a:1,b:2", "redis+sentinel:// or redis+cluster://"),
        ("redis://:hunter2@redis?ssl_ca_certs=/ca.pem", "'ssl_ca_certs' needs TLS"),
        ("redis://:hunter2@redis?colour=blue", "option 'colour' is not an option"),
        ("redis://:hunter2@redis?sentinel_password=x", "is for redis+sentinel:// URLs"),
        ("redis://:hunter2@redis?socket_timeout=soon", "Invalid value for 'socket_timeout'"),
        ("unix://:hunter2@host/redis.sock", "names a socket file"),
    ],
)
def test_errors_name_what_is_wrong_and_never_the_password(url: str, says: str) -> None:
    with pytest.raises(RedisUrlError) as raised:
        parse_redis_url(url)
    assert says in str(raised.value)
    assert "hunter2" not in str(raised.value)


@pytest.mark.parametrize(
    ("url", "described"),
    [
        ("redis://:hunter2@redis:6379/0", "redis://:***@redis:6379/0"),
        ("rediss://app:hun%40ter2@redis/0", "rediss://app:***@redis/0"),
        ("redis://app@redis/0", "redis://app@redis/0"),
        ("redis://redis:6379/0?socket_timeout=1", "redis://redis:6379/0?socket_timeout=1"),
        (
            "redis+sentinel://u:hunter2@s1:1,s2:2/ledger/0?sentinel_password=hunter3",
            "redis+sentinel://u:***@s1:1,s2:2/ledger/0?sentinel_password=***",
        ),
        ("redis://:a/b@c@redis/0", "redis://:***@redis/0"),  # an unencoded '/' and '@'
        ("hunter2@redis", "***@redis"),
    ],
)
def test_describe_masks_every_password(url: str, described: str) -> None:
    assert describe(url) == described


async def test_a_single_instance_client_is_what_from_url_makes() -> None:
    client = redis_client("redis://app:pw@redis:6380/2?socket_timeout=9", socket_timeout=1.5)
    try:
        assert type(client) is Redis
        kwargs = client.connection_pool.connection_kwargs
        assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("redis", 6380, 2)
        assert (kwargs["username"], kwargs["password"]) == ("app", "pw")
        assert kwargs["socket_timeout"] == 1.5  # the caller's option wins over the URL's
    finally:
        await client.aclose()


async def test_tls_and_unix_clients_use_redis_py_connection_classes() -> None:
    tls = redis_client("rediss://redis/0?ssl_ca_certs=/ca.pem&ssl_cert_reqs=required")
    unix = redis_client("unix:///run/redis.sock?db=1", max_connections=3)
    try:
        assert isinstance(tls, Redis) and isinstance(unix, Redis)
        assert tls.connection_pool.connection_class is SSLConnection
        assert tls.connection_pool.connection_kwargs["ssl_ca_certs"] == "/ca.pem"
        assert unix.connection_pool.connection_class is UnixDomainSocketConnection
        assert unix.connection_pool.connection_kwargs["path"] == "/run/redis.sock"
        assert unix.connection_pool.max_connections == 3
    finally:
        await tls.aclose()
        await unix.aclose()


async def test_a_sentinel_client_asks_the_sentinels_for_the_named_primary() -> None:
    url = (
        "rediss+sentinel://guard:pw@s1:26379,s2:26380/ledger/3"
        "?sentinel_password=spw&ssl_ca_certs=/ca.pem&socket_connect_timeout=0.2"
    )
    client = redis_client(url, max_connections=5)
    try:
        assert isinstance(client, SentinelPrimary)
        pool = client.connection_pool
        assert isinstance(pool, SentinelConnectionPool)
        assert (pool.service_name, pool.is_master, pool.max_connections) == ("ledger", True, 5)
        primary = pool.connection_kwargs
        assert (primary["username"], primary["password"], primary["db"]) == ("guard", "pw", 3)
        assert primary["ssl_ca_certs"] == "/ca.pem"
        sentinels = [s.connection_pool.connection_kwargs for s in pool.sentinel_manager.sentinels]
        assert [(s["host"], s["port"]) for s in sentinels] == [("s1", 26379), ("s2", 26380)]
        first = sentinels[0]
        assert (first.get("username"), first["password"]) == (None, "spw")
        assert first["ssl_ca_certs"] == "/ca.pem"
        assert first["socket_connect_timeout"] == 0.2
        assert sentinels[0] is not primary
    finally:
        await client.aclose()


async def test_a_cluster_client_starts_from_every_named_node() -> None:
    client = redis_client("rediss+cluster://app:pw@n1:7000,n2:7001", socket_timeout=0.5)
    try:
        assert isinstance(client, RedisCluster)
        assert [(n.host, n.port) for n in client.startup_nodes] == [("n1", 7000), ("n2", 7001)]
        kwargs = client.connection_kwargs
        assert kwargs["connection_class"] is SSLConnection
        assert (kwargs["username"], kwargs["password"], kwargs["socket_timeout"]) == (
            "app",
            "pw",
            0.5,
        )
    finally:
        await client.aclose()
