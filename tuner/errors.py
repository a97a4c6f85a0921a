"""The project's exception types.

A `UserError` is something the user can fix (a bad spec, a missing file, an unknown job). The CLI
prints it as one line and exits with code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import re
import unicodedata
from typing import Any, Iterator

__all__ = ["UserError", "SpecError", "NotFoundError", "TrackingUnavailable", "TrackingRefused", "printable",
           "is_refusal", "is_item_refusal", "tracking_errors", "redact", "describe"]

_MAX_SHOWN = 80


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def printable(text: str) -> str:
    """``text`` with control characters (newlines, escape codes) written as escapes: one line that
    cannot move the cursor or recolour a terminal, whatever a spec or a server put in it."""
    return "".join(repr(c)[1:-1] if unicodedata.category(c) == "Cc" else c for c in text)


class UserError(Exception):
    """An error in what the user asked for; printed as one line, exit code 2."""

    exit_code = 2

    def __str__(self) -> str:
        return printable(super().__str__())


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


class TrackingUnavailable(UserError):
    """The MLflow store did not answer (connection refused, timed out, 5xx): try again later."""


class TrackingRefused(UserError):
    """The MLflow store answered and refused the request (4xx): retrying the same request cannot help."""


def is_item_refusal(exc: BaseException) -> bool:
    """Whether MLflow refused what was sent (a name or value it never takes: 400), not who sent it
    (401, 403), where (404) or when (5xx, 408, 429): only such an item may be dropped."""
    from mlflow.exceptions import MlflowException

    return isinstance(exc, MlflowException) and exc.error_code in ("INVALID_PARAMETER_VALUE", "BAD_REQUEST")


def is_refusal(exc: BaseException) -> bool:
    """Whether an MLflow error is a permanent refusal of the request (a 4xx answer: an invalid name or
    value, a missing run, no permission) rather than an outage (no answer, 5xx, 408 or 429)."""
    from mlflow.exceptions import MlflowException

    if not isinstance(exc, MlflowException):
        return False
    status = exc.get_http_status_code()
    return 400 <= status < 500 and status not in (408, 429)


@contextlib.contextmanager
def tracking_errors(tracking_uri: str, doing: str) -> Iterator[None]:
    """MLflow failures while ``doing`` something with the store, as one line: a refusal or an outage."""
    from mlflow.exceptions import MlflowException
    from requests.exceptions import RequestException
    from sqlalchemy.exc import OperationalError

    from tuner.settings import mlflow_settings

    try:
        with mlflow_settings():
            yield
    except (MlflowException, RequestException, OperationalError, ConnectionError, TimeoutError) as exc:
        first = redact(next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__))[:300]
        where = redact(tracking_uri)
        if is_refusal(exc):
            raise TrackingRefused(f"MLflow at {where} refused to {doing}: {first}") from None
        raise TrackingUnavailable(f"MLflow at {where} did not answer when asked to {doing} ({first}); "
                                  "try again when it is reachable") from None


_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*):[^/\s@]*@")
_SECRET_QUERY = re.compile(r"(?P<head>[?&](?:password|passwd|pwd|token|secret|access_token)=)[^&\s]*", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with every URL's password (``user:pw@``) and secret query value (``?password=``)
    replaced by ***, wherever in the text: for messages, logs, tags and files."""
    return _SECRET_QUERY.sub(r"\g<head>***", _USERINFO.sub(r"\g<head>:***@", text))



def describe(exc: BaseException) -> str:
    """One line for an exception raised by code the user gave (a data file, a model): its type, its
    message's first line and where it was raised (file:line), without the traceback."""
    import traceback

    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if lines and lines[0].startswith("Traceback"):  # an engine's wrapper (TuneError) around the real error
        return f"{type(exc).__name__}: {redact(lines[-1])[:300]}"
    message = redact(lines[0] if lines else "")
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {message[:300]}{where}"
