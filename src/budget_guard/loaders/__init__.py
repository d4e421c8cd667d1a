"""Local resources loaded off the hot path: tokenizer vocabularies, YAML files.

Rule of this layer: it reads the filesystem (and tiktoken's cache) at start-up or
on reload, never per request, and hands immutable domain objects to the adapters.
It imports only ``domain``.
"""
