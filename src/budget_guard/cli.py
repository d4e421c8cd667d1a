"""The ``budget-guard`` command line."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from budget_guard import __version__, logs


def build_parser() -> argparse.ArgumentParser:
    from budget_guard.webhook.settings import build_parser as webhook_options

    parser = argparse.ArgumentParser(
        prog="budget-guard",
        description="Hard and soft spending limits for LLM APIs, enforced at the gateway.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    webhook = commands.add_parser(
        "webhook",
        help="the ext_authz service for Envoy and Istio",
        description="Decide every LLM request inline (Envoy ext_authz HTTP) and settle usage.",
    )
    webhook_options(webhook)
    demo = commands.add_parser(
        "demo",
        help="the guard on example budgets with a temporary Redis and sample traffic",
    )
    demo.add_argument(
        "--budgets", type=Path, default=None, help="budget YAML (default: examples/budgets)"
    )
    return parser


def run_webhook(args: argparse.Namespace) -> int:
    from budget_guard.webhook.app import serve
    from budget_guard.webhook.settings import WebhookSettings

    settings = WebhookSettings.from_namespace(args)
    logs.configure("webhook", settings.log_level)
    asyncio.run(serve(settings))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "webhook":
        return run_webhook(args)
    if args.command == "demo":
        from budget_guard.demo.run import EXAMPLES
        from budget_guard.demo.run import main as demo

        return demo(args.budgets or EXAMPLES)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
