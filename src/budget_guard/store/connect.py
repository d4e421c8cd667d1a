"""One way to make a Redis client for every topology the ledger runs on.

A URL names the topology (the forms are in ``docs/redis-topologies.md``)::

    redis://[[user]:password@]host[:port][/db]             one instance
    rediss://...                                            the same, over TLS
    unix://[[user]:password@]/path/to/socket[?db=N]        one instance, on a socket
    redis+sentinel://[[user]:password@]host:port[,host:port...]/service_name[/db]
    rediss+sentinel://...                                   TLS to the sentinels and the primary
    redis+cluster://[[user]:password@]host:port[,host:port...]
    rediss+cluster://...

Any of them may end in ``?option=value&...``: redis-py's client options, parsed as
redis-py parses them (``ssl_ca_certs``, ``ssl_cert_reqs``, ``socket_timeout``...).
A Sentinel URL's credentials log in to the primary; the sentinels take their own
from ``sentinel_username`` / ``sentinel_password``, when they require any.

The clients are redis-py's own: ``Redis`` over a connection pool (as
``Redis.from_url`` makes it), ``Sentinel(...).master_for(service_name)``, and
``RedisCluster``. What a caller passes as keyword arguments wins over the URL's
query: the caller's timeouts and retries are part of its contract.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypedDict, Unpack, cast
from urllib.parse import parse_qsl, quote, unquote, urlencode

import redis
import redis.asyncio
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.connection import (
    Connection,
    ConnectionPool,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.cluster import ClusterNode as SyncClusterNode
from redis.connection import parse_url
from redis.retry import Retry as SyncRetry

SENTINEL_PORT = 26379
REDIS_PORT = 6379
MASK = "***"

_FORMS = (
    "redis://[[user]:password@]host[:port][/db], rediss://..., "
    "unix://[[user]:password@]/path/to/socket, "
    "redis+sentinel://[[user]:password@]host:port[,host:port...]/service_name[/db], "
    "rediss+sentinel://..., redis+cluster://[[user]:password@]host:port[,host:port...], "
    "rediss+cluster://..."
)
_SENTINEL_FORM = "redis+sentinel://[[user]:password@]host:port[,host:port...]/service_name[/db]"
_SENTINEL_CREDENTIALS = ("sentinel_username", "sentinel_password")
# Options the URL says in its own parts, never in the query.
_STRUCTURAL = frozenset(
    {"host", "port", "path", "unix_socket_path", "username", "password", "ssl"}
    | {"connection_pool", "connection_class", "startup_nodes", "single_connection_client"}
)
# What the connections to the sentinels share with those to the primary.
_SENTINEL_SHARED_PREFIXES = ("socket_", "ssl")


class RedisUrlError(ValueError):
    """A Redis URL that cannot be used; the message says why, with any password masked."""


class Topology(StrEnum):
    SINGLE = "single"
    SENTINEL = "sentinel"
    CLUSTER = "cluster"


_SCHEMES: Mapping[str, tuple[Topology, bool]] = {
    "redis": (Topology.SINGLE, False),
    "rediss": (Topology.SINGLE, True),
    "unix": (Topology.SINGLE, False),
    "redis+sentinel": (Topology.SENTINEL, False),
    "rediss+sentinel": (Topology.SENTINEL, True),
    "redis+cluster": (Topology.CLUSTER, False),
    "rediss+cluster": (Topology.CLUSTER, True),
}


@dataclass(frozen=True)
class RedisUrl:
    """What a URL says: the topology, where its nodes are, and how to log in."""

    topology: Topology
    tls: bool
    nodes: tuple[tuple[str, int], ...]  # the server, the sentinels, or the cluster's seeds
    socket_path: str | None = None
    service_name: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    options: Mapping[str, Any] = field(default_factory=dict)
    sentinel_credentials: Mapping[str, str] = field(default_factory=dict, repr=False)

    def settings(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        """Client keyword arguments: credentials, the URL's options, then the caller's."""
        credentials = {"username": self.username, "password": self.password}
        present = {name: value for name, value in credentials.items() if value is not None}
        return {**present, **self.options, **overrides}

    def sentinel_settings(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        """Keyword arguments for the connections to the sentinels themselves."""
        shared = {
            name: value
            for name, value in settings.items()
            if name.startswith(_SENTINEL_SHARED_PREFIXES)
        }
        tls = {"ssl": True} if self.tls else {}
        credentials = {
            name.removeprefix("sentinel_"): value
            for name, value in self.sentinel_credentials.items()
        }
        return {**shared, **tls, **credentials}


class ClientOptions(TypedDict, total=False):
    """What a caller may set on the client (and so over the URL's query)."""

    socket_timeout: float | None
    socket_connect_timeout: float | None
    max_connections: int
    retry: Retry
    health_check_interval: int
    client_name: str
    decode_responses: bool


class SyncClientOptions(TypedDict, total=False):
    socket_timeout: float | None
    socket_connect_timeout: float | None
    max_connections: int
    retry: SyncRetry
    health_check_interval: int
    client_name: str
    decode_responses: bool


# -- clients --------------------------------------------------------------------


class SentinelPrimary(redis.asyncio.Redis):
    """A client of the primary the sentinels name; closing it closes its sentinel
    connections too (redis-py leaves those to whoever made the ``Sentinel``)."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        sentinels = getattr(self.connection_pool, "sentinel_manager", None)
        if isinstance(sentinels, Sentinel):
            await sentinels.aclose()


class SyncSentinelPrimary(redis.Redis):
    """``SentinelPrimary`` for synchronous code."""

    def close(self) -> None:
        super().close()
        sentinels = getattr(self.connection_pool, "sentinel_manager", None)
        if isinstance(sentinels, redis.Sentinel):
            sentinels.close()


def redis_client(
    url: str, **options: Unpack[ClientOptions]
) -> redis.asyncio.Redis | redis.asyncio.RedisCluster:
    """An asyncio client for the topology ``url`` names (see the module's docstring).

    Nothing connects until the first command. Close it with ``await client.aclose()``.
    """
    target = parse_redis_url(url)
    settings = target.settings(options)
    if target.topology is Topology.CLUSTER:
        seeds = [ClusterNode(host, port) for host, port in target.nodes]
        return redis.asyncio.RedisCluster(startup_nodes=seeds, ssl=target.tls, **settings)
    if target.topology is Topology.SENTINEL:
        sentinels = Sentinel(  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
            target.nodes, sentinel_kwargs=target.sentinel_settings(settings), **settings
        )
        primary: SentinelPrimary = sentinels.master_for(
            str(target.service_name), redis_class=SentinelPrimary, db=target.db, ssl=target.tls
        )
        return primary
    return redis.asyncio.Redis.from_pool(
        ConnectionPool(**_single_node_pool_settings(target, settings))
    )


def checked_redis_url(url: str) -> str:
    """``url`` when it parses; else ``RedisUrlError`` (a ``ValueError``) saying what is
    wrong, without the password. Every topology runs the ledger (on Redis Cluster as
    ``store.sharded.ShardedLedger``)."""
    parse_redis_url(url)
    return url


def ledger_client(
    url: str, **options: Unpack[ClientOptions]
) -> redis.asyncio.Redis | redis.asyncio.RedisCluster:
    """``redis_client`` for the ledger: build the ledger on it with
    ``store.sharded.ledger_for``, which picks the Cluster ledger for a Cluster client."""
    return redis_client(url, **options)


def ledger_reader(url: str, **options: Unpack[ClientOptions]) -> redis.asyncio.Redis:
    """``ledger_client`` for the operator and the reports, typed as the single-instance
    client their read paths are written against: on Redis Cluster it is a
    ``RedisCluster``, which offers every command they use (GET/SET, XREAD, EVALSHA and
    pipelines of keys that each live in one slot; tested in
    tests/integration/test_cluster_ledger.py)."""
    return cast("redis.asyncio.Redis", ledger_client(url, **options))


def sync_redis_client(
    url: str, **options: Unpack[SyncClientOptions]
) -> redis.Redis | redis.RedisCluster:
    """``redis_client`` for synchronous code (tools, tests, benchmarks)."""
    target = parse_redis_url(url)
    settings = target.settings(options)
    if target.topology is Topology.CLUSTER:
        seeds = [
            SyncClusterNode(host, port)  # type: ignore[no-untyped-call]
            for host, port in target.nodes
        ]
        return redis.RedisCluster(startup_nodes=seeds, ssl=target.tls, **settings)
    if target.topology is Topology.SENTINEL:
        sentinels = redis.Sentinel(  # type: ignore[no-untyped-call]
            target.nodes, sentinel_kwargs=target.sentinel_settings(settings), **settings
        )
        primary: SyncSentinelPrimary = sentinels.master_for(  # type: ignore[no-untyped-call]
            str(target.service_name),
            redis_class=SyncSentinelPrimary,
            db=target.db,
            ssl=target.tls,
        )
        return primary
    pool_settings = _single_node_pool_settings(target, settings, sync=True)
    return redis.Redis.from_pool(redis.ConnectionPool(**pool_settings))


def _single_node_pool_settings(
    target: RedisUrl, settings: Mapping[str, Any], *, sync: bool = False
) -> dict[str, Any]:
    """What ``ConnectionPool`` takes for one server: what ``from_url`` would give it."""
    if target.socket_path is not None:
        unix = redis.UnixDomainSocketConnection if sync else UnixDomainSocketConnection
        return {"connection_class": unix, "path": target.socket_path, "db": target.db, **settings}
    if target.tls:
        connection_class: type[Any] = redis.SSLConnection if sync else SSLConnection
    else:
        connection_class = redis.Connection if sync else Connection
    [(host, port)] = target.nodes
    return {
        "connection_class": connection_class,
        "host": host,
        "port": port,
        "db": target.db,
        **settings,
    }


# -- parsing ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Parts:
    scheme: str
    userinfo: str | None  # None: no '@'
    location: str  # hosts, then the path
    query: str


def _split(url: str) -> _Parts:
    """The URL's parts, cut as ``describe`` cuts them, so errors never show a password.

    The credentials end at the last ``@`` before the query, so that a password may
    hold ``/`` and ``@`` unencoded (generated passwords often have ``/``).
    """
    scheme, separator, rest = url.partition("://")
    rest, _, query = rest.partition("?")
    rest = rest.partition("#")[0]
    if not separator:
        return _Parts("", None, url.partition("?")[0], query)
    userinfo, at, location = rest.rpartition("@")
    return _Parts(scheme.lower(), userinfo if at else None, location, query)


def describe(url: str) -> str:
    """``url`` with its passwords masked, for logs and status messages."""
    parts = _split(url)
    if not parts.scheme:  # not a URL; still, whatever precedes an '@' may be a password
        return MASK + "@" + url.rpartition("@")[2] if "@" in url else url
    text = f"{parts.scheme}://"
    if parts.userinfo is not None:
        user, colon, _password = parts.userinfo.partition(":")
        text += f"{user}:{MASK}@" if colon else f"{user}@"
    text += parts.location
    if parts.query:
        text += "?" + _masked_query(parts.query)
    return text


def _masked_query(query: str) -> str:
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any("password" in name for name, _ in pairs):
        return query
    masked = [(name, MASK if "password" in name else value) for name, value in pairs]
    return urlencode(masked, safe="/:*,", quote_via=quote)


def parse_redis_url(url: str) -> RedisUrl:
    """Read ``url``; raise ``RedisUrlError`` naming what is wrong in it."""
    parts = _split(url)
    if parts.scheme not in _SCHEMES:
        named = f"scheme '{parts.scheme}'" if parts.scheme else "no scheme"
        raise RedisUrlError(f"{describe(url)}: {named}; the forms are {_FORMS}")
    topology, tls = _SCHEMES[parts.scheme]
    username, password = _credentials(parts.userinfo)
    hosts, _, path = parts.location.partition("/")
    options = _query_options(url, parts.query, topology, tls)
    sentinel_credentials = {
        name: str(options.pop(name)) for name in _SENTINEL_CREDENTIALS if name in options
    }
    common: dict[str, Any] = {
        "topology": topology,
        "tls": tls,
        "username": username,
        "password": password,
        "options": options,
    }
    if parts.scheme == "unix":
        return _unix(url, hosts, path, common)
    if topology is Topology.SENTINEL:
        return _sentinel(url, hosts, path, common, sentinel_credentials)
    if topology is Topology.CLUSTER:
        return _cluster(url, hosts, path, common)
    return _single(url, hosts, path, common)


def _credentials(userinfo: str | None) -> tuple[str | None, str | None]:
    if userinfo is None:
        return None, None
    user, colon, password = userinfo.partition(":")
    return unquote(user) or None, unquote(password) if colon else None


def _single(url: str, hosts: str, path: str, common: dict[str, Any]) -> RedisUrl:
    nodes = _nodes(url, hosts or "localhost", REDIS_PORT)
    if len(nodes) > 1:
        raise RedisUrlError(
            f"{describe(url)}: names {len(nodes)} hosts; a redis:// URL names one server. "
            "For several, say which topology: redis+sentinel:// or redis+cluster://"
        )
    db = _database(url, path)
    return RedisUrl(nodes=nodes, db=common["options"].pop("db", db), **common)


def _unix(url: str, hosts: str, path: str, common: dict[str, Any]) -> RedisUrl:
    if hosts or not path:
        raise RedisUrlError(
            f"{describe(url)}: a unix:// URL names a socket file: unix:///path/to/redis.sock"
        )
    db = common["options"].pop("db", 0)
    return RedisUrl(nodes=(), socket_path="/" + unquote(path), db=db, **common)


def _sentinel(
    url: str,
    hosts: str,
    path: str,
    common: dict[str, Any],
    sentinel_credentials: dict[str, str],
) -> RedisUrl:
    service_name, _, db_text = path.partition("/")
    if not service_name:
        raise RedisUrlError(f"{describe(url)}: names no service; the form is {_SENTINEL_FORM}")
    if not hosts:
        raise RedisUrlError(f"{describe(url)}: names no sentinel; the form is {_SENTINEL_FORM}")
    db = _database(url, db_text)
    return RedisUrl(
        nodes=_nodes(url, hosts, SENTINEL_PORT),
        service_name=unquote(service_name),
        db=common["options"].pop("db", db),
        sentinel_credentials=sentinel_credentials,
        **common,
    )


def _cluster(url: str, hosts: str, path: str, common: dict[str, Any]) -> RedisUrl:
    if not hosts:
        raise RedisUrlError(f"{describe(url)}: names no node of the cluster")
    db = common["options"].pop("db", _database(url, path))
    if db != 0:
        raise RedisUrlError(
            f"{describe(url)}: names database {db}; a Redis Cluster has only database 0"
        )
    return RedisUrl(nodes=_nodes(url, hosts, REDIS_PORT), **common)


def _nodes(url: str, hosts: str, default_port: int) -> tuple[tuple[str, int], ...]:
    return tuple(_node(url, entry, default_port) for entry in hosts.split(","))


def _node(url: str, entry: str, default_port: int) -> tuple[str, int]:
    if entry.startswith("["):  # [IPv6]:port
        host, _, after = entry[1:].partition("]")
        port_text = after.removeprefix(":")
    else:
        host, _, port_text = entry.partition(":")
    if not host:
        raise RedisUrlError(f"{describe(url)}: host '{entry}' has no name")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise RedisUrlError(f"{describe(url)}: port '{port_text}' of '{entry}' is not a port")
    return host, int(port_text)


def _database(url: str, text: str) -> int:
    if not text:
        return 0
    if not text.isdigit():
        raise RedisUrlError(f"{describe(url)}: database '{text}' is not a number")
    return int(text)


def _query_options(url: str, query: str, topology: Topology, tls: bool) -> dict[str, Any]:
    names = [name for name, _ in parse_qsl(query, keep_blank_values=True)]
    known = _known_options(topology)
    for name in names:
        if name in _SENTINEL_CREDENTIALS:
            if topology is Topology.SENTINEL:
                continue
            raise RedisUrlError(f"{describe(url)}: option '{name}' is for redis+sentinel:// URLs")
        if name not in known:
            raise RedisUrlError(
                f"{describe(url)}: option '{name}' is not an option of redis-py's client"
            )
        if name.startswith("ssl_") and not tls:
            raise RedisUrlError(f"{describe(url)}: option '{name}' needs TLS: use a rediss scheme")
    try:
        parsed = dict(parse_url(f"redis://localhost/?{query}"))  # type: ignore[no-untyped-call]
    except ValueError as error:
        raise RedisUrlError(f"{describe(url)}: {error}") from None
    parsed.pop("host", None)
    return parsed


@functools.cache
def _known_options(topology: Topology) -> frozenset[str]:
    client = redis.asyncio.RedisCluster if topology is Topology.CLUSTER else redis.asyncio.Redis
    parameters = inspect.signature(client.__init__).parameters
    return frozenset(parameters) - _STRUCTURAL - {"self"}
