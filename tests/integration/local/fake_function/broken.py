"""A handler module that fails at import, like a function with a bad configuration."""

raise RuntimeError("configuration is missing")
