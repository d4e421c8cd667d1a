"""Schemathesis against the API listener of a real webhook process, from its own
``/openapi.json``: every answer's status is one the document lists for the operation,
its body matches the documented schema and content type, no 5xx that is not
documented, and an operation that declares a security scheme refuses a request
without the token.

Schemathesis runs as its command line in a subprocess (its pytest plugin is not
used). The usage token (``--usage-token-file``) goes with every request, so the
protected routes are reached; whatever statuses and security the document declares
(tokens with tenant scopes answer 401 and 403 where documented) are what is checked.

Two runs: with Redis up, and with Redis stopped (the documented 503s).

``positive_data_acceptance`` is left out: the API refuses with a documented 400 what
a schema cannot say (a report with neither usage nor cost, a day that does not
exist, ``from`` after ``to``).
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from budget_guard.localservices import RedisServer, WebhookProcess
from tests.fixtures.webhook import budget, write_budgets

pytestmark = pytest.mark.redis

TOKEN = "schemathesis-usage-token"
EXAMPLES_PER_OPERATION = 15
CHECKS_LEFT_OUT = "positive_data_acceptance"
SCHEMATHESIS = Path(sys.executable).parent / "st"


class Api:
    def __init__(self, redis: RedisServer, webhook: WebhookProcess, workdir: Path) -> None:
        self.redis = redis
        self.webhook = webhook
        self.workdir = workdir

    def schemathesis(self, name: str, *, left_out: str = CHECKS_LEFT_OUT) -> str:
        """One schemathesis run; fails the test with its report when it finds anything."""
        report = self.workdir / f"{name}.xml"
        command = [
            str(SCHEMATHESIS),
            "run",
            f"{self.webhook.api_url}/openapi.json",
            *("--header", f"Authorization: Bearer {TOKEN}"),
            *("--checks", "all", "--exclude-checks", left_out),
            *("--phases", "examples,coverage,fuzzing"),
            *("--max-examples", str(EXAMPLES_PER_OPERATION), "--seed", "13", "--workers", "1"),
            *("--request-timeout", "10", "--suppress-health-check", "all"),
            *("--report", "junit", "--report-junit-path", str(report)),
        ]
        done = subprocess.run(
            command,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        output = done.stdout + done.stderr
        assert done.returncode == 0, output[-8000:]
        assert re.search(r"Test cases:\s+\d+ generated", output), output[-3000:]
        return output


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    workdir = tmp_path_factory.mktemp("schemathesis")
    budgets = write_budgets(
        workdir / "budgets",
        [budget("acme", "1000", tenant="acme"), budget("tiny", "0.000001", tenant="tiny")],
    )
    token = workdir / "usage-token"
    token.write_text(TOKEN + "\n")
    with RedisServer(workdir=workdir / "redis") as redis:
        args = ["--budgets", str(budgets), "--usage-token-file", str(token)]
        with WebhookProcess(
            [*args, "--redis-url", redis.url, "--ledger-timeout-ms", "100"],
            workdir=workdir / "webhook",
        ) as webhook:
            yield Api(redis, webhook, workdir)


def _no_500(webhook: WebhookProcess) -> None:
    """aiohttp answers an unhandled exception with a 500 and logs it with its traceback."""
    log = "\n".join(webhook.log_lines())
    assert "Traceback" not in log, log[-5000:]
    assert '"level": "error"' not in log, log[-5000:]


def test_every_operation_answers_as_documented_with_redis_up(api: Api) -> None:
    api.schemathesis("redis-up")
    _no_500(api.webhook)


def test_every_operation_answers_as_documented_with_redis_down(api: Api) -> None:
    """The documented 503s are the contract here (retry later), so "no 5xx at all" is
    left out; every status must still be documented, and no 500."""
    api.redis.stop_process()
    api.schemathesis("redis-down", left_out=f"{CHECKS_LEFT_OUT},not_a_server_error")
    _no_500(api.webhook)
