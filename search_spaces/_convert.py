"""Declarative search spaces: parsing, checking and conversion to Optuna distributions.

A space is a mapping from a config key to one domain::

    lr:      {loguniform: [1.0e-4, 1.0]}     # float, log scale, 0 < low < high
    dropout: {uniform: [0, 0.5]}             # float, linear scale, low < high
    width:   {randint: [32, 256]}            # int, both ends included, low < high
    batch:   {lograndint: [16, 256]}         # int, log scale, 1 <= low < high
    init:    {choice: [xavier, kaiming]}     # categorical; null, bools, numbers, strings

A preset is a YAML file of that form in this folder, named by its stem (``training_tricks``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import optuna.distributions as od
import yaml

from tuner.errors import SpecError

PRESET_DIR = Path(__file__).resolve().parent

DOMAINS = ("loguniform", "uniform", "randint", "lograndint", "choice")
_SCALAR = (type(None), bool, int, float, str)


def preset_names() -> list[str]:
    """The names of the presets shipped in ``search_spaces/``."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(name: str, *, source: str = "", field: str = "search.space") -> dict[str, Any]:
    """Read a preset by name and return it parsed and checked."""
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        raise SpecError(source, field, f"unknown preset; known presets: {', '.join(preset_names())}", name)
    raw = yaml.safe_load(path.read_text())
    return parse_space(raw, source=f"{source}" if source else str(path), field=field)


def parse_space(raw: Any, *, source: str = "", field: str = "search.space") -> dict[str, dict[str, list]]:
    """Check a space mapping and return it normalised (``{key: {domain: [args]}}``)."""
    if not isinstance(raw, Mapping):
        raise SpecError(source, field, "must be a preset name or a mapping of key: {domain: [...]}", raw)
    if not raw:
        raise SpecError(source, field, "is empty: name at least one key to search")
    return {str(key): _parse_domain(value, source=source, field=f"{field}.{key}") for key, value in raw.items()}


def _parse_domain(value: Any, *, source: str, field: str) -> dict[str, list]:
    if not isinstance(value, Mapping) or len(value) != 1:
        raise SpecError(source, field, f"must be one of {{{' | '.join(DOMAINS)}: [...]}}", value)
    (domain, args), = value.items()
    if domain not in DOMAINS:
        raise SpecError(source, field, f"unknown domain; use one of {', '.join(DOMAINS)}", domain)
    if not isinstance(args, list) or not args:
        raise SpecError(source, f"{field}.{domain}", "must be a non-empty list", args)
    if domain == "choice":
        for choice in args:
            if not isinstance(choice, _SCALAR):
                raise SpecError(source, f"{field}.choice", "choices must be null, booleans, numbers or strings", choice)
        if len({(type(c), c) for c in args}) != len(args):
            raise SpecError(source, f"{field}.choice", "choices must be distinct", args)
        return {"choice": list(args)}
    if len(args) != 2:
        raise SpecError(source, f"{field}.{domain}", "must be [low, high]", args)
    is_int = domain in ("randint", "lograndint")
    for bound in args:
        ok = isinstance(bound, int) if is_int else isinstance(bound, (int, float))
        if isinstance(bound, bool) or not ok or (isinstance(bound, float) and not math.isfinite(bound)):
            kind = "integers" if is_int else "finite numbers"
            raise SpecError(source, f"{field}.{domain}", f"low and high must be {kind}", args)
    low, high = args
    if not low < high:
        raise SpecError(source, f"{field}.{domain}", "low must be smaller than high", args)
    if domain == "loguniform" and low <= 0:
        raise SpecError(source, f"{field}.{domain}", "low must be > 0 for a log scale", low)
    if domain == "lograndint" and low < 1:
        raise SpecError(source, f"{field}.{domain}", "low must be >= 1 for a log scale", low)
    return {domain: [low if is_int else float(low), high if is_int else float(high)]}


def to_optuna(space: Mapping[str, Mapping[str, list]]) -> dict[str, od.BaseDistribution]:
    """Convert a parsed space to the Optuna distributions ``OptunaSearch`` samples from."""
    return {key: _to_distribution(domain) for key, domain in space.items()}


def _to_distribution(domain: Mapping[str, list]) -> od.BaseDistribution:
    (kind, args), = domain.items()
    if kind == "choice":
        return od.CategoricalDistribution(args)
    low, high = args
    if kind == "loguniform":
        return od.FloatDistribution(low, high, log=True)
    if kind == "uniform":
        return od.FloatDistribution(low, high)
    return od.IntDistribution(low, high, log=(kind == "lograndint"))


def midpoint(domain: Mapping[str, list], default: Any = None) -> Any:
    """A representative value of a domain: the default if it lies inside, else the (geometric) middle.

    Used by ``tuner check`` to run the sanity checks on one config before a sweep.
    """
    (kind, args), = domain.items()
    if kind == "choice":
        return default if default in args else args[0]
    low, high = args
    if default is not None and not isinstance(default, bool) and isinstance(default, (int, float)):
        if low <= default <= high:
            return default
    if kind == "loguniform":
        return math.sqrt(low * high)
    if kind == "uniform":
        return (low + high) / 2
    if kind == "lograndint":
        return int(round(math.sqrt(low * high)))
    return (low + high) // 2
