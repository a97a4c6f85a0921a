"""Declarative search spaces: parsing, checking and conversion to Optuna distributions.

A space is a mapping from a config key to one domain::

    lr:      {loguniform: [1.0e-4, 1.0]}     # float, log scale, 0 < low < high
    dropout: {uniform: [0, 0.5]}             # float, linear scale, low < high
    width:   {randint: [32, 256]}            # int, both ends included, low < high
    batch:   {lograndint: [16, 256]}         # int, log scale, 1 <= low < high
    init:    {choice: [xavier, kaiming]}     # categorical; null, bools, numbers, strings
    momentum: {uniform: [0.5, 0.99], when: {optimizer: [momentum, nesterov]}}   # conditional

A key with ``when`` is sampled only when an earlier ``choice`` key took one of the listed values; in
a trial where it is not, the key is absent from the config (the training loop uses its default). The
space is then sampled define-by-run (`sample`), Optuna's way of searching conditional spaces.

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
CONDITION = "when"
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
    parsed: dict[str, dict[str, Any]] = {}
    for key, value in raw.items():
        where = f"{field}.{key}"
        if isinstance(value, Mapping) and CONDITION in value:
            domain = _parse_domain({k: v for k, v in value.items() if k != CONDITION}, source=source, field=where)
            parsed[str(key)] = {**domain, CONDITION: _parse_condition(value[CONDITION], parsed, source=source,
                                                                       field=f"{where}.{CONDITION}")}
        else:
            parsed[str(key)] = _parse_domain(value, source=source, field=where)
    return parsed


def _parse_condition(raw: Any, earlier: Mapping[str, Mapping[str, Any]], *, source: str,
                     field: str) -> dict[str, list]:
    """``{parent: [values]}``: the parent is a choice key sampled before this one; the values its choices."""
    if not isinstance(raw, Mapping) or len(raw) != 1:
        raise SpecError(source, field, "must be {key: [values]}: one earlier choice key and the values that "
                        "switch this one on", raw)
    (parent, values), = raw.items()
    if parent not in earlier:
        raise SpecError(source, field, "must name a key sampled before this one (keys are sampled in the "
                        "order written)", parent)
    kind, choices = domain_of(earlier[parent])
    if kind != "choice":
        raise SpecError(source, field, f"{parent} is {kind}; a condition names a choice key", parent)
    values = values if isinstance(values, list) else [values]
    for value in values or [None]:
        if not values or not any(_same(value, c) for c in choices):
            raise SpecError(source, f"{field}.{parent}", f"must be among {parent}'s choices {choices}", value)
    return {str(parent): list(values)}


def _same(a: Any, b: Any) -> bool:
    """Equal and of one type (1 is not true, 1.0 is not 1 for a choice)."""
    return type(a) is type(b) and a == b


def domain_of(entry: Mapping[str, Any]) -> tuple[str, list]:
    """(kind, args) of a parsed space entry, its condition aside."""
    (kind, args), = ((k, v) for k, v in entry.items() if k != CONDITION)
    return kind, args


def condition_of(entry: Mapping[str, Any]) -> tuple[str, list] | None:
    """(parent key, values) of a conditional entry; None for one sampled always."""
    return next(iter(entry[CONDITION].items())) if CONDITION in entry else None


def is_active(entry: Mapping[str, Any], values: Mapping[str, Any]) -> bool:
    """Whether an entry is sampled, given the values of the keys sampled before it."""
    condition = condition_of(entry)
    if condition is None:
        return True
    parent, allowed = condition
    return parent in values and any(_same(values[parent], v) for v in allowed)


class sample:  # noqa: N801 - used as a function: sample(space)(trial)
    """The space as a define-by-run function of an `optuna.Trial` (what `OptunaSearch` takes for
    conditional spaces): each key suggested in order, a conditional one only when its condition holds.
    A class, not a closure, because Tune pickles the searcher with its space."""

    def __init__(self, space: Mapping[str, Mapping[str, Any]]) -> None:
        self.space = {key: dict(entry) for key, entry in space.items()}

    def __call__(self, trial) -> None:
        distributions = to_optuna(self.space)
        values: dict[str, Any] = {}
        for key, entry in self.space.items():
            if is_active(entry, values):
                values[key] = _suggest(trial, key, distributions[key])
        return None


def _suggest(trial, key: str, distribution: od.BaseDistribution) -> Any:
    if isinstance(distribution, od.CategoricalDistribution):
        return trial.suggest_categorical(key, distribution.choices)
    if isinstance(distribution, od.IntDistribution):
        return trial.suggest_int(key, distribution.low, distribution.high, log=distribution.log)
    return trial.suggest_float(key, distribution.low, distribution.high, log=distribution.log)


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
        if any(a == b for i, a in enumerate(args) for b in args[i + 1:]):  # 1, 1.0 and true are one to Optuna
            raise SpecError(source, f"{field}.choice", "choices must be distinct (1, 1.0 and true count as one)", args)
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


def to_optuna(space: Mapping[str, Mapping[str, Any]]) -> dict[str, od.BaseDistribution]:
    """Each key's Optuna distribution (conditions aside)."""
    return {key: _to_distribution(domain) for key, domain in space.items()}


def _to_distribution(domain: Mapping[str, Any]) -> od.BaseDistribution:
    kind, args = domain_of(domain)
    if kind == "choice":
        return od.CategoricalDistribution(args)
    low, high = args
    if kind == "loguniform":
        return od.FloatDistribution(low, high, log=True)
    if kind == "uniform":
        return od.FloatDistribution(low, high)
    return od.IntDistribution(low, high, log=(kind == "lograndint"))


def representative(space: Mapping[str, Mapping[str, Any]], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """One config of a space: each active key's `midpoint` (``tuner check`` and ``tuner train``)."""
    values: dict[str, Any] = {}
    for key, entry in space.items():
        if is_active(entry, values):
            values[key] = midpoint(entry, defaults.get(key))
    return values


def midpoint(domain: Mapping[str, Any], default: Any = None) -> Any:
    """A representative value of a domain: the default if it lies inside, else the (geometric) middle."""
    kind, args = domain_of(domain)
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
