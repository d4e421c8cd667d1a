"""The pure model: budgets, scopes, periods, pricing and token estimation.

Rule of this layer: no I/O and no clock. It imports nothing else of the package,
nor Redis, aiohttp, kopf or kubernetes; time comes in as an argument.
"""
