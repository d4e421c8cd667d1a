"""Reading the request body Envoy forwards: whole, cut short, compressed, or not JSON.

A body that cannot be read (cut at Envoy's limit, not JSON, undecodable) is
estimated from its length; a body that claims to be JSON but is malformed is a
clear 400; a body larger than the configured maximum is a 413. Never an exception.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Mapping
from typing import Any, NamedTuple

import orjson

from budget_guard.domain.tokens import CountedPrefix

PARTIAL_BODY_HEADER = "x-envoy-auth-partial-body"
_GZIP_MAGIC = b"\x1f\x8b"
_MODEL_IN_PREFIX = re.compile(rb'"model"\s*:\s*"([^"\\]{1,200})"')
_MODEL_IN_PATH = re.compile(r"/models/([A-Za-z0-9._\-]{1,200})(?::|/|$)")
_DECOMPRESSION_FACTOR = 4  # a compressed body may expand to this many times the maximum


class BadBody(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class ReadBody(NamedTuple):  # per request: a NamedTuple is cheap to build
    document: Mapping[str, Any] | None  # the parsed JSON object, when readable
    length: int  # bytes, after decompression when that succeeded
    model_hint: str | None = None  # a model found in an unreadable body's prefix
    partial: bool = False
    # When the document's conversation list holds only the items after those a resent
    # conversation repeats (webhook.resent): which list, and their tokens.
    counted: CountedPrefix | None = None


def _decompress(raw: bytes, max_bytes: int) -> bytes | None:
    decompressor = zlib.decompressobj(wbits=zlib.MAX_WBITS | 32)  # gzip or zlib header
    try:
        data = decompressor.decompress(raw, max_bytes * _DECOMPRESSION_FACTOR)
    except zlib.error:
        return None
    if decompressor.unconsumed_tail:
        raise BadBody(
            413,
            "body_too_large",
            f"the decompressed body exceeds {max_bytes * _DECOMPRESSION_FACTOR} bytes",
        )
    return data


def _looks_like_json(raw: bytes, content_type: str) -> bool:
    if "json" in content_type:
        return True
    stripped = raw.lstrip()
    return stripped[:1] in (b"{", b"[")


def _model_hint(raw: bytes) -> str | None:
    found = _MODEL_IN_PREFIX.search(raw[:4096])
    if found is None:
        return None
    try:
        return found.group(1).decode()
    except UnicodeDecodeError:
        return None


def model_from_path(path: str) -> str | None:
    """Gemini names the model in the path: ``/v1beta/models/gemini-2.5-flash:generateContent``."""
    found = _MODEL_IN_PATH.search(path)
    return found.group(1) if found else None


def plain_json(raw: bytes, headers: Mapping[str, str]) -> bool:
    """Is the body whole, uncompressed JSON (what ``read_body`` would parse as it is)?"""
    return (
        headers.get(PARTIAL_BODY_HEADER, "").lower() != "true"
        and raw[:2] != _GZIP_MAGIC
        and headers.get("content-encoding", "").lower() != "deflate"
        and _looks_like_json(raw, headers.get("content-type", "").lower())
    )


def check_size(raw: bytes, max_bytes: int) -> None:
    """A 413 for a body past the most that is checked."""
    if len(raw) > max_bytes:
        raise BadBody(
            413, "body_too_large", f"the body has {len(raw)} bytes; at most {max_bytes} are checked"
        )


def read_body(raw: bytes, headers: Mapping[str, str], max_bytes: int) -> ReadBody:
    check_size(raw, max_bytes)
    if not raw:
        return ReadBody(None, 0)
    if headers.get(PARTIAL_BODY_HEADER, "").lower() == "true":
        return ReadBody(None, len(raw), _model_hint(raw), partial=True)
    if raw[:2] == _GZIP_MAGIC:
        inflated = _decompress(raw, max_bytes)
        if inflated is None:  # cut short or corrupt: estimate from what arrived
            return ReadBody(None, len(raw))
        raw = inflated
    elif headers.get("content-encoding", "").lower() == "deflate":
        raw = _decompress(raw, max_bytes) or raw
    if not _looks_like_json(raw, headers.get("content-type", "").lower()):
        return ReadBody(None, len(raw), _model_hint(raw))
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as refused:  # invalid UTF-8, NaN, huge numbers; or not JSON
        document = _lenient_json(raw, refused)
    return _as_object(document, len(raw))


def _lenient_json(raw: bytes, refused: orjson.JSONDecodeError) -> Any:
    """Python's own parser, which accepts what orjson refuses (undecodable bytes
    replaced, NaN) and words its errors with a line and column."""
    try:
        return json.loads(raw.decode("utf-8", errors="replace"))
    except json.JSONDecodeError as error:
        raise BadBody(
            400,
            "invalid_json",
            f"the request body is not valid JSON: {error.msg} at line {error.lineno} "
            f"column {error.colno} (character {error.pos})",
        ) from None
    except (RecursionError, ValueError):  # nested too deeply, an integer of 4,300+ digits
        raise BadBody(
            400, "invalid_json", f"the request body cannot be read as JSON: {refused}"
        ) from None


def _as_object(document: Any, length: int) -> ReadBody:
    if not isinstance(document, dict):
        raise BadBody(
            400,
            "invalid_json",
            f"the request body must be a JSON object, got a JSON {type(document).__name__}",
        )
    return ReadBody(document, length)
