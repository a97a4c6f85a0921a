"""The job spec: one YAML file in, one validated, frozen `JobSpec` out.

This is the only place user input is checked. Every error is a `SpecError` that prints as one line
naming the file, the field and the value; nothing downstream re-checks.

    spec = load_spec("job.yaml", overrides=["search.num_samples=8"])

Overrides (``--set key.path=value``) are applied to the parsed file before validation, values parsed
as YAML, so they go through exactly the same checks as the file.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from urllib.parse import unquote
from typing import Any, Literal, Mapping, Sequence

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from search_spaces import condition_of, domain_of, is_active, load_preset, parse_space, preset_names
from trainables.factories import FactoryError, import_function, is_reference
from trainables.knobs import DEFAULTS, MODELS, knob_problem
from tuner.errors import SpecError, redact

__all__ = ["JobSpec", "load_spec", "spec_from_mapping", "LOOP_METRICS"]

MAX_SPEC_BYTES = 1_000_000
MAX_SPEC_NODES = 10_000  # a spec has tens of values; more means an alias bomb or a mistake
# What the service's loop reports, by task, and the direction each is optimised in.
_COSTS = {"num_params": "min", "epoch_time_s": "min"}  # for multi-objective searches: quality against cost
LOOP_METRICS = {"classification": {"val_loss": "min", "train_loss": "min", "val_acc": "max", **_COSTS},
                "regression": {"val_loss": "min", "train_loss": "min", "val_rmse": "min", **_COSTS}}
STUDY_SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg", "postgresql+psycopg2", "mysql")
NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,100}")  # whole-string match (fullmatch): no trailing newline
TRACKING_SCHEMES = ("sqlite", "http", "https", "postgresql", "postgresql+psycopg2", "mysql", "databricks")
MAX_KEY = 250  # MLflow's longest param or metric name
MAX_SEED = 2**32 - 1  # numpy's and Optuna's samplers take seeds below 2**32


def _scheme_without_password(url: str, schemes: tuple[str, ...], unknown: str, password: str) -> str:
    """A store's URL scheme, checked against ``schemes``; a URL holding a password is refused (it would
    be written into the run folder). The messages are the field's own."""
    scheme = url.split(":", 1)[0] if ":" in url else url
    if scheme not in schemes:
        raise ValueError(unknown)
    if redact(url) != url:
        raise ValueError(password)
    return scheme


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class DataSpec(_Section):
    """``data: digits``, ``data: module:function`` (your factory) or ``data: {path: ..., format: idx|npz|csv}``."""

    name: Literal["digits"] | None = None  # a built-in data set
    factory: str | None = None  # your load(config) -> (train, val, test), imported from code_dir
    path: str | None = None  # a user file (npz, csv) or folder (idx); relative to the spec's folder
    format: Literal["idx", "npz", "csv"] | None = None
    label_column: str = "label"  # csv: the column holding the labels (classes or regression targets)
    val_fraction: float = Field(0.15, gt=0, lt=0.5)  # share of examples held out for validation
    test_fraction: float = Field(0.15, gt=0, lt=0.5)  # share held out for the final test (never for selection)
    split_seed: int = Field(0, ge=0, le=MAX_SEED)  # the split is fixed by this seed, the same for every trial

    @model_validator(mode="after")
    def _one_source(self) -> DataSpec:
        if sum(x is not None for x in (self.name, self.path, self.factory)) != 1:
            raise ValueError("give one of: a built-in name (digits), module:function, or a path with a format")
        if self.path is not None and self.format is None:
            raise ValueError("format is required with a path: idx, npz or csv")
        return self


class WarmStartSpec(_Section):
    job: str  # an earlier job in the same MLflow store: its finished trials seed the sampler


class BudgetSpec(_Section):
    wall_s: float | None = Field(None, gt=0)  # no new trial starts once the search has run this long
    gpu_hours: float | None = Field(None, gt=0)  # ... or once its ended trials have used this many GPU-hours


