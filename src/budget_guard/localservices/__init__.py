"""Real services on loopback, for the demo, the tests and ``make cluster``.

Rule of this room: it starts and stops local processes (redis-server, a Sentinel
set, a Redis Cluster, etcd, kube-apiserver) on free loopback ports with their own
temporary directories, stops them by pid, and knows nothing of budgets. Production
code never imports it.
"""

from budget_guard.localservices.kube import KubeAPIServer, KubeBinaries
from budget_guard.localservices.operator_process import OperatorProcess
from budget_guard.localservices.processes import ServiceStartError
from budget_guard.localservices.redis_cluster import RedisClusterSet
from budget_guard.localservices.redis_sentinel import RedisSentinelSet
from budget_guard.localservices.redis_server import RedisServer
from budget_guard.localservices.tiktoken_cache import seed_offline_tiktoken_cache
from budget_guard.localservices.webhook_process import WebhookProcess

__all__ = [
    "KubeAPIServer",
    "KubeBinaries",
    "OperatorProcess",
    "RedisClusterSet",
    "RedisSentinelSet",
    "RedisServer",
    "ServiceStartError",
    "WebhookProcess",
    "seed_offline_tiktoken_cache",
]
