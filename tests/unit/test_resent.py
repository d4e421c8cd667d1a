"""Resent conversations (webhook.resent): a body that continues the previous turn is
read from where that turn's messages closed, and estimated exactly as if read whole."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from budget_guard.domain.pricing import default_price_table
from budget_guard.domain.tokens import (
    MessageTokenCache,
    PrefixNotCounted,
    RequestEstimator,
    TokenEstimate,
    TokenizerSet,
)
from budget_guard.webhook.resent import ResentConversations

PRICE = default_price_table().models["gpt-4.1"]
ESTIMATOR = RequestEstimator(TokenizerSet({}), MessageTokenCache())
WHO = ("acme", "alice", "agent")


def message(role: str, turn: int, size: int = 900) -> dict[str, str]:
    text = f"turn {turn} [{role}] " + "lorem ipsum ] [ {dolor} sit amet " * (size // 33)
    return {"role": role, "content": text}


def transcript(turns: int) -> list[dict[str, str]]:
    messages = [message("system", 0, 3000)]
    for turn in range(1, turns + 1):
        messages += [message("user", turn), message("tool", turn), message("assistant", turn)]
    return messages


Serialise = Callable[[list[dict[str, str]]], bytes]


def chat(messages: list[dict[str, str]]) -> bytes:  # as the Python SDKs write it
    return json.dumps({"model": "gpt-4.1", "messages": messages, "max_tokens": 500}).encode()


def compact_with_tools(messages: list[dict[str, str]]) -> bytes:
    body = {
        "messages": messages,
        "model": "gpt-4.1",
        "tools": [{"type": "function", "function": {"name": "grep", "parameters": {}}}],
        "stop": ["]", "}]"],
    }
    return orjson.dumps(body)


def settings_first(messages: list[dict[str, str]]) -> bytes:
    body = {"model": "gpt-4.1", "temperature": 0.2, "messages": messages}
    return json.dumps(body, separators=(",", ":")).encode()


def gemini(messages: list[dict[str, str]]) -> bytes:
    contents = [{"role": m["role"], "parts": [{"text": m["content"]}]} for m in messages]
    body = {"contents": contents, "generationConfig": {"maxOutputTokens": 500}}
    return json.dumps(body).encode()


def responses_api(messages: list[dict[str, str]]) -> bytes:  # an agent's items
    items: list[dict[str, Any]] = []
    for number, m in enumerate(messages):
        if m["role"] == "tool":
            items.append(
                {
                    "type": "function_call",
                    "call_id": f"c{number}",
                    "name": "grep",
                    "arguments": json.dumps({"q": m["content"][:40]}),
                }
            )
            items.append(
                {"type": "function_call_output", "call_id": f"c{number}", "output": m["content"]}
            )
        else:
            items.append({"role": m["role"], "content": m["content"]})
    body = {"model": "gpt-4.1", "instructions": "Be careful.", "input": items}
    return json.dumps(body).encode()


def turns_through(resent: ResentConversations, bodies: list[bytes]) -> list[tuple[int, int, bool]]:
    """Each turn as the decider does it: (tokens read whole, tokens read as resent,
    whether it was read as resent)."""
    seen = []
    for raw in bodies:
        whole = ESTIMATOR.estimate(orjson.loads(raw), PRICE)
        key = resent.key(WHO, raw)
        continued = resent.read(key, raw)
        if continued is None:
            document: dict[str, Any] = orjson.loads(raw)
            estimate = ESTIMATOR.estimate(document, PRICE)
        else:
            document = continued.document
            estimate = ESTIMATOR.estimate(document, PRICE, counted=continued.counted)
        resent.remember(key, raw, document, estimate)
        seen.append((whole.input_tokens, estimate.input_tokens, continued is not None))
    return seen


@pytest.mark.parametrize(
    "serialise", [chat, compact_with_tools, settings_first, gemini, responses_api]
)
def test_each_turn_is_read_from_the_last_and_estimated_as_if_read_whole(
    serialise: Serialise,
) -> None:
    conversation = transcript(40)
    bodies = [serialise(conversation[: 1 + 3 * turn]) for turn in range(1, 41)]
    resent = ResentConversations(min_body=16 * 1024)
    seen = turns_through(resent, bodies)
    assert [whole for whole, _, _ in seen] == [counted for _, counted, _ in seen]
    first_tracked = next(i for i, raw in enumerate(bodies) if len(raw) >= 16 * 1024)
    assert [hit for _, _, hit in seen] == [i > first_tracked for i in range(len(bodies))]
    assert resent.hits == len(bodies) - first_tracked - 1


def test_a_conversation_edited_earlier_or_reserialised_is_read_whole() -> None:
    conversation = transcript(20)
    resent = ResentConversations(min_body=1024)
    edited = [dict(m) for m in conversation]
    edited[2]["content"] += " (edited)"
    pretty = json.dumps({"model": "gpt-4.1", "messages": conversation}, indent=2).encode()
    bodies = [chat(conversation[:31]), chat(edited[:34]), chat(edited[:37]), pretty]
    seen = turns_through(resent, bodies)
    assert [whole for whole, _, _ in seen] == [counted for _, counted, _ in seen]
    assert [hit for _, _, hit in seen] == [False, False, True, False]


def test_keys_that_could_pass_for_what_the_reader_adds_are_read_as_the_body_says() -> None:
    """A body whose own keys after its messages name "messages" again, or "_", is read
    the way a whole parse reads it (orjson: the last of a duplicated key wins)."""
    conversation = transcript(10)
    resent = ResentConversations(min_body=1024)
    first = chat(conversation[:25])
    again = first[:-1] + b', "messages": [{"role": "user", "content": "short"}]}'
    underscore = first[:-1] + b', "_": [{"role": "user", "content": "x"}]}'
    for raw in (first, again, underscore):
        seen = turns_through(resent, [first, raw])
        assert seen[1][0] == seen[1][1]
    assert turns_through(resent, [first, again])[1][2] is False


def test_counts_of_another_tokenizer_are_not_used() -> None:
    resent = ResentConversations(min_body=1024)
    conversation = transcript(10)
    first, second = chat(conversation[:25]), chat(conversation[:28])
    key = resent.key(WHO, first)
    elsewhere = TokenEstimate(0, 0, "x", "messages", 123, "some-other-encoding")
    resent.remember(key, first, orjson.loads(first), elsewhere)
    continued = resent.read(resent.key(WHO, second), second)
    assert continued is not None
    with pytest.raises(PrefixNotCounted):
        ESTIMATOR.estimate(continued.document, PRICE, counted=continued.counted)


def test_the_bodies_kept_are_bounded_in_bytes() -> None:
    resent = ResentConversations(max_bytes=100_000, min_body=1024)
    for person in range(20):
        raw = chat(transcript(4)) + b" " * person  # same shape, another conversation
        key = resent.key((f"user-{person}",), raw)
        resent.remember(key, raw, orjson.loads(raw), ESTIMATOR.estimate(orjson.loads(raw), PRICE))
    assert 0 < len(resent) < 20
    assert resent.kept_bytes <= 100_000


texts = st.text(alphabet=st.characters(codec="utf-8"), max_size=40)
chats = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "tool", "assistant"]), "content": texts}
    ),
    min_size=2,
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(
    chats,
    st.integers(min_value=1, max_value=11),
    st.one_of(
        st.none(),  # the conversation continued
        st.tuples(st.integers(min_value=0), st.binary(min_size=1, max_size=3)),  # bytes changed
        st.integers(min_value=1, max_value=60),  # cut short
    ),
    st.dictionaries(st.sampled_from(["model", "_", "tools", "stop"]), texts, max_size=3),
)
@pytest.mark.parametrize("field", ["messages", "contents", "input"])
def test_whatever_the_next_body_is_it_is_read_as_a_whole_parse_reads_it(
    field: str,
    messages: list[dict[str, str]],
    first: int,
    change: Any,
    extra: dict[str, str],
) -> None:
    """Hostile or broken next bodies: never an exception, and whenever the body is read
    from the previous turn it is estimated as reading it whole would."""
    items: list[Any] = messages
    if field == "contents":
        items = [{"role": m["role"], "parts": [{"text": m["content"]}]} for m in messages]
    resent = ResentConversations(min_body=0)
    body = {"model": "gpt-4.1", field: items[:first], **extra}
    previous = json.dumps(body).encode()
    key = resent.key(WHO, previous)
    resent.remember(key, previous, orjson.loads(previous), _estimate(orjson.loads(previous)))
    raw = json.dumps({**body, field: items}).encode()
    if isinstance(change, tuple):
        at, replacement = change
        at %= len(raw)
        raw = raw[:at] + replacement + raw[at + len(replacement) :]
    elif isinstance(change, int):
        raw = raw[: max(0, len(raw) - change)]
    continued = resent.read(key, raw)
    if continued is None:
        return
    whole = orjson.loads(raw)  # what was read from the previous turn is valid JSON whole
    expected = ESTIMATOR.estimate(whole, PRICE)
    got = ESTIMATOR.estimate(continued.document, PRICE, counted=continued.counted)
    assert got.input_tokens == expected.input_tokens
    assert {k: v for k, v in continued.document.items() if k != field} == {
        k: v for k, v in whole.items() if k != field
    }


def _estimate(document: dict[str, Any]) -> TokenEstimate:
    return ESTIMATOR.estimate(document, PRICE)


def test_responses_items_followed_by_bare_texts_are_read_whole() -> None:
    """Alone, texts in ``input`` would be counted as a prompt, not as items: a body
    whose new items are only texts is read whole, and estimated as a whole parse does."""
    resent = ResentConversations(min_body=1024)
    items: list[Any] = [{"role": "user", "content": "x " * 400} for _ in range(4)]
    first = json.dumps({"model": "gpt-4.1", "input": items}).encode()
    texts = json.dumps({"model": "gpt-4.1", "input": [*items, "more", "and more"]}).encode()
    seen = turns_through(resent, [first, texts])
    assert seen[1][0] == seen[1][1]
    assert seen[1][2] is False
