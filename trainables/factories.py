"""What the service's loop trains: a model factory and a data factory, built-in or your own.

    build(config, input_shape, output_dim) -> torch.nn.Module       # model: mlp, cnn or "module:function"
    load(config) -> (train, val, test)                               # data: digits, a file, or "module:function"

``input_shape`` is one example's shape and ``output_dim`` the number of classes (classification)
or of targets (regression, 1 for a scalar). Each dataset yields ``(x, y)`` pairs, like a
``torch.utils.data.TensorDataset``. The built-ins are factories of the same form: `trainables.models`
holds mlp and cnn, and a loaded `trainables.data.Dataset` is a data factory.

No torch at import: the job spec imports this to check a user's factories before anything starts.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path
from typing import Any, Callable

from trainables.knobs import MODELS

ModelFactory = Callable[[dict, tuple, int], Any]  # (config, input_shape, output_dim) -> nn.Module
DataFactory = Callable[[dict], tuple]  # config -> (train, val, test)

# How each kind of factory is called: the spec checks a user's function binds to these arguments.
SIGNATURES = {"model": ("config", "input_shape", "output_dim"), "data": ("config",),
              "trainable": ("config",)}


class FactoryError(Exception):
    """A ``module:function`` that cannot be used; the message is one line, for the spec to report."""


def is_reference(value: Any) -> bool:
    """Whether ``value`` looks like ``module:function`` (a user's code, not a built-in name)."""
    return isinstance(value, str) and ":" in value


def import_function(reference: str, code_dir: str | Path | None, *, kind: str) -> Callable:
    """Import ``module:function`` from ``code_dir`` (first) or the usual path; check it can be called as ``kind``.

    Raises `FactoryError` with one line: a malformed reference, a module that is missing or raises
    on import, a missing function, or a signature that cannot take the service's arguments.
    """
    module_name, _, name = reference.partition(":")
    if not module_name or not name or not all(part.isidentifier() for part in [*module_name.split("."), name]):
        raise FactoryError("must look like module:function (Python names)")
    where = str(code_dir) if code_dir else None
    if where:
        sys.path.insert(0, where)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise FactoryError(f"cannot import {module_name!r} from {where or 'the Python path'} ({exc})") from None
    except BaseException as exc:  # noqa: BLE001 - the user's module raised while importing: say what and where
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise FactoryError(f"importing {module_name!r} raised {type(exc).__name__}: "
                           f"{_first_line(exc)}") from None
    finally:
        if where:
            sys.path.remove(where)
    function = getattr(module, name, None)
    if not callable(function):
        raise FactoryError(f"module {module_name!r} has no function {name!r}")
    arguments = SIGNATURES[kind]
    try:
        inspect.signature(function).bind(*arguments)
    except TypeError:
        raise FactoryError(f"{name}{inspect.signature(function)} cannot be called as "
                           f"{name}({', '.join(arguments)})") from None
    except ValueError:  # a builtin without a signature: let the call itself decide
        pass
    return function


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0][:300] if lines else "(no message)"


def model_factory(model: str, code_dir: str | Path | None = None) -> ModelFactory:
    """The factory behind a spec's ``model``: a built-in name or ``module:function``."""
    if model in MODELS:
        from trainables import models

        return getattr(models, model)
    return import_function(model, code_dir, kind="model")


def data_factory(data: dict[str, Any], code_dir: str | Path | None = None, *,
                 task: str = "classification") -> DataFactory:
    """The factory behind a spec's ``data`` section: a user's ``load`` or a built-in data set, loaded now.

    A built-in data set is read once, here (in the driver), and travels to the trials as arrays
    through Ray's object store; a user's ``load`` runs in each trial's process with its config.
    """
    if data.get("factory"):
        return import_function(data["factory"], code_dir, kind="data")
    from trainables.data import load_dataset

    return load_dataset(data, task=task)
