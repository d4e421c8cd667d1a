"""Load shedding: which checks this process takes on, and which it turns away at once.

The gateway's ext_authz timeout is the real deadline of every decision: an answer
that comes later is thrown away by Envoy, which then applies its own failure
policy (and may let the request through uncounted). So this process answers every
check before that deadline, by two rules:

- **In-flight bound.** At most ``max_inflight`` checks are decided at once (each
  holds its body in memory); one more is turned away before its body is read.
- **Send window.** A decision that needs Redis must send its reservation within
  ``gateway_timeout - ledger_timeout`` of the check's arrival, so that even a
  Redis that stalls leaves time for the budget's failure mode to answer. A
  decision later than that is turned away instead of being sent.

A check turned away gets a ``429 overloaded`` with ``retry-after``, counted in
``budget_guard_overload_shed_total``: never an allow (a hard limit holds), and
never ``budget_unavailable`` (Redis is not at fault). Not a 503: Envoy treats a
5xx from the authorization server as an error, not a deny, and with
``failure_mode_allow`` would let the request through.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

SHED_INFLIGHT = "inflight"
SHED_DEADLINE = "deadline"


@dataclass(frozen=True)
class AdmissionSettings:
    max_inflight: int = 512
    gateway_timeout_seconds: float = 0.2  # Envoy's default ext_authz timeout
    ledger_timeout_seconds: float = 0.05

    @property
    def send_window_seconds(self) -> float:
        return self.gateway_timeout_seconds - self.ledger_timeout_seconds


class Admission:
    """One per process; not thread-safe (it lives on one event loop)."""

    def __init__(
        self, settings: AdmissionSettings, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self.settings = settings
        self._clock = clock
        self.inflight = 0
        self.shed = {SHED_INFLIGHT: 0, SHED_DEADLINE: 0}

    def enter(self) -> bool:
        """Take on one more check, or False (counted) when ``max_inflight`` are in progress."""
        if self.inflight >= self.settings.max_inflight:
            self.shed[SHED_INFLIGHT] += 1
            return False
        self.inflight += 1
        return True

    def leave(self) -> None:
        self.inflight -= 1

    def may_send(self, arrived: float) -> bool:
        """Is there still time to ask Redis for a check taken on at ``arrived``?
        False is counted as a shed."""
        if self._clock() - arrived <= self.settings.send_window_seconds:
            return True
        self.shed[SHED_DEADLINE] += 1
        return False

    def time_left(self, arrived: float) -> float:
        """Seconds until the gateway gives up on a check taken on at ``arrived``."""
        return arrived + self.settings.gateway_timeout_seconds - self._clock()
