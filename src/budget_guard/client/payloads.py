"""What a guarded call sends and gets back, as plain data: the request's model, and the
usage of a response in any shape ``domain.usage.parse_usage`` reads."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from budget_guard.client.errors import RequestRefused
from budget_guard.domain.pricing import Usage
from budget_guard.domain.usage import parse_usage


def model_of(request: Mapping[str, Any]) -> str:
    model = request.get("model")
    if not isinstance(model, str) or not model:
        raise RequestRefused(400, "missing_model", "no model: the request needs a model field")
    return model


def plain(value: object) -> object:
    """SDK objects (pydantic models) as the JSON-like data they send."""
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json", exclude_none=True)
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value


def usage_of(response_or_usage: object) -> Usage | None:
    """The usage a response reports (or a usage object or mapping itself); None when
    there is none. A malformed usage is a ValueError naming the field."""
    if response_or_usage is None or isinstance(response_or_usage, Usage):
        return response_or_usage
    if not isinstance(response_or_usage, Mapping) and hasattr(response_or_usage, "usage"):
        return usage_of(response_or_usage.usage)  # an SDK response object
    data = plain(response_or_usage)
    if not isinstance(data, Mapping):
        return None
    if "usage" in data:
        return usage_of(data["usage"])
    return parse_usage(data)
