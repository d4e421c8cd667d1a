"""A burst of checks from its own process, as a gateway under a runaway agent sends them.

``python -m tests.integration.burst_load URL TOTAL IN_FLIGHT USERS`` prints one JSON
object: every answer in the order it arrived (status, error code, estimated cost in
micro-USD of an allow, user, and whether it was marked degraded).
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import aiohttp

from budget_guard.domain.money import parse_usd

TENANT = "rush"
# gpt-4o, about 300 prompt tokens and a 900-token cap: about $0.01 a check.
BODY = {
    "model": "gpt-4o",
    "max_tokens": 900,
    "messages": [{"role": "user", "content": "Summarise the findings so far. " * 50}],
}


async def burst(url: str, total: int, in_flight: int, users: int) -> list[dict[str, Any]]:
    answers: list[dict[str, Any]] = []
    gate = asyncio.Semaphore(in_flight)
    connector = aiohttp.TCPConnector(limit=in_flight)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(index: int) -> None:
            user = f"user-{index % users}"
            headers = {"x-budget-tenant": TENANT, "x-budget-user": user}
            async with gate, session.post(url, json=BODY, headers=headers) as response:
                body = await response.read()
                code = json.loads(body)["error"]["code"] if body else ""
                estimated = response.headers.get("x-budget-estimated-cost-usd", "0")
                answers.append(
                    {
                        "status": response.status,
                        "code": code,
                        "cost": parse_usd(estimated, "cost", allow_zero=True),
                        "user": user,
                        "degraded": "x-budget-degraded" in response.headers,
                    }
                )

        await asyncio.gather(*(one(index) for index in range(total)))
    return answers


def main() -> None:
    url, total, in_flight, users = sys.argv[1], *map(int, sys.argv[2:5])
    answers = asyncio.run(burst(url, total, in_flight, users))
    json.dump({"answers": answers}, sys.stdout)


if __name__ == "__main__":
    main()
