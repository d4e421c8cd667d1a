"""Structured JSON logs, one object per line, for every process of the project.

Built on python-json-logger: fields passed as ``extra={...}`` (request_id, decision,
budget, ...) become keys of the object. Each line has ``ts`` (UTC, ISO 8601 with
milliseconds), ``level`` (lower case), ``component``, ``logger``, ``msg`` and, for an
error, ``exception``. Prompt text is never logged: callers pass ids, amounts and
names only.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from typing import Any

from pythonjsonlogger.json import JsonFormatter

# Kopf passes its whole settings object and posting flags along with each record.
_NOT_LOGGED = ("settings", "k8s_skip")


class _ProjectFormatter(JsonFormatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - logging's name
        instant = dt.datetime.fromtimestamp(record.created, dt.UTC)
        return instant.isoformat(timespec="milliseconds")

    def process_log_record(self, log_record: dict[str, Any]) -> dict[str, Any]:
        log_record["level"] = str(log_record.get("level", "")).lower()
        if "exc_info" in log_record:
            log_record["exception"] = log_record.pop("exc_info")
        for name in _NOT_LOGGED:
            log_record.pop(name, None)
        return log_record


def json_formatter(component: str) -> logging.Formatter:
    return _ProjectFormatter(
        "{asctime}{levelname}{name}{message}",
        style="{",
        rename_fields={"asctime": "ts", "levelname": "level", "name": "logger", "message": "msg"},
        static_fields={"component": component},
        json_default=str,
        json_ensure_ascii=False,
    )


def configure(component: str, level: str = "INFO") -> None:
    """JSON lines on stderr for the whole process."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(json_formatter(component))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
