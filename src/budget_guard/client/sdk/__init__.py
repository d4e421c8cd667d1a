"""Drop-in wrappers for the official SDKs: the only part of the package that imports
``openai`` or ``anthropic`` (an import-linter contract), loaded by ``guard.wrap``."""
