#!/usr/bin/env bash
# Installs redis-server from the distribution's packages when it is missing.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then exit 0; fi
if [[ "$(id -u)" != 0 ]]; then
  echo "error: redis-server is missing and this is not root, so it cannot be installed here." >&2
  echo "       Install it ('sudo apt-get install -y redis-server' on Debian/Ubuntu) and run again." >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: redis-server is missing and apt-get is not available; install redis-server >= 6.2." >&2
  exit 1
fi
echo "[install-redis-server] installing redis-server with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
# Do not let the package start a system-wide server on 6379: tests start their own.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [[ ! -e "${policy}" ]]; then
  printf '#!/bin/sh\nexit 101\n' > "${policy}"; chmod +x "${policy}"; created_policy=1
fi
trap '[[ ${created_policy} == 1 ]] && rm -f "${policy}"' EXIT
apt-get install -y -q --no-install-recommends redis-server >/dev/null 2>&1 || {
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends redis-server >/dev/null
}
redis-server --version >&2
