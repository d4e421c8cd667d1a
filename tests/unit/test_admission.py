"""Load shedding: the in-flight bound and the send window (webhook.admission)."""

from __future__ import annotations

from budget_guard.webhook.admission import (
    SHED_DEADLINE,
    SHED_INFLIGHT,
    Admission,
    AdmissionSettings,
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_at_most_max_inflight_checks_are_taken_on() -> None:
    admission = Admission(AdmissionSettings(max_inflight=2))
    assert admission.enter()
    assert admission.enter()
    assert not admission.enter()
    assert admission.shed == {SHED_INFLIGHT: 1, SHED_DEADLINE: 0}
    admission.leave()
    assert admission.enter()
    assert admission.inflight == 2


def test_a_check_may_ask_redis_only_while_redis_can_still_answer_before_the_gateway() -> None:
    clock = Clock()
    settings = AdmissionSettings(gateway_timeout_seconds=0.2, ledger_timeout_seconds=0.05)
    admission = Admission(settings, clock)
    arrived = clock.now
    clock.now = arrived + 0.15  # exactly gateway - ledger: still in time
    assert admission.may_send(arrived)
    clock.now = arrived + 0.151
    assert not admission.may_send(arrived)
    assert admission.shed[SHED_DEADLINE] == 1
