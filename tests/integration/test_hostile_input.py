"""Hostile input on the check port of a real webhook process, with a real redis-server.

Property-based (hypothesis): any method, path and headers; bodies that are binary,
invalid UTF-8, deeply nested or huge JSON, gzip and deflate bombs; a ``content-length``
shorter or longer than the body (raw sockets). After every example:

- no 5xx but the documented ones (docs/webhook.md: 503 ``budget_unavailable`` and
  ``config_unavailable``; neither can happen here, Redis is up and budgets are loaded);
- no traceback and no error in the webhook's log;
- the ledger holds exactly what was allowed: every counter equals the estimates of the
  allowed requests it covers, and one pending reservation per allowed priced request,
  none for a denied one (leases are off, so counters move only with requests).

Examples are bounded and derandomized (the same inputs on every run) so that the file
runs in seconds; ``FUZZ_EXAMPLES`` below is the number per property.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import json
import re
import socket
import string
import zlib
from collections.abc import Iterator
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from budget_guard.localservices import RedisServer, WebhookProcess
from tests.fixtures.webhook import budget, write_budgets

pytestmark = pytest.mark.redis

FUZZ_EXAMPLES = 60
MAX_BODY_BYTES = 256 * 1024
GATEWAY_TIMEOUT_MS = 1000
DOCUMENTED_5XX = {(503, "budget_unavailable"), (503, "config_unavailable")}

BUDGETS = [
    budget("everyone", "1000000"),  # no scope: every priced request reserves on it
    budget("acme", "1000", tenant="acme"),
    budget("broke", "0.000001", tenant="broke"),  # denies every priced request
]
IDENTITIES: dict[str, dict[str, str]] = {
    "acme": {"x-budget-tenant": "acme", "x-budget-user": "agent-7", "x-budget-feature": "f"},
    "broke": {"x-budget-tenant": "broke", "x-budget-user": "u"},
    "stranger": {"x-budget-tenant": "t-stranger", "x-budget-user": "u"},
    "ambiguous": {"x-budget-tenant": "acme, broke", "x-budget-user": "u"},
    "nobody": {},
}
PRICED_PATHS = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/responses",
    "/v1/embeddings",
    "/v1/messages",
    "/openai/deployments/d1/chat/completions",
    "/v1beta/models/gemini-2.5-flash:generateContent",
    "/gateway/prefix/v1/chat/completions?stream=1",
]
MODELS = ["gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5", "gemini-2.5-flash", "no-such-model", ""]

_TOKEN_CHARS = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~"
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3})[^\r\n]*\r\n")


# -- the webhook, its log and its ledger ---------------------------------------------


@dataclasses.dataclass
class Tally:
    """What the answers say was reserved, to compare with what Redis holds."""

    by_tenant: dict[str, int] = dataclasses.field(default_factory=dict)
    total: int = 0
    reservations: int = 0
    requests: int = 0

    def count(self, identity: str, answer: RawAnswer) -> None:
        self.requests += 1
        if answer.status != 200 or answer.headers.get("x-budget-estimator") == "none":
            return
        cost = int(Decimal(answer.headers["x-budget-estimated-cost-usd"]) * 1_000_000)
        self.total += cost
        self.by_tenant[identity] = self.by_tenant.get(identity, 0) + cost
        self.reservations += 1


@dataclasses.dataclass
class Guarded:
    webhook: WebhookProcess
    redis: redis.Redis
    tally: Tally
    log_offset: int = 0

    @property
    def port(self) -> int:
        return self.webhook.check_port

    def new_log(self) -> str:
        """What the webhook logged since the last call."""
        text = self.webhook.log_path.read_bytes()[self.log_offset :]
        self.log_offset += len(text)
        return text.decode("utf-8", errors="replace")

    def assign(self, budget_name: str) -> int:
        """What one budget's counters hold for requests (``used - leased``)."""
        total = 0
        for key in self.redis.scan_iter(f"bg:*:c:default/{budget_name}:*"):
            if key.endswith(b":users"):
                continue
            used, leased = self.redis.hmget(key, "used", "leased")
            total += int(used or 0) - int(leased or 0)
        return total

    def assert_intact(self) -> None:
        log = self.new_log()
        assert "Traceback" not in log, log
        for line in log.splitlines():
            assert json.loads(line)["level"] not in ("error", "critical"), line
        tally = self.tally
        assert self.assign("everyone") == tally.total
        assert self.assign("acme") == tally.by_tenant.get("acme", 0)
        assert self.assign("broke") == 0
        assert self.redis.zcard("bg:{global}:pending") == tally.reservations


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guarded]:
    workdir = tmp_path_factory.mktemp("hostile")
    budgets = write_budgets(workdir / "budgets", BUDGETS)
    token = workdir / "usage-token"
    token.write_text("hostile-input-token\n")
    args = [
        *("--budgets", str(budgets), "--usage-token-file", str(token)),
        *("--local-leases", "false", "--log-level", "DEBUG", "--log-allowed", "true"),
        *("--max-body-bytes", str(MAX_BODY_BYTES)),
        *("--gateway-timeout-ms", str(GATEWAY_TIMEOUT_MS), "--ledger-timeout-ms", "500"),
        *("--path-prefix", "/gateway/prefix"),
    ]
    with (
        RedisServer(workdir=workdir / "redis") as server,
        WebhookProcess([*args, "--redis-url", server.url], workdir=workdir / "webhook") as webhook,
    ):
        client = redis.Redis.from_url(server.url)
        try:
            yield Guarded(webhook, client, Tally())
        finally:
            client.close()


