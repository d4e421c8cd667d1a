"""What the container image relies on, proven without a container engine: the wheel built
from this tree, installed into a fresh virtual environment from local wheels only, runs
`budget-guard operator` and `budget-guard webhook` against the test Redis and API server,
with tokenizer vocabularies from a prepared TIKTOKEN_CACHE_DIR and no network; it
carries its package data (the Lua scripts), and writes nothing into its installation."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
import zipfile
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from redis.asyncio import Redis

from budget_guard.localservices import (
    KubeAPIServer,
    OperatorProcess,
    RedisServer,
    WebhookProcess,
    seed_offline_tiktoken_cache,
)
from tests.fixtures.operator import Cluster, eventually, operator_args

pytestmark = [pytest.mark.kube, pytest.mark.redis]

ROOT = Path(__file__).resolve().parents[2]
LUA_SCRIPTS = sorted(path.name for path in (ROOT / "src/budget_guard/store/lua").glob("*.lua"))
CHAT = {"model": "gpt-4o-mini", "max_tokens": 10, "messages": [{"role": "user", "content": "Hi"}]}
# Any attempt to reach the internet (tiktoken's download) goes to a port nothing listens on.
OFFLINE = {
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "NO_PROXY": "127.0.0.1,localhost",
    "PYTHONDONTWRITEBYTECODE": "1",
}


def run(*command: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(part) for part in command],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=cwd,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def wheelhouse() -> Path:
    found = os.environ.get("BUDGET_GUARD_WHEELHOUSE")
    assert found, "BUDGET_GUARD_WHEELHOUSE is not set: run the tests through make test"
    return Path(found)


@dataclass(frozen=True)
class Installed:
    wheel: Path
    environment: Path

    @property
    def script(self) -> Path:
        return self.environment / "bin" / "budget-guard"

    def files(self) -> set[Path]:
        return {path for path in self.environment.rglob("*") if path.is_file()}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"  # a copy, so that the build leaves nothing in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__"))
    run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "--wheel-dir",
        work / "dist",
        source,
    )
    (wheel,) = (work / "dist").glob("llm_budget_guard-*.whl")
    environment = work / "venv"
    venv.create(environment, with_pip=True)
    run(
        environment / "bin" / "pip",
        "install",
        "--quiet",
        "--no-index",
        "--find-links",
        wheelhouse(),
        wheel,
    )
    return Installed(wheel, environment)


def test_the_wheel_carries_the_lua_scripts_and_the_command(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(name for name in names if name.endswith("entry_points.txt"))
        commands = archive.read(entry_points).decode()
    assert {f"budget_guard/store/lua/{name}" for name in LUA_SCRIPTS} <= names
    assert "budget_guard/py.typed" in names
    assert "budget-guard = budget_guard.cli:main" in commands
    assert not any(name.startswith("tests/") for name in names)


def test_the_installed_package_is_the_wheel_not_this_checkout(
    installed: Installed, tmp_path: Path
) -> None:
    python = installed.environment / "bin" / "python"
    found = run(python, "-c", "import budget_guard; print(budget_guard.__file__)", cwd=tmp_path)
    assert found.stdout.strip().startswith(str(installed.environment))
    assert run(installed.script, "--version").stdout.strip() == "budget-guard 0.1.0"


async def _check_until_allowed(url: str) -> aiohttp.ClientResponse:
    async with aiohttp.ClientSession() as session:

        async def check() -> aiohttp.ClientResponse:
            async with session.post(url, json=CHAT, headers={"x-budget-tenant": "acme"}) as answer:
                return answer

        return await eventually(
            check, lambda answer: answer.status == 200, within=10, every=0.1, what="an allow"
        )


async def _get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as answer:
        return answer.status, await answer.text()


async def test_both_commands_run_from_the_installed_wheel_offline(
    installed: Installed,
    crds: KubeAPIServer,
    redis_server: RedisServer,
    redis_client: Redis,
    tmp_path: Path,
) -> None:
    vocabularies = tmp_path / "tiktoken"
    assert seed_offline_tiktoken_cache(vocabularies) == ["cl100k_base"]
    cluster = Cluster.fresh(crds, "wheel")
    cluster.budget("acme", "5.00", scope={"tenant": "acme"})
    env = {
        **OFFLINE,
        "TIKTOKEN_CACHE_DIR": str(vocabularies),
        "KUBECONFIG": str(crds.kubeconfig_path),
        "BUDGET_GUARD_REDIS_URL": redis_server.url,  # as the chart passes it
    }
    launcher = [str(installed.script)]
    before = installed.files()
    args = [arg for arg in operator_args(cluster, redis_server.url) if arg != "--redis-url"]
    args.remove(redis_server.url)
    operator = OperatorProcess(args, env, tmp_path / "operator", launcher=launcher)
    webhook = WebhookProcess([], env, tmp_path / "webhook", launcher=launcher)
    with operator, webhook:
        await eventually(
            lambda: cluster.condition("llmbudgets", "acme", "Ready").get("status"),
            lambda status: status == "True",
            what="acme Ready, reconciled by the installed operator",
        )
        allowed = await _check_until_allowed(webhook.check_url + "/v1/chat/completions")
        # gpt-4o-mini is counted in o200k_base, which is not in the prepared cache: the
        # webhook says so, and keeps deciding with the cl100k_base fallback.
        assert "cl100k_base(fallback for o200k_base)" in allowed.headers["x-budget-estimator"]
        status, metrics = await _get(webhook.api_url + "/metrics")
        assert 'budget_guard_tokenizer_fallback{encoding="o200k_base"} 1.0' in metrics
        status, ready = await _get(webhook.api_url + "/readyz")
        assert status == 200 and "tokenizer o200k_base not loaded" in ready
        assert operator.stop() == 0
        assert webhook.stop() == 0
    logs = "\n".join(operator.log_lines() + webhook.log_lines())
    assert "Traceback" not in logs
    assert installed.files() == before, "the installation was written to at run time"
