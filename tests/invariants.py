"""The ledger's books must balance, to the micro-dollar: a check any test can run.

For every counter (a budget's period, or one user's share of it) and every burst pool,
read from Redis alone:

    used  = spent + open reservations + open leases
    spent = what the settled reservations on it were charged

where "open reservations" are the reservation records not yet settled (each also in
the pending index, for the sweeper), "settled" ones carry their charged cost, and
"open leases" is the counter's ``leased`` field: room handed to webhook processes
and not yet committed as reservations (see ``store/leases.py``). The settled-requests
stream must tell the same story per budget: the sum of what it says each settlement
charged (``cost``, less ``replaces`` when an expiry had charged it before) equals the
budget's ``spent``.

Open leases are the one place spend can sit without a record: a process that dies
keeps its leases counted (never less spend), including the local decisions it had
not committed yet (at most ``flush_interval_seconds`` of them). A caller that knows
how much lease room must be open says so with ``leased=``; the check never assumes
it.

The books are the records, so the check holds while Redis keeps them: a record lives
``--reservation-ttl-seconds`` plus a day after its reservation, and a flush (or a
failover that lost writes) takes them away while the operator restores the counters;
a test of those compares counters with what it knows instead.

Formats are those of ``store/keys.py`` (key names) and ``store/plans.py`` (the
budget record, the plan) and of ``reserve.lua`` / ``settle.lua`` (the reservation
record: ``cost, charged, settled by, plan key, pool choices, user`` and, when it
granted leases, what it granted, joined by ``\\x1e``;
a plan shared by the users of a template holds ``USER`` where the record's user goes).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import redis as redis_sync

from budget_guard.store.keys import KeySchema
from budget_guard.store.plans import FIELD, LABEL, LINE, POOL_ENTRY, POOL_FIELD, SECTION, USER

KEYS = KeySchema()


@dataclass
class Account:
    """One counter or burst pool: what Redis holds, and what its records add up to."""

    key: str
    budget: str  # the budget id (or the pool id) the settled stream names
    used: int = 0
    spent: int = 0
    leased: int = 0
    settled: int = 0  # sum of what settled reservations on it were charged
    reserved: int = 0  # sum of the open reservations on it

    @property
    def balanced(self) -> bool:
        return self.spent == self.settled and self.used == self.spent + self.reserved + self.leased


class Record(NamedTuple):
    """One reservation record: what it reserved, what it was charged (None: open), and
    who settled it ("usage" or "expiry")."""

    cost: int
    charged: int | None
    settled_by: str


@dataclass
class Books:
    accounts: dict[str, Account] = field(default_factory=dict)
    records: dict[str, Record] = field(default_factory=dict)  # by request id
    open_records: set[str] = field(default_factory=set)
    pending: set[str] = field(default_factory=set)
    stream_charged: Counter[str] = field(default_factory=Counter)  # by budget or pool id
    # ... and by who settled (api, ext_proc, journal, client, sweeper) too
    stream_by_source: Counter[tuple[str, str]] = field(default_factory=Counter)
    settled_requests: int = 0

    def spent_by_budget(self) -> Counter[str]:
        spent: Counter[str] = Counter()
        for account in self.accounts.values():
            spent[account.budget] += account.spent
        return spent

    @property
    def used(self) -> int:
        return sum(account.used for account in self.accounts.values())

    @property
    def leased(self) -> int:
        return sum(account.leased for account in self.accounts.values())

    @property
    def reserved(self) -> int:
        return sum(account.reserved for account in self.accounts.values())

    def account(self, key_part: str) -> Account:
        """The one account whose key contains ``key_part`` (e.g. a budget name)."""
        (found,) = [a for a in self.accounts.values() if key_part in a.key]
        return found


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def _plan_accounts(plan: str) -> list[tuple[tuple[str, str], list[tuple[str, str]]]]:
    """Per budget of a plan: (counter key, budget id), and its pools' (key, id)."""
    budgets = []
    for record in plan.split(SECTION)[0].split(LINE):
        fields = record.split(FIELD)
        counter, described, pools = fields[0], fields[6], fields[7]
        pool_accounts = []
        for pool in pools.split(POOL_ENTRY) if pools else []:
            parts = pool.split(POOL_FIELD)
            pool_accounts.append((parts[0], parts[4]))
        budgets.append(((counter, described.split(LABEL)[0]), pool_accounts))
    return budgets


