"""The guard's own count of each recent allowed request's prompt, by request id: kept
by the decider, read when the request's usage is reported (``POST /v1/usage``), to
notice a report far below it (``domain.under_reporting``).

In process memory and bounded (the oldest go first): a report that reaches another
replica than the one that decided, or comes after ``MAX_ENTRIES`` later checks, is
settled without being judged. An application that lies, lies on most of its reports,
so it still shows up, on at least one report in as many as there are replicas.
"""

from __future__ import annotations

from collections import OrderedDict

from budget_guard.domain.under_reporting import CountedPrompt

MAX_ENTRIES = 50_000


class CountedPrompts:
    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._max_entries = max_entries
        # OrderedDict, not dict: dropping a plain dict's oldest key through next(iter())
        # scans the holes earlier deletions left at its front, on every check once full.
        self._counted: OrderedDict[str, CountedPrompt] = OrderedDict()

    def __len__(self) -> int:
        return len(self._counted)

    def keep(self, request_id: str, counted: CountedPrompt) -> None:
        counted_prompts = self._counted
        if len(counted_prompts) >= self._max_entries:
            counted_prompts.popitem(last=False)
        counted_prompts[request_id] = counted

    def take(self, request_id: str) -> CountedPrompt | None:
        return self._counted.pop(request_id, None)
