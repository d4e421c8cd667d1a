"""``make cluster``: a real Redis and Kubernetes API server in the foreground.

Prints the exports to use them from another shell (the variables ``budget-guard``
itself reads, and a PATH with ``budget-guard``, ``kubectl`` and ``helm``) and stops
everything on Ctrl-C. docs/install.md's local quick start begins here.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

from budget_guard.localservices.kube import KubeAPIServer, KubeBinaries
from budget_guard.localservices.processes import ServiceStartError
from budget_guard.localservices.redis_server import RedisServer


def exports(kube: KubeAPIServer, redis: RedisServer) -> list[str]:
    """Shell lines that point another shell at these services."""
    commands = [str(Path(sys.executable).parent), str(kube.binaries.kubectl.parent)]
    return [
        f"export KUBECONFIG={kube.kubeconfig_path}",
        f"export BUDGET_GUARD_REDIS_URL={redis.url}",  # read by budget-guard operator/webhook
        f"export REDIS_URL={redis.url}",  # for redis-cli and your own scripts
        f"export PATH={os.pathsep.join(commands)}:$PATH",  # budget-guard, kubectl, helm
    ]


def main() -> int:
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        with RedisServer() as redis, KubeAPIServer(KubeBinaries.locate()) as kube:
            print("Redis and the Kubernetes API server are running. In another shell:\n")
            for line in exports(kube, redis):
                print(line)
            print("\nPress Ctrl-C to stop them.", flush=True)
            stop.wait()
            print("\nstopping...", flush=True)
    except ServiceStartError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
