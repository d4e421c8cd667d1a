"""Budget manifests and price tables from disk (YAML or JSON)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from budget_guard.domain.budget import Budget, BurstPool
from budget_guard.domain.manifest import ParsedManifests, parse_manifests
from budget_guard.domain.pricing import PriceTable, build_price_table

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
# libyaml's safe loader when PyYAML has it (thousands of budgets parse in a fraction of
# the time), else the pure-Python one: both accept the same documents.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def manifest_files(path: Path) -> list[Path]:
    """``path`` itself, or every manifest file under it (sorted, hidden files skipped)."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ValueError(f"{path}: no such file or directory")
    return sorted(
        candidate
        for candidate in path.rglob("*")
        if candidate.is_file()
        and candidate.suffix in MANIFEST_SUFFIXES
        and not any(part.startswith(".") for part in candidate.relative_to(path).parts)
    )


def fingerprint(paths: list[Path]) -> tuple[tuple[str, int, int], ...]:
    """What changes when a file is edited, added or removed (cheap: no reading)."""
    stamps = []
    for path in paths:
        try:
            stat = path.stat()
        except OSError:
            continue
        stamps.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(stamps)


def load_manifests(path: Path) -> ParsedManifests:
    """Every LLMBudget and BurstBudget under ``path``; a ValueError names file and field."""
    budgets: list[Budget] = []
    pools: list[BurstPool] = []
    for file in manifest_files(path):
        try:
            documents = list(yaml.load_all(file.read_text(), Loader=_SAFE_LOADER))
        except yaml.YAMLError as error:
            raise ValueError(f"{file}: not valid YAML: {error}") from None
        parsed = parse_manifests(documents, source=str(file))
        budgets.extend(parsed.budgets)
        pools.extend(parsed.pools)
    return ParsedManifests(tuple(budgets), tuple(pools))


def load_price_table(path: Path | None) -> PriceTable:
    """The shipped defaults, with ``path`` (if any) merged over them."""
    if path is None:
        return build_price_table()
    try:
        document: Any = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"{path}: cannot read the price table: {error}") from None
    if not isinstance(document, Mapping):
        raise ValueError(f"{path}: a price table is a mapping with a models key")
    try:
        return build_price_table(document)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
