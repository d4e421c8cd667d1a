"""The API's pydantic models (the OpenAPI document's schemas) and the domain's usage
parser read the same fields: a field added to one and not the other fails here."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel

from budget_guard.domain.usage import parse_usage, parse_usage_report
from budget_guard.webhook.api_models import (
    AnthropicUsage,
    GeminiUsage,
    OpenAIUsage,
    ResponsesUsage,
    UsageReport,
)
from budget_guard.webhook.openapi import document


class Recording(dict[str, Any]):
    """A dict that remembers which keys were read (and the keys of nested dicts)."""

    def __init__(self, data: dict[str, Any], seen: set[str], path: str = "") -> None:
        super().__init__(data)
        self._seen, self._path = seen, path

    def _wrap(self, key: str, value: Any) -> Any:
        path = f"{self._path}.{key}" if self._path else key
        self._seen.add(path)
        return Recording(value, self._seen, path) if isinstance(value, dict) else value

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return self._wrap(key, super().__getitem__(key)) if key in self else default

    def __getitem__(self, key: str) -> Any:
        return self._wrap(key, super().__getitem__(key))

    def __contains__(self, key: object) -> bool:
        return super().__contains__(key)

    def items(self) -> Iterator[tuple[str, Any]]:  # type: ignore[override]
        for key in list(self.keys()):
            yield key, self._wrap(key, super().__getitem__(key))


def fields_of(model: type[BaseModel], path: str = "") -> set[str]:
    names: set[str] = set()
    for name, info in model.model_fields.items():
        full = f"{path}.{name}" if path else name
        names.add(full)
        nested = info.annotation
        for candidate in getattr(nested, "__args__", (nested,)):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                names |= fields_of(candidate, full)
    return names


def example_of(model: type[BaseModel]) -> dict[str, Any]:
    """Every field set: small counts, nested details filled in."""
    example: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        nested = [
            c
            for c in getattr(info.annotation, "__args__", (info.annotation,))
            if isinstance(c, type) and issubclass(c, BaseModel)
        ]
        example[name] = example_of(nested[0]) if nested else 1
    return example


@pytest.mark.parametrize("model", [OpenAIUsage, ResponsesUsage, AnthropicUsage, GeminiUsage])
def test_each_vendor_model_is_what_the_parser_reads(model: type[BaseModel]) -> None:
    seen: set[str] = set()
    example = example_of(model)
    parse_usage(Recording(example, seen))
    assert seen == fields_of(model)


def test_the_report_model_is_what_the_parser_reads() -> None:
    top_level = set(UsageReport.model_fields)
    read: set[str] = set()
    for variant in (
        {"request_id": "r", "model": "gpt-4o", "usage": {"prompt_tokens": 1}},
        {"request_id": "r", "model": "gemini-2.5-pro", "usageMetadata": {"promptTokenCount": 1}},
        {"request_id": "r", "cost_usd": "0.01"},
    ):
        seen: set[str] = set()
        parse_usage_report(Recording(variant, seen))
        read |= {path.split(".")[0] for path in seen}
    assert read == top_level


def test_the_openapi_document_takes_its_schemas_from_the_models() -> None:
    schemas = document()["components"]["schemas"]
    properties = schemas["UsageReport"]["properties"]
    assert set(properties) == set(UsageReport.model_fields)
    assert set(schemas["OpenAIUsage"]["properties"]) == set(OpenAIUsage.model_fields)
