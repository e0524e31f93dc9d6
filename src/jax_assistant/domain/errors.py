"""The project's one exception tree (after httpx's ``HTTPError``).

Every error a user or caller can cause, or a dependency can raise, derives from :class:`JaxError` and
belongs to one family. Front ends map a family once: the CLI prints ``error: ...`` and exits 2 (1 for
``UnavailableError``), the API answers 4xx (or 503 for ``UnavailableError``). A new error is a new
subclass of a family, never a new root. Imports nothing of ours.
"""

from __future__ import annotations


class JaxError(Exception):
    """Root of every expected jax-assistant error. ``str(exc)`` is a complete, user-facing line."""


class ConfigError(JaxError):
    """A setting, config file or shipped/loaded definition (strategy, constraints, portfolio) is wrong.

    ``file`` names the file and ``key`` the setting or field, when known.
    """

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None) -> None:
        super().__init__(message)
        self.file = file
        self.key = key


class InputError(JaxError, ValueError):
    """A request, flag or argument is invalid. ``field`` names it and ``rule`` the rule it breaks."""

    def __init__(self, message: str, *, field: str | None = None, rule: str | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.rule = rule


class DataError(JaxError):
    """Market data cannot be used: ``source`` is the file or provider, ``symbol`` the symbol if one."""

    def __init__(self, message: str, *, source: str | None = None, symbol: str | None = None) -> None:
        super().__init__(message)
        self.source = source
        self.symbol = symbol


class UnavailableError(JaxError):
    """A dependency (database, data source, service) cannot be reached right now; retrying may work."""


__all__ = ["ConfigError", "DataError", "InputError", "JaxError", "UnavailableError"]