def read_books(client: redis_sync.Redis) -> Books:
    """Every account the reservation records name, with what Redis holds for it."""
    books = Books()
    plans: dict[str, str] = {}
    for raw_key in client.scan_iter(KEYS.reservation("*"), count=1000):
        record_key = _text(raw_key)
        value = _text(client.get(record_key))
        if not value:
            continue  # expired between the scan and the read
        cost, charged, settled_by, plan_key, choices, *rest = value.split(SECTION)
        user = rest[0] if rest else ""  # what the shared plan's USER stands for
        books.records[KEYS.request_id_of(record_key)] = Record(
            int(cost), int(charged) if charged else None, settled_by
        )
        if plan_key not in plans:
            plans[plan_key] = _text(client.get(plan_key))
        assert plans[plan_key], f"{record_key} names the plan {plan_key}, which Redis lost"
        picks = choices.split(",")
        plan = plans[plan_key].replace(USER, user)
        for index, ((counter, budget_id), pools) in enumerate(_plan_accounts(plan)):
            pick = int(picks[index]) if index < len(picks) and picks[index] else 0
            key, owner = (counter, budget_id) if pick == 0 else pools[pick - 1]
            account = books.accounts.setdefault(key, Account(key, owner))
            if charged:
                account.settled += int(charged)
            else:
                account.reserved += int(cost)
        if not charged:
            books.open_records.add(record_key)
    for account in books.accounts.values():
        used, spent, leased = client.hmget(account.key, "used", "spent", "leased")
        account.used, account.spent, account.leased = (int(v or 0) for v in (used, spent, leased))
    books.pending = {_text(member) for member in client.zrange(KEYS.pending, 0, -1)}
    for _id, entry in client.xrange(KEYS.settled, "-", "+"):
        fields = {_text(k): _text(v) for k, v in entry.items()}
        charged = int(fields["cost"]) - int(fields.get("replaces") or 0)
        for budget_id in fields["budgets"].split(","):
            if budget_id:
                books.stream_charged[budget_id] += charged
                books.stream_by_source[(budget_id, fields.get("source", ""))] += charged
        books.settled_requests += 1
    return books


def _counters_without_records(client: redis_sync.Redis, books: Books) -> list[str]:
    """Counters with usage that no reservation record names (spend with no record)."""
    orphans = []
    for raw_key in client.scan_iter(f"{KEYS.prefix}:*:c:*", count=1000, _type="hash"):
        key = _text(raw_key)
        if key in books.accounts:
            continue
        used, leased = (int(v or 0) for v in client.hmget(key, "used", "leased"))
        if used != leased:  # only lease room may be counted without a record
            orphans.append(f"{key}: used {used}, leased {leased}")
    return orphans


def assert_books_balance(redis_url: str, *, leased: int | Mapping[str, int] | None = None) -> Books:
    """Fail with every account that does not balance; return the books.

    ``leased``: the open lease room there must be, in total or by a part of the counter
    key (a budget's name); None: whatever is open is part of the balance, but not
    checked against a number."""
    client = redis_sync.Redis.from_url(redis_url)
    try:
        books = read_books(client)
        problems = [
            f"{a.key}: used {a.used} != spent {a.spent} + reserved {a.reserved} + leased "
            f"{a.leased}; spent {a.spent} vs settled records {a.settled}"
            for a in books.accounts.values()
            if not a.balanced
        ]
        problems += [
            f"spend without a record: {o}" for o in _counters_without_records(client, books)
        ]
        if books.open_records != books.pending:
            problems.append(
                f"open reservations not pending: {sorted(books.open_records - books.pending)}; "
                f"pending but settled or gone: {sorted(books.pending - books.open_records)}"
            )
        spent = books.spent_by_budget()
        for budget_id in set(spent) | set(books.stream_charged):
            if spent[budget_id] != books.stream_charged[budget_id]:
                problems.append(
                    f"{budget_id}: spent {spent[budget_id]} but the settled stream says "
                    f"{books.stream_charged[budget_id]}"
                )
        if isinstance(leased, int) and books.leased != leased:
            problems.append(f"open leases: {books.leased}, expected {leased}")
        elif isinstance(leased, Mapping):
            for part, amount in leased.items():
                if books.account(part).leased != amount:
                    problems.append(f"{part}: leased {books.account(part).leased} != {amount}")
        assert not problems, "the ledger does not balance:\n" + "\n".join(problems)
        return books
    finally:
        client.close()
