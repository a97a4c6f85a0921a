"""The job spec: valid specs load, every kind of bad input is one SpecError naming the field."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from search_spaces import load_preset, preset_names
from tests.conftest import DATA, EXAMPLES
from tuner.cli import app
from tuner.errors import SpecError
from tuner.spec import NAME_PATTERN, load_spec, spec_from_mapping

BAD = sorted((DATA / "bad_specs").glob("*.yaml"))


def _expected_field(path: Path) -> str:
    first = path.read_bytes().split(b"\n", 1)[0].decode("utf-8", "replace")
    return first.removeprefix("# expect:").strip() if first.startswith("# expect:") else ""


def test_corpus_is_large_enough():
    assert len(BAD) >= 40


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_spec_is_one_spec_error_naming_the_field(path: Path):
    with pytest.raises(SpecError) as info:
        load_spec(path)
    message = str(info.value)
    assert message.startswith(str(path))
    assert "\n" not in message
    field = _expected_field(path)
    if field:
        assert f": {field}:" in message or f": {field} " in message or message.split(": ")[1] == field


@pytest.mark.parametrize("path", BAD[::4], ids=[p.stem for p in BAD[::4]])
def test_cli_validate_exits_2_with_one_line_and_writes_nothing(path: Path, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert result.output.startswith("error: ")
    assert list(tmp_path.iterdir()) == []


def test_a_long_path_stays_on_one_line_in_a_pipe(tmp_path: Path):
    """Paths, URLs and commands are printed whole: a deep project folder does not break them in two."""
    deep = tmp_path.joinpath(*["a-rather-long-folder-name"] * 8)
    deep.mkdir(parents=True)
    spec = deep / "job.yaml"
    spec.write_text((EXAMPLES / "digits-mlp.yaml").read_text())
    result = CliRunner().invoke(app, ["validate", str(spec)])
    assert result.exit_code == 0, result.output
    assert len(str(spec)) > 200 and result.output.splitlines()[0] == f"{spec}: ok"


def test_did_you_mean_for_unknown_keys():
    with pytest.raises(SpecError, match=r"search\.algoritm: unknown key; did you mean 'algorithm'\?"):
        spec_from_mapping({"name": "x", "search": {"algoritm": "tpe"}})
    with pytest.raises(SpecError, match=r"fixed\.dropuot: .*did you mean 'dropout'\?"):
        spec_from_mapping({"name": "x", "fixed": {"dropuot": 0.1}})


def test_example_spec_loads_with_the_issue_contract():
    spec = load_spec(EXAMPLES / "digits-mlp.yaml")
    assert spec.name == "digits-mlp" and spec.model == "mlp" and spec.data.name == "digits"
    assert spec.search.algorithm == "tpe" and spec.search.num_samples == 16
    assert set(spec.space) >= {"lr", "init", "dropout", "clip", "lr_decay", "weight_decay"}
    assert spec.trial.resources.cpu == 1 and spec.fixed == {"batch_size": 64}


def test_overrides_go_through_the_same_validation():
    spec = load_spec(EXAMPLES / "digits-mlp.yaml", overrides=["search.num_samples=8", "trial.resources.gpu=0.25"])
    assert spec.search.num_samples == 8 and spec.trial.resources.gpu == 0.25
    with pytest.raises(SpecError, match="search.num_samples"):
        load_spec(EXAMPLES / "digits-mlp.yaml", overrides=["search.num_samples=0"])
    with pytest.raises(SpecError, match="--set: must look like key.path=value"):
        load_spec(EXAMPLES / "digits-mlp.yaml", overrides=["search.num_samples"])


def test_inline_space_and_null_choice():
    spec = spec_from_mapping({"name": "x", "search": {"space": {
        "lr": {"loguniform": [1e-4, 1.0]}, "clip": {"choice": [None, 1.0, 10.0]}, "width": {"randint": [32, 256]}}}})
    assert spec.space["clip"] == {"choice": [None, 1.0, 10.0]}
    assert spec.space["width"] == {"randint": [32, 256]}


def test_data_path_resolves_relative_to_the_spec(tmp_path: Path):
    import numpy as np

    (tmp_path / "d").mkdir()
    np.savez(tmp_path / "d" / "x.npz", x=np.zeros((10, 4)), y=np.arange(10) % 2)
    (tmp_path / "job.yaml").write_text("name: j\ndata: {path: d/x.npz, format: npz}\n")
    spec = load_spec(tmp_path / "job.yaml")
    assert spec.data.path == str(tmp_path / "d" / "x.npz")


def test_presets_are_valid():
    for name in preset_names():
        assert spec_from_mapping({"name": "x", "search": {"space": name}}).space


def test_validate_prints_a_summary(tmp_path: Path):
    result = CliRunner().invoke(app, ["validate", str(EXAMPLES / "digits-mlp.yaml")])
    assert result.exit_code == 0, result.output
    assert "ok" in result.output and "tpe, 16 trials" in result.output


# ----------------------------------------------------------------------------------- hypothesis

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10, 10**6), st.floats(allow_nan=True),
                     st.text(max_size=12))
_yaml_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)), max_leaves=20)


def _round_trips(spec) -> bool:
    """An accepted spec, written out and read again, is the same spec (nothing was half-checked)."""
    return spec_from_mapping(yaml.safe_load(spec.to_yaml())) == spec


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=200))
def test_random_text_is_refused_in_one_line_or_is_a_whole_spec(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("h") / "spec.yaml"
    path.write_text(text)
    try:
        spec = load_spec(path)
    except SpecError as exc:
        assert str(exc).startswith(str(path)) and "\n" not in str(exc)
    else:
        assert NAME_PATTERN.fullmatch(spec.name) and _round_trips(spec)


_VALID = yaml.safe_load((EXAMPLES / "digits-mlp.yaml").read_text())
_PATHS = [("name",), ("trainable",), ("model",), ("data",), ("task",), ("code_dir",), ("search", "algorithm"), ("search", "num_samples"), ("search", "space"),
          ("trial", "epochs"), ("trial", "resources", "cpu"), ("fixed", "batch_size"), ("scheduler", "name"),
          ("ensemble", "top_k"), ("mlflow",), ("metric",), ("mode",), ("search", "space", "lr"),
          ("search", "max_concurrent"), ("search", "seed"), ("fixed", "lr"), ("fixed", "dropout")]


def _integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value) -> bool:
    return (_integer(value) or isinstance(value, float)) and math.isfinite(value)


# Written from the README's spec reference, not from tuner/spec.py: for these fields, whether a value
# must be accepted. A spec that accepts what the rule refuses (or the reverse) fails the test.
_RULES = {
    ("name",): lambda v: isinstance(v, str) and bool(re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", v)) and v not in (".", ".."),
    ("task",): lambda v: v in ("classification", "regression"),
    ("mode",): lambda v: v == "min",  # the example optimises val_loss
    ("metric",): lambda v: v in ("val_loss", "train_loss"),  # the metrics minimised for classification
    ("search", "algorithm"): lambda v: v in ("tpe", "random"),  # grid: the example searches floats
    ("search", "num_samples"): lambda v: v is None or (_integer(v) and 1 <= v <= 100_000),  # None: the default
    ("search", "max_concurrent"): lambda v: _integer(v) and 1 <= v <= 10_000,
    ("search", "seed"): lambda v: _integer(v) and 0 <= v < 2**32,
    ("trial", "epochs"): lambda v: _integer(v) and 1 <= v <= 100_000,
    ("trial", "resources", "cpu"): lambda v: _number(v) and 0 < v <= 1024,
    ("ensemble", "top_k"): lambda v: _integer(v) and 0 <= v <= 100,
    ("scheduler", "name"): lambda v: v in ("fifo", "asha"),
    ("fixed", "batch_size"): lambda v: _integer(v) and v >= 1,
    ("fixed", "lr"): lambda v: _number(v) and v >= 0,
    ("fixed", "dropout"): lambda v: v is None or (_number(v) and 0 <= v < 1),
}


# The values at the rules' edges, which random draws rarely hit.
_EDGES = st.sampled_from([0, 1, -1, 0.5, 1.0, 0.999, 100_000, 100_001, 10_000, 10_001, 1024, 1024.5, 2**32 - 1, 2**32,
                          True, False, None, "", "min", "max", "tpe", "grid", "asha", "regression", "a" * 101,
                          "..", "val_acc", float("inf"), float("nan"), [], {}])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_PATHS), st.one_of(_EDGES, _yaml_values))
def test_a_mutated_valid_spec_is_accepted_exactly_when_the_rule_says(path, value):
    import copy

    raw = copy.deepcopy(_VALID)
    node = raw
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[path[-1]] = value
    if path[0] == "fixed":  # a knob is searched or fixed, not both: search the preset without it
        raw["search"]["space"] = {k: v for k, v in load_preset("training_tricks").items() if k != path[1]}
    if path == ("trainable",):  # your own loop instead of the service's model and data
        raw.pop("model", None), raw.pop("data", None), raw.pop("fixed", None)
    rule = _RULES.get(path)
    try:
        spec = spec_from_mapping(raw, base_dir=EXAMPLES)
    except SpecError as exc:
        named = exc.field.startswith(path[0]) or (path == ("metric",) and exc.field == "mode")  # metric's direction
        assert "\n" not in str(exc) and named, (path, value, str(exc))
        assert rule is None or not rule(value), f"refused a legal {'.'.join(path)}={value!r}: {exc}"
    else:
        assert rule is None or rule(value), f"accepted an illegal {'.'.join(path)}={value!r}"
        assert _round_trips(spec)


def test_exponent_floats_without_a_dot_are_numbers_as_in_yaml_1_2_and_json(tmp_path: Path):
    (tmp_path / "job.yaml").write_text("name: j\nfixed: {weight_decay: 1e-5}\n"
                                       "search: {space: {lr: {loguniform: [1e-4, 1E-1]}}}\n")
    spec = load_spec(tmp_path / "job.yaml")
    assert spec.fixed["weight_decay"] == 1e-5 and spec.space["lr"] == {"loguniform": [1e-4, 0.1]}
