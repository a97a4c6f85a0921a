"""The project's exception types.

A `UserError` is something the user can fix (a bad spec, a missing file, an unknown job). The CLI
prints it as one line and exits with code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from typing import Any

__all__ = ["UserError", "SpecError", "NotFoundError"]

_MAX_SHOWN = 80


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


class UserError(Exception):
    """An error in what the user asked for; printed as one line, exit code 2."""

    exit_code = 2


class SpecError(UserError):
    """A job spec (or an override of one) is invalid.

    Prints as ``job.yaml: search.space.lr: low must be > 0 for a log scale (got 0)``.
    """

    _NO_VALUE = object()

    def __init__(self, source: str, field: str, message: str, got: Any = _NO_VALUE) -> None:
        self.source = source
        self.field = field
        self.message = message
        self.got = got
        parts = [p for p in (source, field) if p]
        text = ": ".join(parts + [message])
        if got is not SpecError._NO_VALUE:
            text += f" (got {_short(got)})"
        super().__init__(text)


class NotFoundError(UserError):
    """A job, run or file the user named does not exist."""
