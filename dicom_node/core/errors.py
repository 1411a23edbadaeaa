"""The errors a sysadmin can act on, shared by every layer (no imports of ours)."""


class ConfigError(Exception):
    """The configuration cannot be used; the message says what to fix."""


class SchemaError(RuntimeError):
    """The index cannot be used with this version of Laurel; the message says what to do."""


class StartupError(RuntimeError):
    """The node cannot start; the message says why and what to do."""
