"""Request ids: the key a reservation is found by when its usage is settled.

A check reuses the gateway's ``x-request-id`` when it is a good key (it then shows in
the gateway's logs too), else makes one. One rule for both ends: the id a check
answers in ``x-budget-request-id`` is an id ``POST /v1/usage`` accepts.
"""

from __future__ import annotations

import secrets

REQUEST_ID_MAX = 200
REQUEST_ID_RULE = f"up to {REQUEST_ID_MAX} printable characters without spaces or commas"


def is_valid_request_id(value: str) -> bool:
    """Printable, no white space (a key part) and no comma (headers are comma-joined)."""
    return (
        0 < len(value) <= REQUEST_ID_MAX
        and value.isprintable()
        and not any(char.isspace() or char == "," for char in value)
    )


def new_request_id() -> str:
    return secrets.token_hex(16)


def request_id_for(incoming: str | None) -> str:
    """The gateway's id when it is a good key, else a new one."""
    candidate = (incoming or "").strip()
    return candidate if is_valid_request_id(candidate) else new_request_id()
