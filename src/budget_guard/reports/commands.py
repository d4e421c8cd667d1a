"""The report commands: their options, and how each runs. ``budget-guard`` and the
``kubectl-llmbudget`` plugin register the same commands (``add_commands``) and run them
the same way (``run``), so both answer alike and end with the same exit codes
(``reports.outcome.Exit``, documented in ``docs/reports.md``)."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from budget_guard.domain.instants import rfc3339, utc_now
from budget_guard.domain.manifest import ManifestError, parse_instant
from budget_guard.domain.review import BudgetReview
from budget_guard.domain.spend import DayRange, SpendQueryError, parse_group_by
from budget_guard.domain.whatif import simulate
from budget_guard.options import Option, add_options
from budget_guard.reports.export import (
    REQUEST_FIELDS,
    checked_rows,
    request_records,
    spend_records,
    write_records,
)
from budget_guard.reports.html import html_document
from budget_guard.reports.outcome import Exit, ReportError
from budget_guard.reports.render import csv_text, json_document, markdown, text_table
from budget_guard.reports.simulate import simulation_json, simulation_text
from budget_guard.reports.sources import (
    cluster_reviews,
    ledger,
    load_budgets,
    standalone_reviews,
)
from budget_guard.store.connect import checked_redis_url
from budget_guard.store.history import read_attribution, read_settled, sum_attribution
from budget_guard.store.keys import KeySchema

COMMANDS = ("export", "report", "simulate")
REPORT_FORMATS = ("text", "markdown", "csv", "json", "html")
_REDIS = Option(
    "--redis-url",
    "the ledger's Redis (redis://, rediss://, unix://, redis+sentinel://)",
    checked_redis_url,
    "redis://127.0.0.1:6379/0",
)
Clock = Callable[[], dt.datetime]


def add_commands(commands: Any) -> None:
    """Register export, report and simulate on an ``add_subparsers`` result."""
    export = commands.add_parser(
        "export",
        help="chargeback data: attributed spend by tenant, feature, model, user, day",
        description="Attributed spend of UTC days --from..--to (both included), grouped; its "
        "totals equal the ledger's counters for the same days. Exit codes: docs/reports.md.",
    )
    _period(export)
    export.add_argument(
        "--group-by",
        metavar="DIMS",
        help="comma-separated: tenant, feature, model, user, day (default: tenant,feature,model)",
    )
    export.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    export.add_argument(
        "--tenant", action="append", default=[], help="only this tenant (repeatable)"
    )
    export.add_argument(
        "--requests",
        action="store_true",
        help="the settled requests themselves (from the bounded stream: recent days only)",
    )
    _output(export)
    add_options(export, [_REDIS])

    report = commands.add_parser(
        "report",
        help="the monthly review: allocated, spent, year to date, trend, forecast, action",
        description="One row per budget, read from the cluster's LLMBudget statuses, or with "
        "--budgets from budget files and the ledger (standalone). Exit codes: docs/reports.md.",
    )
    report.add_argument("--format", choices=REPORT_FORMATS, default="text")
    report.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="cluster mode: only this namespace (repeatable; default: all)",
    )
    report.add_argument("--kubeconfig", type=Path, help="cluster mode: the kubeconfig to use")
    report.add_argument(
        "--budgets", type=Path, metavar="DIR", help="standalone mode: budget files (YAML/JSON)"
    )
    report.add_argument(
        "--at",
        metavar="TIME",
        help="standalone mode: the review as of this RFC 3339 time (e.g. a month's last moment, "
        "2026-11-30T23:59:59Z); default now",
    )
    _output(report)
    add_options(report, [_REDIS])

    what_if = commands.add_parser(
        "simulate",
        help="replay the recorded history against proposed budgets",
        description="Who the proposed budgets would have blocked, when, and how much spend "
        "they would have denied. Exit 3 when a --must-not-block tenant would have been "
        "blocked (a gate for CI or an Argo CD PreSync hook).",
    )
    what_if.add_argument(
        "--budgets", type=Path, metavar="DIR", required=True, help="the proposed budget files"
    )
    _period(what_if)
    what_if.add_argument(
        "--must-not-block",
        action="append",
        default=[],
        metavar="TENANT",
        help="exit 3 if this tenant would have been blocked (repeatable)",
    )
    what_if.add_argument("--format", choices=("text", "json"), default="text")
    _output(what_if)
    add_options(what_if, [_REDIS])


def _period(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="start", metavar="DAY", help="first UTC day, 2026-11-01")
    parser.add_argument("--to", dest="end", metavar="DAY", help="last UTC day, 2026-11-30")


def _output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", type=Path, help="write here instead of stdout")


def run(args: argparse.Namespace, clock: Clock = utc_now) -> int:
    """Run the report command ``args.command``; returns its exit code."""
    command = {"export": _export, "report": _report, "simulate": _simulate}[args.command]
    try:
        text, code = asyncio.run(command(args, clock))
    except (SpendQueryError, ManifestError) as error:
        return _fail(args.command, Exit.USAGE, str(error))
    except ReportError as error:
        return _fail(args.command, error.code, str(error))
    if args.output is not None:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    return code


def _fail(command: str, code: Exit, message: str) -> int:
    print(f"budget-guard {command}: {message}", file=sys.stderr)
    return code


async def _export(args: argparse.Namespace, clock: Clock) -> tuple[str, Exit]:
    period = DayRange.parse(args.start, args.end)
    tenants = frozenset(args.tenant) if args.tenant else None
    keys = KeySchema()
    if args.requests:
        start = dt.datetime.combine(period.first, dt.time(), dt.UTC)
        end = dt.datetime.combine(period.last + dt.timedelta(days=1), dt.time(), dt.UTC)
        async with ledger(args.redis_url) as client:
            settled = await read_settled(client, keys, start, end)
        chosen = [r for r in settled if tenants is None or (r.tenant or "") in tenants]
        if not chosen:
            raise ReportError(
                Exit.NO_DATA,
                f"no settled requests in the stream from {period.first} to {period.last} (it "
                "keeps recent requests only: see docs/reports.md)",
            )
        return write_records(request_records(chosen), REQUEST_FIELDS, args.format), Exit.OK
    group_by = parse_group_by(args.group_by)
    async with ledger(args.redis_url) as client:
        found = await sum_attribution(client, keys, period.days(), group_by, tenants=tenants)
    rows = checked_rows(found, period, tenants)
    fields = (*group_by, "requests", "cost_usd", "cost_micros")
    return write_records(spend_records(rows, group_by), fields, args.format), Exit.OK


def _at(args: argparse.Namespace, clock: Clock) -> dt.datetime:
    if args.at is None:
        return clock()
    return parse_instant(args.at, "--at")


async def _report(args: argparse.Namespace, clock: Clock) -> tuple[str, Exit]:
    return _rendered(args, *await _reviews(args, clock)), Exit.OK


async def _reviews(
    args: argparse.Namespace, clock: Clock
) -> tuple[list[BudgetReview], list[str], dt.datetime, str]:
    if args.budgets is not None:
        if args.namespace or args.kubeconfig:
            raise ReportError(Exit.USAGE, "--budgets reads files: drop --namespace/--kubeconfig")
        at = _at(args, clock)
        reviews = await standalone_reviews(args.budgets, args.redis_url, at)
        skipped: list[str] = []
        source = f"budget files {args.budgets} and the ledger"
    else:
        if args.at is not None:
            raise ReportError(
                Exit.USAGE, "--at needs --budgets: the cluster holds the current period only"
            )
        at = clock()
        reviews, skipped = await cluster_reviews(args.namespace, args.kubeconfig)
        source = "the cluster's LLMBudget statuses"
    if not reviews:
        raise ReportError(Exit.NO_DATA, "no budget has a review yet: " + "; ".join(skipped))
    return reviews, skipped, at, source


def _rendered(
    args: argparse.Namespace,
    reviews: list[BudgetReview],
    skipped: list[str],
    at: dt.datetime,
    source: str,
) -> str:
    title = "LLM budget review"
    generated = f"As of {rfc3339(at)}, from {source}."
    if args.format == "json":
        return json_document(
            reviews, {"generatedAt": rfc3339(at), "source": source, "notReviewed": skipped}
        )
    if args.format == "csv":
        return csv_text(reviews)
    if args.format == "markdown":
        return markdown(reviews, title) + "".join(f"- {note}\n" for note in skipped)
    if args.format == "html":
        return html_document(reviews, title, generated)
    return text_table(reviews) + "".join(f"{note}\n" for note in skipped)


async def _simulate(args: argparse.Namespace, clock: Clock) -> tuple[str, Exit]:
    period = DayRange.parse(args.start, args.end)
    snapshot = load_budgets(args.budgets)
    async with ledger(args.redis_url) as client:
        attributed = await read_attribution(client, KeySchema(), period.days(), users=True)
    if not attributed.days_with_spend:
        raise ReportError(
            Exit.NO_DATA, f"no spend recorded from {period.first} to {period.last} to replay"
        )
    proposed = [*snapshot.budgets]
    result = simulate(proposed, attributed.cells)
    unknown = sorted(set(args.must_not_block) - result.tenants_seen)
    if unknown:
        raise ReportError(
            Exit.UNKNOWN,
            f"--must-not-block: unknown tenant {unknown[0]!r}: no spend recorded for it from "
            f"{period.first} to {period.last}",
        )
    notes = []
    if attributed.days_without_users:
        days = sorted(attributed.days_without_users)
        notes.append(
            f"Per-user budgets were replayed without {days[0]}..{days[-1]}: per-user detail "
            "is kept for the per-user window only."
        )
    if args.format == "json":
        text = simulation_json(result, period, notes)
    else:
        text = simulation_text(result, period, len(proposed), notes)
    blocked = sorted(set(args.must_not_block) & set(result.tenants_blocked))
    if blocked:
        print(
            f"budget-guard simulate: tenant {', '.join(blocked)} would have been blocked",
            file=sys.stderr,
        )
        return text, Exit.BLOCKED
    return text, Exit.OK


def parse_and_run(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None, clock: Clock = utc_now
) -> int:
    args = parser.parse_args(argv)
    if getattr(args, "command", None) not in COMMANDS:
        parser.print_help()
        return Exit.USAGE
    return run(args, clock)
