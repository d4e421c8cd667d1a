"""``make cluster``: a real Redis and Kubernetes API server in the foreground.

Prints the exports to use them from another shell and stops everything on Ctrl-C.
"""

from __future__ import annotations

import signal
import sys
import threading

from budget_guard.localservices.kube import KubeAPIServer, KubeBinaries
from budget_guard.localservices.processes import ServiceStartError
from budget_guard.localservices.redis_server import RedisServer


def main() -> int:
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        with RedisServer() as redis, KubeAPIServer(KubeBinaries.locate()) as kube:
            print("Redis and the Kubernetes API server are running. In another shell:\n")
            print(f"export KUBECONFIG={kube.kubeconfig_path}")
            print(f"export REDIS_URL={redis.url}\n")
            print("Press Ctrl-C to stop them.", flush=True)
            stop.wait()
            print("\nstopping...", flush=True)
    except ServiceStartError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
