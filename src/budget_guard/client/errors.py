"""What a guarded call raises instead of calling the provider."""

from __future__ import annotations

import datetime as dt

from budget_guard.domain.denial import Denial
from budget_guard.domain.money import format_usd


class BudgetExceeded(Exception):
    """A budget has no room for the call: the fields of the webhook's 429 body.

    Money is in micro-USD (``limit_micros``) and, as the 429 body writes it, in decimal
    USD strings (``limit_usd``)."""

    def __init__(self, denial: Denial) -> None:
        super().__init__(denial.message)
        self.denial = denial

    @property
    def message(self) -> str:
        return self.denial.message

    @property
    def scope(self) -> str:
        return self.denial.scope

    @property
    def budget(self) -> str:
        return self.denial.budget

    @property
    def period(self) -> str:
        return self.denial.period

    @property
    def limit_micros(self) -> int:
        return self.denial.limit_micros

    @property
    def spent_micros(self) -> int:
        return self.denial.spent_micros

    @property
    def requested_micros(self) -> int:
        return self.denial.requested_micros

    @property
    def limit_usd(self) -> str:
        return format_usd(self.denial.limit_micros)

    @property
    def spent_usd(self) -> str:
        return format_usd(self.denial.spent_micros)

    @property
    def requested_usd(self) -> str:
        return format_usd(self.denial.requested_micros)

    @property
    def resets_at(self) -> dt.datetime:
        return self.denial.resets_at

    @property
    def retry_after_seconds(self) -> int:
        return self.denial.retry_after_seconds

    @property
    def upgrade_url(self) -> str | None:
        return self.denial.upgrade_url

    @property
    def request_id(self) -> str:
        return self.denial.request_id


class BudgetUnavailable(Exception):
    """The guard could not decide: the ledger (or the webhook) cannot be reached and a
    budget fails closed, or the webhook is overloaded. Nothing was charged; retry."""


class RequestRefused(Exception):
    """The guard refuses the request itself (no model, a model with no price, a bad
    identity or token): ``code`` as in the webhook's error answers."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