class SearchSpec(_Section):
    algorithm: Literal["tpe", "random", "grid"] = "tpe"  # Optuna's TPESampler, RandomSampler or GridSampler
    num_samples: int | None = Field(None, ge=1, le=100_000)  # trials in the job; default 16, or the grid's size
    max_concurrent: int = Field(2, ge=1, le=10_000)  # trials running at once
    seed: int = Field(0, ge=0, le=MAX_SEED)  # the sampler's seed
    space: Any = "training_tricks"  # a preset name or an inline mapping (checked by search_spaces)
    # Configs to run first, whole or partial (the sampler completes them): what you already believe in.
    start_from: list[dict[str, Any]] = Field(default_factory=list, max_length=1000)
    warm_start: WarmStartSpec | None = None  # continue where an earlier job left off
    # The same trials, configs and (for deterministic trials on CPU) metrics run after run, at a given max_concurrent:
    # suggestions in fixed batches of max_concurrent, each waiting for the one before.
    reproducible: bool = False
    # Where the Optuna study lives: null = Optuna's journal file in the run folder; or a database URL
    # (postgresql://...) of its own, never MLflow's (both keep an alembic_version table).
    storage: str | None = None
    # Stop starting new trials once spent (running ones finish); the job says so.
    budget: BudgetSpec = BudgetSpec()
    # tpe: the most recent trials the sampler reads, besides the best 100 before them (tuner.history: a
    # suggestion after 10,000 trials costs about what one after 1,000 does); null = every trial.
    tpe_history: int | None = Field(1000, ge=100, le=100_000)

    @field_validator("storage")
    @classmethod
    def _study_database(cls, url: str | None) -> str | None:
        if url is None:
            return None
        if "://" not in url:
            raise ValueError(f"must be a database URL: {', '.join(STUDY_SCHEMES)}")
        scheme = _scheme_without_password(url, STUDY_SCHEMES, f"must be a database URL: {', '.join(STUDY_SCHEMES)}",
                                          "holds a password: give it in the environment (PGPASSWORD, ~/.pgpass) "
                                          "instead")
        if scheme == "sqlite" and not url.startswith("sqlite:////"):
            raise ValueError("a sqlite study is sqlite:////absolute/path.db (resume and tuner dashboard run "
                             "from other folders)")
        return url


class SchedulerSpec(_Section):
    name: Literal["fifo", "asha"] = "fifo"  # run every trial to the end, or stop poor ones early
    grace_period: int = Field(1, ge=1)  # asha: epochs every trial gets before it can be stopped
    max_t: int | None = Field(None, ge=1)  # asha: the most epochs a trial gets (default: trial.epochs)
    reduction_factor: float = Field(4.0, gt=1)  # asha: keep 1/reduction_factor of trials at each rung (Ray's default)


class ResourcesSpec(_Section):
    cpu: float = Field(1.0, gt=0, le=1024)  # CPUs per trial
    gpu: float = Field(0.0, ge=0, le=64)  # GPUs per trial; fractional shares a GPU (0.25 = four trials per GPU)

    @field_validator("gpu")
    @classmethod
    def _whole_above_one(cls, gpu: float) -> float:
        if gpu > 1 and gpu != int(gpu):
            raise ValueError("a share above 1 GPU must be a whole number")
        return gpu


class TrialSpec(_Section):
    epochs: int = Field(20, ge=1, le=100_000)  # epochs per trial of a model: job; asha's default max_t
    resources: ResourcesSpec = ResourcesSpec()
    max_failures: int = Field(0, ge=0, le=100)  # retries of a failed trial from its last checkpoint


class EnsembleSpec(_Section):
    top_k: int = Field(5, ge=0, le=100)  # members of the ensemble of best trials; 0 = no ensemble


