"""tiktoken encodings, loaded once, with a clear account of what could not be loaded.

tiktoken fetches vocabularies from the network on first use and caches them under
``TIKTOKEN_CACHE_DIR``. Offline, an encoding that is not cached cannot be loaded;
the estimator then falls back (``cl100k_base``, then bytes/4) and says so.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from budget_guard.domain.tokens import Tokenizer, TokenizerSet

log = logging.getLogger(__name__)

DEFAULT_ENCODINGS = ("o200k_base", "cl100k_base")


class TiktokenTokenizer:
    def __init__(self, encoding: object, name: str) -> None:
        self._encode = encoding.encode_ordinary  # type: ignore[attr-defined]
        self.name = name

    def count(self, text: str) -> int:
        return len(self._encode(text))


@dataclass(frozen=True)
class LoadedTokenizers:
    tokenizers: TokenizerSet
    failures: dict[str, str] = field(default_factory=dict)


def load_tokenizers(encodings: Iterable[str] = DEFAULT_ENCODINGS) -> LoadedTokenizers:
    """Load each encoding; one that fails is reported, never fatal."""
    import tiktoken  # imported here: loading it is part of start-up, not of import

    loaded: dict[str, Tokenizer] = {}
    failures: dict[str, str] = {}
    for name in dict.fromkeys(encodings):
        try:
            loaded[name] = TiktokenTokenizer(tiktoken.get_encoding(name), f"tiktoken:{name}")
        except Exception as error:
            failures[name] = f"{type(error).__name__}: {error}"
            log.warning(
                "tiktoken encoding %s could not be loaded (%s); estimates fall back",
                name,
                failures[name],
            )
    return LoadedTokenizers(TokenizerSet(loaded), failures)
