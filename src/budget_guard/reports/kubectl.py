"""``kubectl-llmbudget``: the report commands as a kubectl plugin (``kubectl llmbudget
report``). kubectl finds the executable on PATH and passes the rest of the command line;
the plugin reads the cluster kubectl is pointed at ($KUBECONFIG, or --kubeconfig)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from budget_guard.reports.commands import add_commands, parse_and_run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubectl llmbudget",
        description="LLM Budget Guard: the monthly review, chargeback export and what-if.",
    )
    add_commands(parser.add_subparsers(dest="command", metavar="COMMAND"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return parse_and_run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