# -- raw HTTP/1.1 on a socket ---------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RawAnswer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def code(self) -> str | None:
        try:
            return str(json.loads(self.body)["error"]["code"])
        except (ValueError, KeyError, TypeError):
            return None


def exchange(
    port: int, data: bytes, *, half_close: bool = False, until_answers: int = 0
) -> list[RawAnswer]:
    """Send ``data`` on one connection; every answer read until the server closes it
    (or until ``until_answers`` are complete)."""
    head = data.startswith(b"HEAD ")
    with socket.create_connection(("127.0.0.1", port), timeout=15) as connection:
        connection.sendall(data)
        if half_close:
            connection.shutdown(socket.SHUT_WR)
        received = b""
        try:
            while chunk := connection.recv(65536):
                received += chunk
                if until_answers and _complete(received, head, until_answers):
                    break
        except ConnectionResetError:
            pass  # the server closed with unread bytes of ours: what came before stands
    return parse_answers(received, head=head)


def _complete(received: bytes, head: bool, count: int) -> bool:
    try:
        return len(parse_answers(received, head=head)) >= count
    except (AssertionError, ValueError):
        return False


def parse_answers(received: bytes, *, head: bool) -> list[RawAnswer]:
    answers = []
    while received:
        status_line = _STATUS_LINE.match(received)
        assert status_line, received[:200]
        head_end = received.index(b"\r\n\r\n")
        lines = received[status_line.end() : head_end].decode("latin-1").split("\r\n")
        headers = {}
        for line in filter(None, lines):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = 0 if head and not answers else int(headers.get("content-length", "0"))
        body_start = head_end + 4
        body = received[body_start : body_start + length]
        assert len(body) == length, "an answer cut short"
        answers.append(RawAnswer(int(status_line.group(1)), headers, body))
        received = received[body_start + length :]
    return answers


