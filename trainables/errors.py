"""The one exception type for problems a user can cause and fix."""

from __future__ import annotations


class UserError(Exception):
    """Bad input: a file, a key, a flag or data. The CLI exits with code 2.

    Args:
        message: what is wrong and how to fix it, in a sentence or two.
        location: where, e.g. ``spaces/x.yaml:12 (space.lr)`` or a folder path.
    """

    def __init__(self, message: str, location: str | None = None) -> None:
        message, location = _capped(message, 2000), location and _capped(location, 500)
        super().__init__(message)
        self.message = message
        self.location = location

    def __str__(self) -> str:
        return f"{self.location}: {self.message}" if self.location else self.message


def _capped(text: str, limit: int) -> str:
    """A paragraph stays a paragraph, whatever value a message quotes."""
    if len(text) <= limit:
        return text
    return f"{text[: limit - 60]} ... ({len(text) - limit + 60:,} characters left out)"
