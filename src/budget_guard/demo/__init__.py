"""``make demo``: the guard on its embedded default, no cluster needed.

A temporary redis-server, the webhook in standalone mode on ``examples/budgets/``,
sample traffic through the check port with usage settled after each call, a
readable timeline, and a budget table. Everything it starts, it stops.

Rule of this room: it drives the product only from outside, over HTTP and the
command line, as a user would.
"""