class MlflowSpec(_Section):
    tracking_uri: str | None = None  # null: $MLFLOW_TRACKING_URI, else sqlite in the output directory
    experiment: str | None = None  # default: the job name
    # At the end of a job, how long to keep retrying a tracking server that is away before leaving
    # the undelivered events on disk for `tuner sync`.
    flush_timeout_s: float = Field(30.0, ge=0, le=3600)

    @field_validator("tracking_uri")
    @classmethod
    def _known_scheme(cls, uri: str | None) -> str | None:
        if uri is None:
            return None
        scheme = _scheme_without_password(uri, TRACKING_SCHEMES, f"scheme must be one of {', '.join(TRACKING_SCHEMES)}",
                                          "holds a password, which would be written into the run folder and "
                                          "MLflow: give it in MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) "
                                          "instead")
        if scheme == "sqlite":
            # Percent-decoded as SQLAlchemy does, so %2e%2e cannot climb out of the output folder.
            path = unquote(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else ""
            if not path.strip("/") or (not Path(path).is_absolute() and ".." in Path(path).parts):
                raise ValueError("a sqlite store is sqlite:////absolute/path.db, or sqlite:///relative.db "
                                 "inside the output directory")
        return uri


class RaySpec(_Section):
    address: str | None = None  # null: Ray in this process; "auto" or host:port: join a running cluster


class JobSpec(_Section):
    """A whole tuning job. Field comments are the reference README's table is made from."""

    name: str  # job name: MLflow experiment default and Ray run name; [A-Za-z0-9_.-]
    model: str | None = None  # mlp (default), cnn, or "module:function": build(config, input_shape, output_dim)
    data: DataSpec | None = None  # digits (default), "module:function": load(config), or a file
    task: Literal["classification", "regression"] = "classification"
    trainable: str | None = None  # instead of model and data: "module:function", your own Ray Tune loop
    code_dir: str | None = None  # the folder your modules are imported from (default: the spec's folder)
    # What trials report and the search optimises; a list (with a list of modes) is a multi-objective
    # search for the Pareto front, the first metric ranking trials for ASHA, the ensemble and export.
    metric: str | list[str] = "val_loss"
    mode: Literal["min", "max"] | list[Literal["min", "max"]] = "min"
    search: SearchSpec = SearchSpec()
    scheduler: SchedulerSpec = SchedulerSpec()
    trial: TrialSpec = TrialSpec()
    fixed: dict[str, Any] = {}  # constants merged into every trial's config
    ensemble: EnsembleSpec = EnsembleSpec()
    mlflow: MlflowSpec = MlflowSpec()
    ray: RaySpec = RaySpec()

    @field_validator("name")
    @classmethod
    def _safe_name(cls, name: str) -> str:
        if not NAME_PATTERN.fullmatch(name) or name in (".", ".."):
            raise ValueError("must be 1-100 of A-Z a-z 0-9 _ . - (it names a folder and an MLflow experiment)")
        return name

    @property
    def service_loop(self) -> bool:
        """Whether the service's training loop runs the trials (a model and data), not your own trainable."""
        return self.trainable is None

    @property
    def user_code(self) -> bool:
        """Whether any of the job's code is the user's (imported from code_dir, shipped to the workers)."""
        return any(is_reference(x) for x in (self.trainable, self.model, self.data and self.data.factory))

    @property
    def metrics(self) -> list[str]:
        return [self.metric] if isinstance(self.metric, str) else list(self.metric)

    @property
    def modes(self) -> list[str]:
        return [self.mode] if isinstance(self.mode, str) else list(self.mode)

    @property
    def objective(self) -> str:
        """The first metric: what ranks trials (ASHA, checkpoints, the ensemble, export's default)."""
        return self.metrics[0]

    @property
    def direction(self) -> str:
        """The first metric's mode."""
        return self.modes[0]

    @property
    def multi_objective(self) -> bool:
        return len(self.metrics) > 1

    @property
    def experiment(self) -> str:
        return self.mlflow.experiment or self.name

    @property
    def space(self) -> dict[str, dict[str, list]]:
        """The parsed search space ({key: {domain: [args]}})."""
        return self.search.space  # type: ignore[return-value]  # normalised by the loader

    def trial_config(self) -> dict[str, Any]:
        """The constant part of every trial's config (the searcher adds the sampled keys)."""
        if self.service_loop:
            return {**self.fixed, "epochs": self.trial.epochs, "metric": self.objective, "mode": self.direction}
        return dict(self.fixed)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json", exclude_defaults=False), sort_keys=False)


# --------------------------------------------------------------------------------------------- YAML


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing duplicate keys (a silent overwrite otherwise)."""

    def construct_mapping(self, node, deep=False):  # noqa: ANN001 - PyYAML's signature
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            if isinstance(key, (str, int, float, bool)):
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


# YAML 1.1 (PyYAML) reads 1e-3 as a string (its floats need a dot); YAML 1.2 and JSON read a number,
# and so does a user writing `lr: 1e-3`. The float pattern of YAML 1.2's core schema, dot optional:
_StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"""^(?:
    [-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)?
    |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X), list("-+0123456789."))


