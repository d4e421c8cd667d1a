"""All Redis code: the atomic ledger, the published config snapshot, the event stream.

Rule of this layer: every Redis command of the project lives here, and every Lua
script is its own file under ``store/lua/`` with a header saying its KEYS and ARGV.
It imports only ``domain``.
"""
