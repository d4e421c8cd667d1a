"""The guard's own count of each recent allowed request's prompt, by request id: kept
by the decider, read when the request's usage is reported (``POST /v1/usage``), to
notice a report far below it (``domain.under_reporting``).

In process memory and bounded (the oldest go first): a report that reaches another
replica than the one that decided, or comes after ``MAX_ENTRIES`` later checks, is
settled without being judged. An application that lies, lies on most of its reports,
so it still shows up, on at least one report in as many as there are replicas.
"""

from __future__ import annotations

from budget_guard.domain.under_reporting import CountedPrompt

MAX_ENTRIES = 50_000


class CountedPrompts:
    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._max_entries = max_entries
        self._counted: dict[str, CountedPrompt] = {}  # in insertion order: oldest first

    def __len__(self) -> int:
        return len(self._counted)

    def keep(self, request_id: str, counted: CountedPrompt) -> None:
        counted_prompts = self._counted
        if len(counted_prompts) >= self._max_entries:
            del counted_prompts[next(iter(counted_prompts))]
        counted_prompts[request_id] = counted

    def take(self, request_id: str) -> CountedPrompt | None:
        return self._counted.pop(request_id, None)
