"""Resent conversations: an agent loop sends its whole conversation again every turn,
with a few new items at the end (chat ``messages``, Gemini ``contents``, Responses API
``input``: ``domain.tokens.conversation_field``). When a body starts, byte for byte,
with the previous turn's body up to the bracket that closed that list, only the rest
is parsed and counted: a check's cost grows with what is new, not with the
conversation.

Why it is sound: the same bytes parse the same way, so up to that offset the new body
is the previous one, inside its list after its last item. The offset was checked on
the body it came from: parsed from there, that body gives exactly the keys and values
that followed the list (no other bracket does: one inside a string or deeper in an
item leaves brackets unbalanced, another array's leaves other keys). What follows the
offset in the new body is parsed as JSON like the rest, under a key no client can
know; anything unexpected (another shape or serialisation, the list's key twice,
compression) reads the body whole, as before. A turn's counts are keyed by the
identity and the body's first bytes; another conversation with the same start only
takes the slower path.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from budget_guard.domain.request_ids import new_request_id
from budget_guard.domain.tokens import CountedPrefix, TokenEstimate

_COMMA, _CLOSE = ord(","), ord("]")
_KEY_BYTES = 4096  # a conversation is told apart by its identity and its start
_CANDIDATES = 16  # brackets tried from the end, when a body's messages closing is sought
_TAIL_MAX = 64 * 1024  # what may follow a body's messages (model, tools, options)


class Resent(NamedTuple):
    document: dict[str, Any]  # the body, with only its new items in its conversation list
    counted: CountedPrefix  # the items left out: the list's key, their tokens


@dataclass(frozen=True, slots=True)
class _Turn:
    body: bytes  # the previous body (kept whole: a copy of its start would cost more)
    closing: int  # the offset of the "]" that closed its conversation list
    before: dict[str, Any]  # its top-level keys before that list, with their values
    counted: CountedPrefix  # the list's key, and its items' tokens by tokenizer name


class ResentConversations:
    """The last turn of each recent conversation; at most ``max_bytes`` of bodies, the
    least recently continued dropped first. Bodies under ``min_body`` bytes are parsed
    whole (cheap already). One per process, on its event loop."""

    def __init__(self, max_bytes: int = 64 * 2**20, min_body: int = 16 * 1024) -> None:
        self.max_bytes = max_bytes
        self.min_body = min_body
        self._turns: OrderedDict[Hashable, _Turn] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        # What follows an offset inside an array parses as this object's first value:
        # under a key no client can know, so that no key of a body can stand for it.
        self._key = new_request_id()
        self._opening = b'{"%s":[' % self._key.encode()

    def key(self, identity: Hashable, raw: bytes) -> Hashable:
        return identity, hash(raw[:_KEY_BYTES])

    def read(self, key: Hashable, raw: bytes) -> Resent | None:
        """The body, read from where the previous turn of ``key`` ended; None when it
        does not continue that turn (read it whole)."""
        turn = self._turns.get(key)
        if turn is None:
            return None
        closing = turn.closing
        if len(raw) <= closing or raw[closing] not in (_COMMA, _CLOSE):
            return None
        if not raw.startswith(memoryview(turn.body)[:closing]):
            return None
        rest = raw[closing + 1 :] if raw[closing] == _COMMA else raw[closing:]
        try:
            after = orjson.loads(self._opening + rest)
        except orjson.JSONDecodeError:
            return None
        field = turn.counted.field
        if not isinstance(after, dict) or field in after:
            return None
        new = after.pop(self._key)
        if not isinstance(new, list) or (raw[closing] == _COMMA and not new):
            return None
        if field == "input" and new and not any(isinstance(item, Mapping) for item in new):
            return None  # alone, texts would be counted as a prompt, not as items
        self._turns.move_to_end(key)
        self.hits += 1
        return Resent({**turn.before, field: new, **after}, turn.counted)

    def remember(
        self, key: Hashable, raw: bytes, document: Mapping[str, Any], estimate: TokenEstimate
    ) -> None:
        """What the next turn of ``key`` needs: this body (``document``, as read), and
        what its conversation list counted (``estimate``)."""
        if len(raw) < self.min_body:
            return
        field = estimate.conversation
        closing = self._list_closing(raw, document, field) if field else None
        self._forget(key)
        if field is None or closing is None or len(raw) > self.max_bytes:
            return
        keys = list(document)
        before = {name: document[name] for name in keys[: keys.index(field)]}
        counted = CountedPrefix(field, {estimate.tokenizer: estimate.conversation_tokens})
        self._turns[key] = _Turn(raw, closing, before, counted)
        self._bytes += len(raw)
        while self._bytes > self.max_bytes:
            self._forget(next(iter(self._turns)))

    def _forget(self, key: Hashable) -> None:
        turn = self._turns.pop(key, None)
        if turn is not None:
            self._bytes -= len(turn.body)

    def _list_closing(self, raw: bytes, document: Mapping[str, Any], field: str) -> int | None:
        """The offset in ``raw`` of the "]" that closes its top-level list ``field``
        (``raw`` parsed as ``document``), or None: the bracket after which the body parses
        to exactly the keys and values that follow that list."""
        if not isinstance(document.get(field), list):
            return None
        keys = list(document)
        following = keys[keys.index(field) + 1 :]
        end = len(raw)
        for _ in range(_CANDIDATES):
            candidate = raw.rfind(b"]", max(0, len(raw) - _TAIL_MAX), end)
            if candidate < 0:
                return None
            end = candidate
            try:
                after = orjson.loads(self._opening + raw[candidate:])
            except orjson.JSONDecodeError:
                continue
            if (
                isinstance(after, dict)
                and after.pop(self._key, None) == []
                and list(after) == following
                and all(after[name] == document[name] for name in following)
            ):
                return candidate
        return None

    def __len__(self) -> int:
        return len(self._turns)

    @property
    def kept_bytes(self) -> int:
        return self._bytes