def request_bytes(
    method: str, path: str, headers: dict[str, str], body: bytes, length: int | None = None
) -> bytes:
    declared = len(body) if length is None else length
    head = [f"{method} {path} HTTP/1.1", "host: api.openai.com", "connection: close"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    head.append(f"content-length: {declared}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def assert_no_undocumented_5xx(answers: list[RawAnswer]) -> None:
    for answer in answers:
        assert answer.status < 500 or (answer.status, answer.code) in DOCUMENTED_5XX, answer


# -- strategies -----------------------------------------------------------------------

tokens = st.text(alphabet=_TOKEN_CHARS, min_size=1, max_size=16)
header_values = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=120,
).map(str.strip)
methods = st.one_of(
    st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]), tokens
)
paths = st.one_of(
    st.sampled_from(PRICED_PATHS),
    st.sampled_from(["/", "/v1/models", "/healthz", "/gateway/prefix", "/v1/files/x"]),
    st.binary(max_size=60).map(lambda raw: "/" + quote(raw, safe="/:?&=%")),
    st.builds(
        lambda path, query: f"{path}?{quote(query)}",
        st.sampled_from(PRICED_PATHS[:5]),
        st.text(max_size=40),
    ),
)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=60),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=16,
)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "system", "assistant", "tool", "x"])},
        optional={"content": st.one_of(st.text(max_size=200), json_values)},
    ),
    max_size=4,
)
token_caps = st.one_of(
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.none(),
)
plausible_chats = st.fixed_dictionaries(
    {
        "model": st.sampled_from(MODELS[:4]),
        "messages": st.lists(
            st.fixed_dictionaries({"role": st.just("user"), "content": st.text(max_size=300)}),
            min_size=1,
            max_size=3,
        ),
    },
    optional={"max_tokens": st.integers(0, 4000), "stream": st.booleans()},
)
chat_documents = st.fixed_dictionaries(
    {"model": st.one_of(st.sampled_from(MODELS), st.text(max_size=30), json_values)},
    optional={
        "messages": st.one_of(messages, json_values),
        "max_tokens": token_caps,
        "max_output_tokens": token_caps,
        "max_completion_tokens": token_caps,
        "n": token_caps,
        "prompt": st.one_of(st.text(max_size=300), json_values),
        "input": st.one_of(st.text(max_size=300), json_values),
        "contents": json_values,
        "stream": json_values,
        "stream_options": json_values,
        "extra": json_values,
    },
)


def _dumps(document: Any) -> bytes:
    return json.dumps(document, allow_nan=True).encode()


def _nested(depth: int, opener: str) -> bytes:
    closer = "]" if opener == "[" else "}"
    inner = '{"a":' if opener == "{" else "["
    return (b'{"model": "gpt-4o", "messages": ' + inner.encode() * depth + b"1") + (
        closer.encode() * depth + b"}"
    )


def _with_bad_utf8(raw: bytes, where: int, junk: bytes) -> bytes:
    at = where % (len(raw) + 1)
    return raw[:at] + junk + raw[at:]


json_bodies = st.one_of(
    plausible_chats.map(_dumps),
    chat_documents.map(_dumps),
    json_values.map(_dumps),
    st.builds(_nested, st.integers(1, 200_000), st.sampled_from(["[", "{"])),
    st.builds(
        lambda digits: b'{"model": "gpt-4o", "max_tokens": ' + b"9" * digits + b"}",
        st.integers(1, 20_000),
    ),
    st.builds(
        lambda size, char: _dumps({"model": "gpt-4o", "prompt": char * size}),
        st.integers(0, MAX_BODY_BYTES + 10),
        st.sampled_from(["a", "é", "\U0001f600", " ", "\\"]),
    ),
    st.builds(
        _with_bad_utf8,
        chat_documents.map(_dumps),
        st.integers(0, 10_000),
        st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x00"]),
    ),
    st.builds(lambda raw, cut: raw[:cut], chat_documents.map(_dumps), st.integers(0, 200)),
)
bodies = st.one_of(st.just(b""), st.binary(max_size=3000), json_bodies)


@functools.cache
def _gzip_bomb(megabytes: int, layers: int) -> bytes:
    payload = b'{"model": "gpt-4o", "prompt": "' + b"a" * (megabytes * 1024 * 1024) + b'"}'
    for _ in range(layers):
        payload = gzip.compress(payload, compresslevel=9)
    return payload


encodings = st.sampled_from(["gzip", "deflate", "x-gzip", "br", "identity", "gzip, deflate"])
compressed_bodies = st.one_of(
    st.builds(lambda raw: gzip.compress(raw), json_bodies),
    st.builds(lambda raw: zlib.compress(raw), json_bodies),
    st.builds(_gzip_bomb, st.sampled_from([1, 8, 64]), st.integers(1, 3)),
    st.builds(lambda raw, cut: gzip.compress(raw)[:cut], json_bodies, st.integers(0, 100)),
    st.binary(max_size=200).map(lambda raw: b"\x1f\x8b" + raw),
)


