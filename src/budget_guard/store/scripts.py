"""The Lua scripts of ``store/lua/``, loaded once and run by SHA.

Every script gets ``_shared.lua`` prepended, so it runs self-contained on the
server while its helpers are written once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import NoScriptError

_SHARED = "_shared.lua"


def _read(name: str) -> str:
    return resources.files("budget_guard.store").joinpath("lua", name).read_text()


@dataclass(frozen=True)
class LuaScript:
    name: str
    source: str

    @property
    def sha(self) -> str:
        return hashlib.sha1(self.source.encode(), usedforsecurity=False).hexdigest()

    @classmethod
    def load(cls, name: str) -> LuaScript:
        return cls(name, _read(_SHARED) + "\n" + _read(name))

    async def run(self, client: Redis, keys: list[str], args: list[Any]) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await client.script_load(self.source)
            return await client.evalsha(self.sha, len(keys), *keys, *args)

    def queue(self, pipeline: Pipeline, keys: list[str], args: list[Any]) -> None:
        """Add to a pipeline; call ``ensure_loaded`` on the client first."""
        pipeline.evalsha(self.sha, len(keys), *keys, *args)

    async def ensure_loaded(self, client: Redis) -> None:
        if not (await client.script_exists(self.sha))[0]:
            await client.script_load(self.source)


RESERVE = LuaScript.load("reserve.lua")
SETTLE = LuaScript.load("settle.lua")
ALL_SCRIPTS = (RESERVE, SETTLE)
