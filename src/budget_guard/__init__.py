"""LLM Budget Guard: hard and soft spending limits for LLM APIs, enforced at the gateway.

The package's rooms, each with one rule stated in its docstring and enforced by
import-linter (see ``pyproject.toml``):

- ``domain``: the pure model (budgets, scopes, periods, pricing, token estimation).
- ``store``: all Redis code and its Lua scripts; imports only ``domain``.
- ``operator``: the Kopf operator, a thin adapter over ``domain`` and ``store``.
- ``webhook``: the aiohttp ext_authz service, a thin adapter over ``domain`` and ``store``.
- ``localservices``: real local processes for the demo, tests and ``make cluster``.
"""

__version__ = "0.1.0"
