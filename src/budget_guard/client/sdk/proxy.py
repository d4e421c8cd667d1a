"""A stand-in for an SDK object: some attributes replaced, every other one read from it."""

from __future__ import annotations

from typing import Any


class Proxy:
    def __init__(self, target: object, **replaced: object) -> None:
        self._target = target
        self._replaced = replaced

    def __getattr__(self, name: str) -> Any:
        replaced = self.__dict__["_replaced"]
        if name in replaced:
            return replaced[name]
        return getattr(self.__dict__["_target"], name)

    def __repr__(self) -> str:
        return f"<budget-guarded {self._target!r}>"
