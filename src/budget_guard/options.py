"""Command-line options whose defaults come from ``BUDGET_GUARD_<FLAG>`` variables.

Shared by the webhook and the operator, so that every process reads its
environment the same way: a flag wins over its variable, and a variable that does
not parse stops the process with a message naming it.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

ENV_PREFIX = "BUDGET_GUARD_"


def env_name(flag: str) -> str:
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


def parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off", ""):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean")


@dataclass(frozen=True)
class Option:
    flag: str
    help: str
    type: Callable[[str], Any] = str
    default: Any = None
    choices: Sequence[str] | None = None
    # value: --flag VALUE; switch: --flag alone means true (the variable: a boolean);
    # list: --flag VALUE, repeatable (the variable: comma-separated)
    kind: Literal["value", "switch", "list"] = "value"


def _from_environment(option: Option, text: str) -> Any:
    if option.kind == "switch":
        return parse_bool(text)
    if option.kind == "list":
        return [option.type(item.strip()) for item in text.split(",") if item.strip()]
    return option.type(text)


def _explained(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """A type whose ValueError says what is wrong, as argparse's error (argparse would
    otherwise print "invalid ... value" with the raw text, a password included)."""

    def checked(text: str) -> Any:
        try:
            return convert(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    checked.__name__ = getattr(convert, "__name__", "value")
    return checked


def add_options(parser: argparse.ArgumentParser, options: Iterable[Option]) -> None:
    """Add every option to ``parser``; its environment variable supplies the default."""
    for option in options:
        variable = env_name(option.flag)
        default = option.default
        if variable in os.environ:
            try:
                default = _from_environment(option, os.environ[variable])
            except (ValueError, argparse.ArgumentTypeError) as error:
                parser.error(f"{variable}: {error}")
        help_text = f"{option.help} [env {variable}]"
        if option.kind == "switch":
            parser.add_argument(
                option.flag, action="store_true", default=bool(default), help=help_text
            )
        elif option.kind == "list":
            parser.add_argument(
                option.flag,
                type=_explained(option.type),
                action=_Repeated,
                default=list(default or ()),
                help=help_text,
            )
        else:
            parser.add_argument(
                option.flag,
                type=_explained(option.type),
                default=default,
                choices=option.choices,
                help=help_text,
            )


class _Repeated(argparse.Action):
    """Appends each use; the first use replaces the default (flags win over variables)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        current = getattr(namespace, self.dest)
        items = [] if current is self.default else list(current)
        setattr(namespace, self.dest, [*items, values])
