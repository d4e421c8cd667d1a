"""The per-user spend checkpoint: what it holds comes back exactly, it never goes down,
and how many users fit in one ConfigMap (the figure docs/operator.md gives)."""

from __future__ import annotations

import random

from budget_guard.operator.checkpoints import (
    CHECKPOINT_BYTES,
    Checkpoint,
    checkpoint_name,
    decode,
    encode,
)
from budget_guard.store.user_spend import UserSpend


def users(count: int, seed: int = 7) -> dict[str, UserSpend]:
    """Realistic ids (e-mail-like, 20-30 characters) and spend up to $100."""
    rng = random.Random(seed)
    return {
        f"user-{rng.getrandbits(40):010x}@team{n % 50}.example.com": UserSpend(
            rng.randrange(1, 100_000_000), rng.choice((0, 0, 0, 80, 100))
        )
        for n in range(count)
    }


def test_a_checkpoint_comes_back_exactly() -> None:
    written = users(2_000)
    text, kept = encode(written)
    assert kept == 2_000
    assert decode(text) == written


def test_a_checkpoint_never_goes_down() -> None:
    before = Checkpoint("2026-12", {"ann": UserSpend(500, 80), "bob": UserSpend(300, 0)})
    after_a_flush = {"ann": UserSpend(20, 0), "cy": UserSpend(7, 0)}  # Redis lost ann's
    merged = before.merged(after_a_flush)
    assert merged.users == {
        "ann": UserSpend(500, 80),
        "bob": UserSpend(300, 0),
        "cy": UserSpend(7, 0),
    }


def test_past_the_limit_the_biggest_spenders_are_kept() -> None:
    written = users(3_000)
    text, kept = encode(written, limit=20_000)
    assert 0 < kept < 3_000 and len(text) <= 20_000
    restored = decode(text)
    smallest_kept = min(spend.spent for spend in restored.values())
    left_out = [s.spent for user, s in written.items() if user not in restored]
    assert max(left_out) <= smallest_kept


def test_how_many_users_fit_in_one_configmap() -> None:
    """Measured: about 50,000 such users (18 bytes each, gzipped and in base64) fit in
    CHECKPOINT_BYTES (the figure docs/operator.md gives)."""
    text, kept = encode(users(60_000))
    assert len(text) <= CHECKPOINT_BYTES
    assert 48_000 <= kept <= 51_000, kept


def test_names_stay_valid() -> None:
    assert checkpoint_name("acme") == "acme.spend"
    assert len(checkpoint_name("a" * 253)) <= 253