def _parse_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise SpecError(source, "", "not valid YAML: nested too deeply") from None
    except (ValueError, TypeError, OverflowError) as exc:  # a tagged or timestamp-like value PyYAML cannot build
        raise SpecError(source, "", f"not valid YAML: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(source, "", f"not valid YAML: {where}{problem}") from None


def _count_nodes(value: Any, limit: int) -> int:
    """Count values as if aliases were expanded, stopping past ``limit`` (alias bombs stop here)."""
    count, stack = 0, [value]
    while stack:
        item = stack.pop()
        count += 1
        if count > limit:
            return count
        if isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return count


# ---------------------------------------------------------------------------------------- loading


def load_spec(path: str | Path, *, overrides: Sequence[str] = ()) -> JobSpec:
    """Read, override and validate a spec file. Raises `SpecError` on any problem."""
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise SpecError(source, "", "no such file")
    with open(path, "rb") as f:
        raw_bytes = f.read(MAX_SPEC_BYTES + 1)  # never more than that, whatever the file's size
    if len(raw_bytes) > MAX_SPEC_BYTES:
        raise SpecError(source, "", f"larger than {MAX_SPEC_BYTES} bytes; a spec is a short file")
    try:
        text = raw_bytes.decode("utf-8")
    except UnicodeDecodeError:
        raise SpecError(source, "", "not UTF-8 text") from None
    raw = _parse_yaml(text, source)
    if raw is None:
        raise SpecError(source, "", "is empty: a spec is a mapping with at least a name")
    return spec_from_mapping(raw, source=source, base_dir=path.resolve().parent, overrides=overrides)


def spec_from_mapping(raw: Any, *, source: str = "spec", base_dir: Path | None = None,
                      overrides: Sequence[str] = ()) -> JobSpec:
    """Validate an already parsed spec (``base_dir`` resolves relative paths; default: cwd)."""
    base_dir = base_dir or Path.cwd()
    if not isinstance(raw, Mapping):
        raise SpecError(source, "", "must be a mapping of fields (name: ..., trainable: ...)", raw)
    if _count_nodes(raw, MAX_SPEC_NODES) > MAX_SPEC_NODES:
        raise SpecError(source, "", f"expands to more than {MAX_SPEC_NODES} values (YAML aliases?)")
    raw = _plain(raw)
    for override in overrides:
        _apply_override(raw, override, source)
    if overrides and _count_nodes(raw, MAX_SPEC_NODES) > MAX_SPEC_NODES:
        raise SpecError(source, "--set", f"expands to more than {MAX_SPEC_NODES} values (YAML aliases?)")
    if isinstance(raw.get("data"), str):
        raw["data"] = {"factory" if ":" in raw["data"] else "name": raw["data"]}
    try:
        spec = JobSpec.model_validate(raw)
    except ValidationError as exc:
        raise _to_spec_error(exc, source) from None
    return _check_semantics(spec, source, base_dir)


def _plain(value: Any) -> Any:
    """A deep copy with plain dicts/lists, so overrides never touch the caller's objects."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _apply_override(raw: dict, override: str, source: str) -> None:
    key, sep, text = override.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise SpecError(source, "--set", "must look like key.path=value", override)
    value = _parse_yaml(text, f"{source} (--set {key})") if text.strip() else None
    if _count_nodes(value, MAX_SPEC_NODES) > MAX_SPEC_NODES:
        raise SpecError(source, f"--set {key}", f"expands to more than {MAX_SPEC_NODES} values (YAML aliases?)")
    value = _plain(value)
    node = raw
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise SpecError(source, ".".join(parts[: i + 1]), "is not a mapping, so it has no sub-keys to --set", child)
        node = child
    node[parts[-1]] = value


def _fields_at(loc: Sequence[Any]) -> list[str]:
    """The field names of the section at ``loc`` (for did-you-mean)."""
    model: Any = JobSpec
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            break
        annotation = field.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if model is None:
            return []
    return list(getattr(model, "model_fields", {}))


def _union_tag(part: Any) -> bool:
    """The tags pydantic puts in an error's location for union members ("str", "function-after[...]", ...)."""
    return isinstance(part, str) and (part in ("str", "int", "float", "bool", "none")
                                      or bool(re.fullmatch(r"[a-z-]+\[.*\]", part)) or part.startswith("function-"))


def _to_spec_error(exc: ValidationError, source: str) -> SpecError:
    error = exc.errors()[0]
    # Drop the union-member tags pydantic puts in locations ("str", "function-after[...]", ...).
    kind = error["type"]
    *path, last = error["loc"] or ("",)
    loc = [part for part in path if not _union_tag(part)]
    if kind == "extra_forbidden" or not _union_tag(last):  # an unknown key is the user's, whatever it looks like
        loc.append(last)
    field = ".".join(str(p) for p in loc)
    if kind == "extra_forbidden":
        known = _fields_at(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(known)}"
        return SpecError(source, field, f"unknown key{hint}")
    if kind == "missing":
        return SpecError(source, field, "is required")
    if kind == "literal_error":
        return SpecError(source, field, f"must be {error['ctx']['expected']}", error["input"])
    message = error["msg"].removeprefix("Value error, ")
    message = message[0].lower() + message[1:]
    if kind == "model_type" or kind == "dict_type":
        message = "must be a mapping"
    return SpecError(source, field, message, error["input"])


# ------------------------------------------------------------------------------- semantic checks


def _check_semantics(spec: JobSpec, source: str, base_dir: Path) -> JobSpec:
    """Checks that need more than one field, the file system or the trainable's knobs."""
    space = spec.search.space
    if isinstance(space, str) and space:
        if space not in preset_names():
            close = difflib.get_close_matches(space, preset_names(), n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known presets: {', '.join(preset_names())}"
            raise SpecError(source, "search.space", f"unknown preset; {hint}", space)
        parsed = load_preset(space, source=source)
    else:
        parsed = parse_space(space, source=source)
    for section, keys in (("fixed", spec.fixed), ("search.space", parsed)):
        for key in keys:
            if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY:
                raise SpecError(source, section, f"keys are names of 1 to {MAX_KEY} characters (MLflow's limit)", key)
    _check_objectives(spec, source)
    updates: dict[str, Any] = {"search": _check_search(spec, parsed, source)}
    code_dir = (base_dir / spec.code_dir).resolve() if spec.code_dir else base_dir
    if spec.user_code:
        updates["code_dir"] = str(code_dir)

    if spec.trainable is not None:
        _check_trainable(spec, source, code_dir)
    else:
        model = spec.model or "mlp"
        if is_reference(model):
            _import(model, code_dir, "model", source)
        elif model not in MODELS:
            close = difflib.get_close_matches(model, MODELS, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"built-in models: {', '.join(MODELS)}"
            raise SpecError(source, "model", f"not a built-in model or module:function; {hint}", model)
        data = spec.data or DataSpec(name="digits")
        if data.factory is not None:
            _import(data.factory, code_dir, "data", source)
        if data.path is not None:
            data = data.model_copy(update={"path": str(_existing_data(data, base_dir, source))})
        if model == "cnn" and data.format == "csv":
            raise SpecError(source, "data.format", "the cnn needs image-shaped inputs (idx or npz)", "csv")
        updates.update(model=model, data=data)
        _check_knobs(spec, parsed, source, builtin_only=model in MODELS and data.factory is None)
    if spec.scheduler.max_t is not None and spec.scheduler.grace_period > spec.scheduler.max_t:
        raise SpecError(source, "scheduler.grace_period", f"must be <= max_t ({spec.scheduler.max_t})",
                        spec.scheduler.grace_period)
    return spec.model_copy(update=updates)


def _check_objectives(spec: JobSpec, source: str) -> None:
    metrics, modes = spec.metrics, spec.modes
    if not 1 <= len(metrics) <= 10 or len(set(metrics)) != len(metrics):
        raise SpecError(source, "metric", "must be a name or a list of 1 to 10 different names", spec.metric)
    if isinstance(spec.metric, str) != isinstance(spec.mode, str) or len(modes) != len(metrics):
        raise SpecError(source, "mode", f"must give one mode per metric ({len(metrics)})", spec.mode)
    for metric in metrics:
        if not 1 <= len(metric) <= MAX_KEY - len("best_"):
            raise SpecError(source, "metric", f"must be 1 to {MAX_KEY - len('best_')} characters", metric)


def _check_search(spec: JobSpec, space: dict[str, Any], source: str) -> SearchSpec:
    """The search section against its space: the grid, reproducibility, start_from, the study's database."""
    search = spec.search
    num_samples = search.num_samples or 16
    if search.algorithm == "grid":
        size = 1
        for key, entry in space.items():
            kind, args = domain_of(entry)
            if kind != "choice" or "when" in entry:
                raise SpecError(source, f"search.space.{key}", "a grid searches choice keys without a condition "
                                f"(this one is {kind}{' with when' if 'when' in entry else ''})")
            size *= len(args)
            if size > 100_000:
                raise SpecError(source, "search.space", "the grid has more than 100000 points", size)
        if search.start_from:
            raise SpecError(source, "search.start_from", "a grid runs each of its points once; give no start_from")
        if search.num_samples is not None and search.num_samples > size:
            raise SpecError(source, "search.num_samples", f"the grid has {size} points", search.num_samples)
        num_samples = search.num_samples or size
    # The default passes (a saved spec holds every field); another value would be dropped without a word.
    if search.algorithm != "tpe" and search.tpe_history != SearchSpec.model_fields["tpe_history"].default:
        raise SpecError(source, "search.tpe_history", f"only tpe reads the history (algorithm is {search.algorithm})",
                        search.tpe_history)
    if search.reproducible and spec.scheduler.name == "asha":
        raise SpecError(source, "scheduler.name", "asha stops trials by the order their results arrive, which no "
                        "run repeats; with search.reproducible use fifo", "asha")
    for i, point in enumerate(search.start_from):
        for key, value in point.items():
            where = f"search.start_from[{i}].{key}"
            if key not in space:
                raise SpecError(source, where, f"not a searched key; searched: {', '.join(space)}")
            if not _in_domain(value, domain_of(space[key])):
                kind, args = domain_of(space[key])
                raise SpecError(source, where, f"outside the space ({kind} {args})", value)
            if not is_active(space[key], point):
                parent, values = condition_of(space[key])  # type: ignore[misc]
                raise SpecError(source, where, f"is sampled only when {parent} is one of {values}: give {parent} "
                                "one of them in the same config")
    if search.budget.gpu_hours is not None and spec.trial.resources.gpu == 0:
        raise SpecError(source, "search.budget.gpu_hours", "the trials use no GPU (trial.resources.gpu is 0)",
                        search.budget.gpu_hours)
    if search.storage is not None and spec.mlflow.tracking_uri is not None and \
            search.storage.split("?")[0] == spec.mlflow.tracking_uri.split("?")[0]:
        raise SpecError(source, "search.storage", "is MLflow's database; give the study a database of its own "
                        "(both keep an alembic_version table)", search.storage)
    if search.warm_start is not None and not NAME_PATTERN.fullmatch(search.warm_start.job):
        raise SpecError(source, "search.warm_start.job", "not a job name", search.warm_start.job)
    return search.model_copy(update={"space": space, "num_samples": num_samples})


def _in_domain(value: Any, domain: tuple[str, list]) -> bool:
    kind, args = domain
    if kind == "choice":
        return any(type(value) is type(c) and value == c for c in args)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind in ("randint", "lograndint") and not isinstance(value, int):
        return False
    return number and args[0] <= value <= args[1]


def _check_trainable(spec: JobSpec, source: str, code_dir: Path) -> None:
    """A user's own Ray Tune loop: no model or data of ours, an importable function."""
    if spec.trainable in MODELS:
        raise SpecError(source, "trainable", f"{spec.trainable} is a built-in model: write model: {spec.trainable}",
                        spec.trainable)
    if spec.model is not None or spec.data is not None:
        raise SpecError(source, "model" if spec.model is not None else "data",
                        "is for the service's training loop; a trainable (your own Ray loop) builds its own "
                        "model and reads its own data (pass paths through fixed)")
    _import(spec.trainable, code_dir, "trainable", source)  # type: ignore[arg-type]


def _import(reference: str, code_dir: Path, kind: str, source: str) -> None:
    try:
        import_function(reference, code_dir, kind=kind)
    except FactoryError as exc:
        raise SpecError(source, "data" if kind == "data" else kind, str(exc), reference) from None


def _check_knobs(spec: JobSpec, space: Mapping[str, Mapping[str, list]], source: str, *, builtin_only: bool) -> None:
    """Knob values against their rules. With only built-ins (mlp/cnn on built-in data), a key that is no
    knob is a typo; with your own model or data, it is passed in ``config`` to your factories."""
    metrics = LOOP_METRICS[spec.task]
    for metric, mode in zip(spec.metrics, spec.modes):
        if metric not in metrics:
            raise SpecError(source, "metric", f"the training loop reports {', '.join(metrics)} for {spec.task}", metric)
        if metrics[metric] != mode:
            raise SpecError(source, "mode", f"{metric} is to be {metrics[metric]}imised", mode)
    knobs = [k for k in DEFAULTS if k != "epochs"]
    for section, keys in (("fixed", spec.fixed), ("search.space", space)):
        for key in keys:
            if key == "epochs":
                raise SpecError(source, f"{section}.epochs", "set trial.epochs instead")
            if builtin_only and key not in DEFAULTS:
                close = difflib.get_close_matches(str(key), knobs, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"knobs: {', '.join(knobs)}"
                raise SpecError(source, f"{section}.{key}", f"not a knob of the training loop; {hint}")
    for key, value in spec.fixed.items():
        if (problem := knob_problem(key, value)) is not None:
            raise SpecError(source, f"fixed.{key}", problem, value)
    for key, domain in space.items():
        if key in spec.fixed:
            raise SpecError(source, f"search.space.{key}", "is also in fixed; a knob is either searched or fixed")
        kind, args = domain_of(domain)
        for value in args:
            if (problem := knob_problem(key, value)) is not None:
                raise SpecError(source, f"search.space.{key}.{kind}", problem, value)


def _existing_data(data: DataSpec, base_dir: Path, source: str) -> Path:
    path = (base_dir / data.path).resolve()  # type: ignore[operator]
    if data.format == "idx":
        if not path.is_dir():
            raise SpecError(source, "data.path", "idx data is a folder holding *-images-idx3-ubyte[.gz] and "
                            "*-labels-idx1-ubyte[.gz]; no such folder", data.path)
        if not list(path.glob("*images-idx3-ubyte*")) or not list(path.glob("*labels-idx1-ubyte*")):
            raise SpecError(source, "data.path", "no *-images-idx3-ubyte / *-labels-idx1-ubyte files in this folder",
                            data.path)
    elif not path.is_file():
        raise SpecError(source, "data.path", "no such file", data.path)
    return path
