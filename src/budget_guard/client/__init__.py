"""The application-layer guard: the same budgets inside the calling application.

``BudgetGuard`` reserves each call's estimate before it runs and settles its real
usage after, in the same ledger as the gateway (``DirectBackend``) or through the
webhook's API (``RemoteBackend``). See ``docs/client.md``.
"""

from budget_guard.client.backend import Admission, Backend
from budget_guard.client.direct import DirectBackend
from budget_guard.client.errors import BudgetExceeded, BudgetUnavailable, RequestRefused
from budget_guard.client.guard import BudgetGuard, GuardedCall, SoftLimitWarning
from budget_guard.client.remote import IdentityHeaders, RemoteBackend

__all__ = [
    "Admission",
    "Backend",
    "BudgetExceeded",
    "BudgetGuard",
    "BudgetUnavailable",
    "DirectBackend",
    "GuardedCall",
    "IdentityHeaders",
    "RemoteBackend",
    "RequestRefused",
    "SoftLimitWarning",
]
