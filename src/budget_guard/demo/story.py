"""The demo's traffic: a normal tenant, a free user whose app listens to the guard, and
a runaway agent loop that does not. Every call is checked, then settled with usage."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

MAX_AGENT_TURNS = 120
TOPICS = (
    "market sizing for battery recycling",
    "supplier risk in the Q3 report",
    "competitor pricing pages",
    "the churn analysis notebook",
    "regulatory filings",
)


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class Guard:
    """The webhook as a gateway sees it: checks on one port, settlement on the other."""

    session: aiohttp.ClientSession
    check_url: str
    api_url: str
    usage_token: str

    async def check(self, identity: dict[str, str], body: dict[str, Any]) -> Answer:
        request_id = uuid.uuid4().hex[:12]
        headers = {**identity, "x-request-id": request_id, "content-type": "application/json"}
        url = f"{self.check_url}/v1/chat/completions"
        async with self.session.post(url, data=json.dumps(body), headers=headers) as response:
            raw = await response.read()
            payload = json.loads(raw) if raw else {}
            return Answer(response.status, dict(response.headers), payload)

    async def settle(self, request_id: str, model: str, prompt: int, completion: int) -> None:
        usage = {"prompt_tokens": prompt, "completion_tokens": completion}
        async with self.session.post(
            f"{self.api_url}/v1/usage",
            json={"request_id": request_id, "model": model, "usage": usage},
            headers={"authorization": f"Bearer {self.usage_token}"},
        ) as response:
            if response.status != 200:
                raise RuntimeError(f"settlement refused: {response.status} {await response.text()}")

    async def budgets(self) -> dict[str, Any]:
        headers = {"authorization": f"Bearer {self.usage_token}"}
        async with self.session.get(f"{self.api_url}/v1/budgets", headers=headers) as response:
            return dict(await response.json())


@dataclass
class Timeline:
    """What happened, as lines for a person; and which plot points were seen."""

    print_line: Callable[[str], None]
    seen: set[str] = field(default_factory=set)

    def say(self, who: str, text: str) -> None:
        self.print_line(f"  {who:<28} {text}")

    def mark(self, point: str) -> None:
        self.seen.add(point)


def _prompt_tokens(messages: list[dict[str, str]]) -> int:
    return max(1, len(json.dumps(messages)) // 4)  # what the provider would report, roughly


async def _call(
    guard: Guard,
    identity: dict[str, str],
    model: str,
    messages: list[dict[str, str]],
    rng: random.Random,
    max_tokens: int = 400,
) -> Answer:
    """Check; if allowed, 'call the model' and settle the usage it reports."""
    answer = await guard.check(
        identity, {"model": model, "max_tokens": max_tokens, "messages": messages}
    )
    if answer.status == 200:
        completion = rng.randint(max_tokens // 3, max_tokens)
        request_id = answer.headers["x-budget-request-id"]
        await guard.settle(request_id, model, _prompt_tokens(messages), completion)
    return answer


async def normal_tenant(guard: Guard, timeline: Timeline, rng: random.Random, round_: int) -> None:
    for user in ("bob", "carol"):
        identity = {
            "x-budget-tenant": "globex",
            "x-budget-user": user,
            "x-budget-tier": "pro",
            "x-budget-feature": "support-chat",
        }
        messages = [{"role": "user", "content": f"Where is my order #{rng.randint(1000, 9999)}?"}]
        answer = await _call(guard, identity, "gpt-4o-mini", messages, rng, max_tokens=200)
        if answer.status == 200:
            timeline.mark("normal-allowed")
            if round_ == 0:
                timeline.say(
                    f"globex/{user} (pro)",
                    f"200 allowed, gpt-4o-mini, est "
                    f"${answer.headers['x-budget-estimated-cost-usd']}",
                )
        else:
            timeline.say(f"globex/{user} (pro)", f"{answer.status} {answer.body}")


async def free_user(guard: Guard, timeline: Timeline, rng: random.Random) -> None:
    """A free-tier user whose app switches to the model the guard suggests."""
    identity = {
        "x-budget-tenant": "acme",
        "x-budget-user": "dana",
        "x-budget-tier": "free",
        "x-budget-feature": "writing-assistant",
    }
    model, level = "gpt-4o", None
    for turn in range(1, 46):
        messages = [{"role": "user", "content": f"Polish paragraph {turn}: " + "lorem " * 120}]
        answer = await _call(guard, identity, model, messages, rng, max_tokens=300)
        who = "acme/dana (free)"
        if answer.status != 200:
            timeline.say(who, f"{answer.status} {answer.body['error']['message']}")
            timeline.mark("free-denied")
            return
        soft = answer.headers.get("x-budget-soft-limit")
        if soft is not None and soft != level:  # settlement may take it back under
            level = soft
            timeline.say(who, f"turn {turn}: soft limit {soft} % of the free per-user quota")
            timeline.mark("soft-limit")
        override = answer.headers.get("x-budget-model-override")
        if override and override != model:
            timeline.say(
                who, f"turn {turn}: guard suggests {override} instead of {model}; the app switches"
            )
            timeline.mark("downgrade")
            model = override


async def runaway_agent(guard: Guard, timeline: Timeline, rng: random.Random) -> None:
    """An agent loop that resends its growing conversation and ignores every hint."""
    identity = {
        "x-budget-tenant": "acme",
        "x-budget-user": "agent-7",
        "x-budget-tier": "pro",
        "x-budget-feature": "research-agent",
    }
    who = "acme/agent-7 research-agent"
    messages = [{"role": "system", "content": "You are a tireless research agent. " * 20}]
    level: str | None = None
    pool_seen = override_seen = False
    for turn in range(1, MAX_AGENT_TURNS + 1):
        topic = rng.choice(TOPICS)
        messages.append({"role": "user", "content": f"Dig deeper into {topic}. " * 8})
        messages.append({"role": "tool", "content": f"search results on {topic}: " + "data " * 350})
        answer = await _call(guard, identity, "gpt-4o", messages, rng)
        if answer.status == 429:
            error = answer.body["error"]
            timeline.say(who, f"turn {turn}: 429 {error['message']}")
            timeline.say(
                "",
                f"retry-after {answer.headers['Retry-After']} s, "
                f"x-budget-reset {answer.headers['x-budget-reset']}",
            )
            timeline.mark("denied")
            return
        if answer.status != 200:
            timeline.say(who, f"turn {turn}: {answer.status} {answer.body}")
            return
        headers = answer.headers
        messages.append({"role": "assistant", "content": "Findings: " + "insight " * 120})
        cost = headers["x-budget-estimated-cost-usd"]
        remaining = headers.get("x-budget-remaining-usd", "?")
        if turn == 1:
            timeline.say(
                who,
                f"turn 1: 200 allowed, gpt-4o est ${cost}, ${remaining} left "
                "in its tightest budget",
            )
        soft = headers.get("x-budget-soft-limit")
        if soft != level:
            level = soft
            timeline.say(
                who, f"turn {turn}: soft limit {soft} % reached (est ${cost}, ${remaining} left)"
            )
            timeline.mark("soft-limit")
        override = headers.get("x-budget-model-override")
        if override and not override_seen:
            override_seen = True
            timeline.say(who, f"turn {turn}: guard suggests {override}; the loop ignores it")
            timeline.mark("downgrade")
        pool = headers.get("x-budget-burst-pool")
        if pool and not pool_seen:
            pool_seen = True
            timeline.say(
                who,
                f"turn {turn}: daily budget spent; burst pool {pool} takes "
                f"over (${remaining} left in it)",
            )
            timeline.mark("burst")
        if turn % 8 == 0:
            await normal_tenant(guard, timeline, rng, turn)
    timeline.say(who, f"stopped after {MAX_AGENT_TURNS} turns without a denial")


async def careful_agent(guard: Guard, timeline: Timeline, rng: random.Random) -> None:
    """The same loop on a budget that reserves the worst case: it stops at the limit."""
    identity = {
        "x-budget-tenant": "acme",
        "x-budget-user": "agent-8",
        "x-budget-tier": "pro",
        "x-budget-feature": "research-agent-strict",
    }
    who = "acme/agent-8 strict budget"
    messages = [{"role": "system", "content": "You are a tireless research agent. " * 20}]
    for turn in range(1, MAX_AGENT_TURNS + 1):
        topic = rng.choice(TOPICS)
        messages.append({"role": "user", "content": f"Dig deeper into {topic}. " * 8})
        messages.append({"role": "tool", "content": f"search results on {topic}: " + "data " * 350})
        answer = await _call(guard, identity, "gpt-4o", messages, rng)
        if answer.status != 200:
            error = answer.body["error"]
            timeline.say(
                who,
                f"turn {turn}: {answer.status} {error['code']}: it reserved "
                f"${error.get('requested_usd', '?')}, the worst case of the call",
            )
            timeline.mark("worst-case")
            return
        messages.append({"role": "assistant", "content": "Findings: " + "insight " * 120})
        if turn == 1:
            reserved = answer.headers["x-budget-estimated-cost-usd"]
            timeline.say(
                who,
                f"turn 1: 200 allowed, reserves the worst case ${reserved} (input at a token "
                "per byte, output at max_tokens); settlement lowers it",
            )
    timeline.say(who, f"stopped after {MAX_AGENT_TURNS} turns without a denial")


def settlement_overshoot(document: dict[str, Any]) -> list[str]:
    """How the Estimate and the WorstCase budget ended, for the timeline."""
    lines = []
    for budget in document["budgets"]:
        if budget["name"] not in ("research-agent-daily", "research-agent-strict"):
            continue
        lines.append(
            f"{budget['name']} (reservation: {budget['reservation']}): "
            f"${budget['usedUsd']} of ${budget['effectiveLimitUsd']} used"
        )
    return lines
