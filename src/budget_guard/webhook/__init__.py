"""The aiohttp ext_authz service that decides every LLM request inline.

Rule of this layer: a thin adapter over ``domain`` and ``store``; it never imports
``operator``.
"""
