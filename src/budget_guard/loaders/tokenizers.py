"""tiktoken encodings, loaded once, with a clear account of what could not be loaded.

tiktoken fetches vocabularies from the network on first use and caches them under
``TIKTOKEN_CACHE_DIR``. Offline, an encoding that is not cached cannot be loaded;
the estimator then falls back (``cl100k_base``, then bytes/4) and says so.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from budget_guard.domain.tokens import Tokenizer, TokenizerSet

log = logging.getLogger(__name__)

DEFAULT_ENCODINGS = ("o200k_base", "cl100k_base")


# tiktoken's byte-pair merging takes time quadratic in the length of one pre-token (a
# run with no space or punctuation): 1 MB of one letter took 354 ms here, against 37 ms
# for 1 MB of prose. A request made of such runs would hold the event loop of every
# check behind it, so runs longer than this are counted in slices of this length (at
# most about one token more per slice: an estimate, settled exactly afterwards).
LONG_RUN_CHARS = 2048
_LONG_RUN = re.compile(rf"\S{{{LONG_RUN_CHARS},}}")


def _may_have_long_run(text: str) -> bool:
    """Is there an aligned block with neither a space nor a newline? Any run of twice
    the length holds one; prose is cleared with one short search per block."""
    find = text.find
    for at in range(0, len(text), LONG_RUN_CHARS):
        end = at + LONG_RUN_CHARS
        if find(" ", at, end) < 0 and find("\n", at, end) < 0:
            return True
    return False


class TiktokenTokenizer:
    def __init__(self, encoding: object, name: str) -> None:
        self._encode = encoding.encode_ordinary  # type: ignore[attr-defined]
        self.name = name

    def count(self, text: str) -> int:
        if len(text) < 2 * LONG_RUN_CHARS or not _may_have_long_run(text):
            return len(self._encode(text))
        total, start = 0, 0
        for run in _LONG_RUN.finditer(text):
            total += len(self._encode(text[start : run.start()])) if run.start() > start else 0
            total += self._count_run(run.group())
            start = run.end()
        return total + len(self._encode(text[start:]))

    def _count_run(self, run: str) -> int:
        encode = self._encode
        return sum(
            len(encode(run[at : at + LONG_RUN_CHARS])) for at in range(0, len(run), LONG_RUN_CHARS)
        )


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
