#!/usr/bin/env bash
# Installs Debian packages when their command is missing: install-apt-package.sh <command> <package>
set -euo pipefail
command_name="$1" package="$2"
if command -v "${command_name}" >/dev/null 2>&1; then exit 0; fi
if [[ "$(id -u)" != 0 ]]; then
  echo "error: ${command_name} is missing and this is not root, so it cannot be installed here." >&2
  echo "       Install it ('sudo apt-get install -y ${package}' on Debian/Ubuntu) and run again." >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: ${command_name} is missing and apt-get is not available; install ${package}." >&2
  exit 1
fi
echo "[install-apt-package] installing ${package} with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
# Do not let a package start a system-wide service: tests and tools start their own.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [[ ! -e "${policy}" ]]; then
  printf '#!/bin/sh\nexit 101\n' > "${policy}"; chmod +x "${policy}"; created_policy=1
fi
trap '[[ ${created_policy} == 1 ]] && rm -f "${policy}"' EXIT
apt-get install -y -q --no-install-recommends "${package}" >/dev/null 2>&1 || {
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${package}" >/dev/null
}
command -v "${command_name}" >/dev/null