@st.composite
def extra_headers(draw: st.DrawFn) -> dict[str, str]:
    headers = draw(st.dictionaries(tokens.map(str.lower), header_values, max_size=4))
    for name, values in (
        ("content-type", st.sampled_from(["application/json", "text/plain", "audio/wav", ""])),
        ("x-envoy-auth-partial-body", st.sampled_from(["true", "false", "TRUE", "maybe"])),
        ("x-budget-model", st.one_of(st.sampled_from(MODELS), header_values)),
        ("x-request-id", st.one_of(st.just("fixed-id-1"), header_values)),
        ("content-encoding", encodings),
    ):
        if draw(st.booleans()):
            headers[name] = draw(values)
    headers.pop("content-length", None)  # framing is ours to choose (see the lying tests)
    headers.pop("transfer-encoding", None)
    headers.pop("connection", None)
    headers.pop("host", None)
    return headers


FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _send(guarded: Guarded, identity: str, data: bytes, **options: Any) -> list[RawAnswer]:
    answers = exchange(guarded.port, data, **options)
    for answer in answers:
        guarded.tally.count(identity, answer)
    assert_no_undocumented_5xx(answers)
    guarded.assert_intact()
    return answers


# -- the properties -------------------------------------------------------------------


@FUZZ
@given(
    method=methods,
    path=paths,
    identity=st.sampled_from(sorted(IDENTITIES)),
    headers=extra_headers(),
    body=bodies,
)
def test_any_request_is_answered_and_the_ledger_holds_what_was_allowed(
    guarded: Guarded,
    method: str,
    path: str,
    identity: str,
    headers: dict[str, str],
    body: bytes,
) -> None:
    all_headers = {**headers, **IDENTITIES[identity]}
    answers = _send(guarded, identity, request_bytes(method, path, all_headers, body))
    assert len(answers) == 1


@settings(FUZZ, max_examples=100)
@given(
    identity=st.sampled_from(["acme", "stranger", "broke"]),
    path=st.sampled_from(PRICED_PATHS),
    headers=extra_headers(),
    body=plausible_chats.map(_dumps),
)
def test_plausible_calls_with_hostile_headers_reserve_exactly_what_is_allowed(
    guarded: Guarded, identity: str, path: str, headers: dict[str, str], body: bytes
) -> None:
    """Most of these are allowed (or denied on the spent budget): the ledger's
    invariants are checked on real reservations, not only on refusals."""
    headers.pop("content-encoding", None)  # the body is sent as it is
    all_headers = {**headers, **IDENTITIES[identity]}
    (answer,) = _send(guarded, identity, request_bytes("POST", path, all_headers, body))
    if identity == "broke" and answer.headers.get("x-budget-estimator", "none") != "none":
        assert answer.status != 200  # a spent budget never allows a priced call


@FUZZ
@given(identity=st.sampled_from(sorted(IDENTITIES)), body=json_bodies)
def test_hostile_json_on_an_inference_path(guarded: Guarded, identity: str, body: bytes) -> None:
    headers = {**IDENTITIES[identity], "content-type": "application/json"}
    (answer,) = _send(guarded, identity, request_bytes("POST", PRICED_PATHS[0], headers, body))
    if identity == "acme" and len(body) <= MAX_BODY_BYTES:
        # a readable priced request is allowed; anything else is a clear JSON 4xx
        assert answer.status in (200, 400, 403, 429), answer
    if answer.status != 200:
        assert answer.headers["content-type"].startswith("application/json")
        assert answer.code, answer


@FUZZ
@given(
    identity=st.sampled_from(["acme", "broke"]),
    body=compressed_bodies,
    encoding=encodings,
)
def test_compressed_bodies_and_bombs(
    guarded: Guarded, identity: str, body: bytes, encoding: str
) -> None:
    headers = {
        **IDENTITIES[identity],
        "content-type": "application/json",
        "content-encoding": encoding,
    }
    (answer,) = _send(guarded, identity, request_bytes("POST", PRICED_PATHS[0], headers, body))
    if answer.status == 413:
        assert answer.code == "body_too_large"


