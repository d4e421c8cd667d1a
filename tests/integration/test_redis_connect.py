"""store.connect against real servers: one instance (plain, TLS with ACL, unix
socket), the Sentinel set through a failover, and the Redis Cluster through a failover."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from redis.asyncio import RedisCluster

from budget_guard.localservices import RedisClusterSet, RedisSentinelSet, RedisServer
from budget_guard.localservices.processes import free_port
from budget_guard.store.connect import redis_client, sync_redis_client

pytestmark = pytest.mark.redis
T = TypeVar("T")


async def until_it_answers(call: Callable[[], Awaitable[T]], within: float = 20.0) -> T:
    """``call`` again until Redis answers it (a client finding a new primary)."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await call()
        except (redis.ConnectionError, redis.TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


# -- one instance ---------------------------------------------------------------


async def test_a_single_instance_url_round_trips(redis_server: RedisServer) -> None:
    client = redis_client(redis_server.url, socket_timeout=2)
    try:
        await client.set("connect:single", "yes")
        assert await client.get("connect:single") == b"yes"
    finally:
        await client.aclose()
    with sync_redis_client(redis_server.url) as sync_client:
        assert sync_client.get("connect:single") == b"yes"


def _write_pki(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a certificate for 127.0.0.1 signed by it: (ca, cert, key) files."""
    now = dt.datetime.now(dt.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "redis-test-ca")])

    def certificate(subject: x509.Name, public_key: ec.EllipticCurvePublicKey) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
        )
        if subject == ca_name:
            builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
        else:
            san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
            builder = builder.add_extension(san, critical=False)
        return builder.sign(ca_key, hashes.SHA256())

    server_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    files = (directory / "ca.crt", directory / "redis.crt", directory / "redis.key")
    pem = serialization.Encoding.PEM
    files[0].write_bytes(certificate(ca_name, ca_key.public_key()).public_bytes(pem))
    files[1].write_bytes(certificate(server_name, key.public_key()).public_bytes(pem))
    files[2].write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return files


class TlsRedis:
    """A redis-server with a TLS port, a unix socket and an ACL user ``app``."""

    def __init__(self, directory: Path) -> None:
        self.ca, cert, key = _write_pki(directory)
        self.tls_port = free_port()
        self.socket = directory / "redis.sock"
        self.server = RedisServer(
            workdir=directory / "redis",
            extra_args=[
                *("--tls-port", str(self.tls_port), "--tls-auth-clients", "no"),
                *("--tls-cert-file", str(cert), "--tls-key-file", str(key)),
                *("--tls-ca-cert-file", str(self.ca)),
                *("--unixsocket", str(self.socket), "--unixsocketperm", "700"),
                *("--user", "app", "on", ">app-secret", "~*", "&*", "+@all"),
            ],
        )


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    service = TlsRedis(tmp_path_factory.mktemp("tls-redis"))
    with service.server:
        yield service


async def test_rediss_verifies_the_server_and_logs_in_as_an_acl_user(tls_redis: TlsRedis) -> None:
    url = (
        f"rediss://app:app-secret@127.0.0.1:{tls_redis.tls_port}/0"
        f"?ssl_ca_certs={tls_redis.ca}&ssl_cert_reqs=required"
    )
    client = redis_client(url, socket_timeout=2)
    try:
        assert await client.acl_whoami() == "app"
        assert (await client.info("server"))["process_id"] == tls_redis.server.pid
    finally:
        await client.aclose()


async def test_rediss_refuses_a_server_its_ca_did_not_sign(tls_redis: TlsRedis) -> None:
    client = redis_client(f"rediss://127.0.0.1:{tls_redis.tls_port}/0", socket_timeout=2)
    try:
        with pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            await client.ping()
    finally:
        await client.aclose()


async def test_a_unix_socket_url_with_a_wrong_password_is_refused(tls_redis: TlsRedis) -> None:
    good = redis_client(f"unix://app:app-secret@{tls_redis.socket}?db=1")
    bad = redis_client(f"unix://app:wrong@{tls_redis.socket}?db=1")
    try:
        assert await good.acl_whoami() == "app"
        with pytest.raises(redis.ConnectionError, match="invalid username-password pair"):
            await bad.ping()
    finally:
        await good.aclose()
        await bad.aclose()


# -- Sentinel ----------------------------------------------------------------------


async def test_a_sentinel_url_reaches_the_primary_as_the_acl_user(
    redis_sentinel: RedisSentinelSet,
) -> None:
    client = redis_client(redis_sentinel.url, socket_timeout=2)
    try:
        assert await client.acl_whoami() == redis_sentinel.username
        assert (await client.info("server"))["tcp_port"] == redis_sentinel.primary_port
    finally:
        await client.aclose()
    wrong = redis_sentinel.url.replace(redis_sentinel.password, "wrong")
    with (
        sync_redis_client(wrong) as sync_client,
        pytest.raises(redis.ConnectionError, match="invalid username-password pair"),
    ):
        sync_client.ping()


async def test_a_sentinel_client_reaches_the_new_primary_after_a_failover(
    redis_sentinel: RedisSentinelSet,
) -> None:
    client = redis_client(redis_sentinel.url, socket_timeout=1, socket_connect_timeout=1)
    key = f"connect:failover:{uuid.uuid4()}"
    try:
        await client.set(key, "before")
        assert await client.wait(1, 5000) == 1
        old_primary = redis_sentinel.kill_primary()
        await asyncio.to_thread(redis_sentinel.wait_for_failover, old_primary)
        await until_it_answers(lambda: client.set(f"{key}:after", "after"))
        assert (await client.info("server"))["tcp_port"] == redis_sentinel.primary_port
        assert redis_sentinel.primary_port != old_primary
        assert await client.get(key) == b"before"
    finally:
        await client.aclose()
        await asyncio.to_thread(redis_sentinel.restore)


# -- Cluster -----------------------------------------------------------------------


async def test_a_cluster_client_spreads_keys_and_follows_a_failover(
    redis_cluster: RedisClusterSet,
) -> None:
    client = redis_client(redis_cluster.cluster_url, socket_timeout=1, socket_connect_timeout=1)
    assert isinstance(client, RedisCluster)
    keys = {f"connect:{{t:{number}}}:{uuid.uuid4().hex[:6]}": str(number) for number in range(60)}
    try:
        for key, value in keys.items():
            await client.set(key, value)
        owners = {redis_cluster.slot_owner(redis_cluster.key_slot(key)) for key in keys}
        assert owners == set(redis_cluster.primary_ports())  # every primary holds some
        for port in owners:
            with redis.Redis(port=port) as primary:
                assert primary.wait(1, 5000) == 1
        victim = redis_cluster.kill_primary()
        await asyncio.to_thread(redis_cluster.wait_for_failover, victim)
        for key, value in keys.items():
            assert await until_it_answers(lambda key=key: client.get(key)) == value.encode()
    finally:
        await client.aclose()
        await asyncio.to_thread(redis_cluster.restore)
    with sync_redis_client(redis_cluster.cluster_url) as sync_client:
        assert isinstance(sync_client, redis.RedisCluster)
        assert sync_client.get(next(iter(keys))) is not None
