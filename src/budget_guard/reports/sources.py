"""Where the reports read from: the ledger (Redis) and budget files in standalone mode,
or the cluster's LLMBudgets and the status the operator wrote. Failures leave as
``ReportError`` with the exit code scripts can rely on (``reports.outcome``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from kubernetes.client.exceptions import ApiException
from redis.asyncio import Redis

from budget_guard.domain.manifest import ManifestError, parse_budget
from budget_guard.domain.resolution import BudgetSnapshot
from budget_guard.domain.review import BudgetReview, review_of
from budget_guard.loaders.files import load_manifests
from budget_guard.operator.kube import KubeApi
from budget_guard.operator.status import review_from_status
from budget_guard.reports.outcome import Exit, ReportError
from budget_guard.store.connect import RedisUrlError, describe, ledger_reader
from budget_guard.store.errors import LedgerUnavailable
from budget_guard.store.history import read_review_history
from budget_guard.store.keys import KeySchema
from budget_guard.store.usage import read_usage


@asynccontextmanager
async def ledger(url: str) -> AsyncIterator[Redis]:
    """A client of the ledger; an unreachable one leaves as ``ReportError`` (exit 6)."""
    try:
        client = ledger_reader(url, socket_connect_timeout=5, socket_timeout=30)
    except RedisUrlError as error:
        raise ReportError(Exit.USAGE, f"--redis-url: {error}") from None
    try:
        yield client
    except LedgerUnavailable as error:
        raise ReportError(
            Exit.UNAVAILABLE, f"the ledger at {describe(url)} cannot be read: {error}"
        ) from None
    finally:
        await client.aclose()


def load_budgets(path: Path) -> BudgetSnapshot:
    try:
        parsed = load_manifests(path)
    except (ValueError, OSError) as error:
        raise ReportError(Exit.USAGE, f"--budgets: {error}") from None
    snapshot = BudgetSnapshot(parsed.budgets, parsed.pools)
    if not snapshot.budgets:
        raise ReportError(Exit.NO_DATA, f"--budgets: no LLMBudget in {path}")
    return snapshot


async def standalone_reviews(budgets: Path, redis_url: str, at: dt.datetime) -> list[BudgetReview]:
    """The review of every budget in the files, from the ledger's counters and history."""
    snapshot = load_budgets(budgets)
    keys = KeySchema()
    async with ledger(redis_url) as client:
        usages = await read_usage(client, snapshot, at, keys)
        histories = await read_review_history(client, keys, snapshot.budgets, at)
    reviews = []
    for usage, (days, hours) in zip(usages, histories, strict=True):
        review, _ = review_of(usage.budget, usage, days, hours, at)
        reviews.append(review)
    return reviews


async def cluster_reviews(
    namespaces: Sequence[str], kubeconfig: Path | None
) -> tuple[list[BudgetReview], list[str]]:
    """The review the operator wrote into each LLMBudget's status, and notes on those
    without one (not enforced yet, rejected, or never synced)."""
    try:
        kube = KubeApi.connect(kubeconfig)
        try:
            manifests = await kube.list_resources("llmbudgets", namespaces)
        finally:
            kube.close()
    except (ApiException, OSError) as error:
        raise ReportError(Exit.UNAVAILABLE, f"the cluster cannot be read: {error}") from None
    except Exception as error:  # the client's configuration errors have no common base
        raise ReportError(Exit.UNAVAILABLE, f"no cluster to read: {error}") from None
    where = f" in namespace {', '.join(namespaces)}" if namespaces else ""
    if not manifests:
        raise ReportError(Exit.NO_DATA, f"no LLMBudgets found{where}")
    reviews, skipped = [], []
    for manifest in sorted(manifests, key=_key):
        try:
            budget = parse_budget(manifest)
        except ManifestError as error:
            skipped.append(f"{_key(manifest)}: rejected ({error})")
            continue
        review = review_from_status(budget, manifest.get("status") or {})
        if review is None:
            skipped.append(f"{budget.id}: no review in its status yet (not enforced or synced)")
        else:
            reviews.append(review)
    return reviews, skipped


def _key(manifest: dict[str, object]) -> str:
    metadata = manifest.get("metadata")
    if not isinstance(metadata, dict):
        return "?"
    return f"{metadata.get('namespace', 'default')}/{metadata.get('name', '?')}"