@settings(FUZZ, max_examples=FUZZ_EXAMPLES // 2)
@given(
    identity=st.sampled_from(["acme", "broke", "nobody"]),
    body=st.one_of(chat_documents.map(_dumps), st.binary(max_size=500)),
    shortfall=st.integers(1, 400),
)
def test_content_length_shorter_than_the_body(
    guarded: Guarded, identity: str, body: bytes, shortfall: int
) -> None:
    """The bytes past the declared length are read as a next request on the connection."""
    headers = {**IDENTITIES[identity], "content-type": "application/json"}
    declared = max(0, len(body) - shortfall)
    data = request_bytes("POST", PRICED_PATHS[0], headers, body, length=declared)
    answers = _send(guarded, identity, data)
    assert answers, "the request that was framed must be answered"


@settings(FUZZ, max_examples=FUZZ_EXAMPLES // 2)
@given(
    identity=st.sampled_from(["acme", "broke"]),
    body=chat_documents.map(_dumps),
    excess=st.integers(1, 100_000),
)
def test_content_length_longer_than_the_body_then_the_client_hangs_up(
    guarded: Guarded, identity: str, body: bytes, excess: int
) -> None:
    headers = {**IDENTITIES[identity], "content-type": "application/json"}
    data = request_bytes("POST", PRICED_PATHS[0], headers, body, length=len(body) + excess)
    answers = _send(guarded, identity, data, half_close=True)
    assert all(answer.code == "incomplete_body" for answer in answers), answers


def test_content_length_longer_than_the_body_on_a_connection_left_open(
    guarded: Guarded,
) -> None:
    """A client that announces more than it sends holds a check no longer than the
    gateway would wait for it: then a clear 400, and nothing reserved."""
    body = _dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
    data = request_bytes("POST", PRICED_PATHS[0], IDENTITIES["acme"], body, length=len(body) + 1)
    (answer,) = _send(guarded, "acme", data, until_answers=1)
    assert answer.status == 400
    assert answer.code == "incomplete_body"


@pytest.mark.parametrize("path", ["/v1/usage", "/v1/check"])
@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"request_id": "x", "cost_usd": ' + b"9" * 5000 + b"}",
        b'{"headers": {}, "body": ' + b'{"a":' * 5000 + b"1" + b"}" * 5000 + b"}",
        b'{"request_id": "\xff\xfe", "cost_usd": "1"}',
        b"\x1f\x8b" + b"\x00" * 30,
    ],
    ids=["deep-array", "long-integer", "deep-object", "invalid-utf8", "gzip-magic"],
)
def test_hostile_json_on_the_api_port(guarded: Guarded, path: str, body: bytes) -> None:
    """The API's JSON bodies: a clear 400, never a 500, nothing settled or reserved."""
    headers = {"authorization": "Bearer hostile-input-token", "content-type": "application/json"}
    data = request_bytes("POST", path, headers, body)
    (answer,) = exchange(guarded.webhook.api_port, data)
    assert answer.status == 400, answer
    assert answer.code, answer
    guarded.assert_intact()


@pytest.mark.parametrize("depth", [200, 900, 1100])
def test_a_deep_but_parsable_body_through_post_v1_check(guarded: Guarded, depth: int) -> None:
    """Deep enough to strain every parser after the first (pydantic, orjson, the
    estimator): the check's own answer, never a 500."""
    call = {"headers": IDENTITIES["acme"], "body": {"model": "gpt-4o", "extra": None}}
    before, after = _dumps(call).split(b"null", 1)
    body = before + b"[" * depth + b"1" + b"]" * depth + after
    headers = {"authorization": "Bearer hostile-input-token", "content-type": "application/json"}
    (answer,) = exchange(
        guarded.webhook.api_port, request_bytes("POST", "/v1/check", headers, body)
    )
    assert answer.status in (200, 400), answer
    if answer.status == 200:
        outcome = json.loads(answer.body)
        assert outcome["status"] in (200, 400), outcome
        guarded.tally.count("acme", RawAnswer(outcome["status"], outcome["headers"], b""))
    guarded.assert_intact()
