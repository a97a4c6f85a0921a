"""Your own model and data through the service's loop: validation, knobs, checks, runs, the ensemble
as an MLflow model (loaded and served where your folder is unknown), export and train, regression."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from torch import nn

from tests.conftest import DATA, EXAMPLES, children, free_port, stop_group, wait_for_http
from trainables.train import build, fit, resolve_config
from tuner.errors import SpecError
from tuner.spec import spec_from_mapping

USER_MODELS = DATA / "user_models"
CLI = [sys.executable, "-m", "tuner.cli"]


def _raw(**fields):
    return {"name": "own", "model": "nets:build", "data": "digits_data:load",
            "search": {"num_samples": 2, "space": {"lr": {"loguniform": [0.003, 0.03]}}},
            "trial": {"epochs": 3}, "ensemble": {"top_k": 0}, **fields}


def _spec(**fields):
    return spec_from_mapping(_raw(**fields), base_dir=USER_MODELS)


def _env_without_user_code() -> dict[str, str]:
    """The environment of a user who never set PYTHONPATH."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


# ----------------------------------------------------------------------------------- validation


@pytest.mark.parametrize("field, value, message", [
    ("model", "no_such_module:build", "cannot import 'no_such_module'"),
    ("model", "nets:no_such_function", "module 'nets' has no function 'no_such_function'"),
    ("model", "wrong_signature:build", "build(config) cannot be called as build(config, input_shape, output_dim)"),
    ("model", "raises_on_import:build", "importing 'raises_on_import' raised RuntimeError: CUDA driver not found"),
    ("model", "nets:", "must look like module:function"),
    ("model", "resnet", "not a built-in model or module:function"),
    ("data", "no_such_module:load", "cannot import 'no_such_module'"),
    ("data", "digits_data:nope", "module 'digits_data' has no function 'nope'"),
    ("data", "wrong_signature:load", "load(config, split) cannot be called as load(config)"),
    ("data", "raises_on_import:load", "raised RuntimeError: CUDA driver not found"),
])
def test_a_bad_factory_is_one_spec_error_naming_the_field(field, value, message):
    with pytest.raises(SpecError) as caught:
        _spec(**{field: value})
    text = str(caught.value)
    assert caught.value.field == field and message in text and "\n" not in text, text


def test_the_cli_refuses_a_module_that_raises_on_import_with_one_line_and_exit_2(tmp_path):
    spec = tmp_path / "job.yaml"
    spec.write_text("name: own\nmodel: raises_on_import:build\ndata: digits\n"
                    f"code_dir: {USER_MODELS}\n")
    proc = subprocess.run([*CLI, "run", str(spec)], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env=_env_without_user_code())
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "model: importing 'raises_on_import'" in proc.stderr
    assert not (tmp_path / "tuner_runs").exists()  # nothing started


def test_a_data_factory_returning_two_splits_is_one_line_from_tuner_check(tmp_path):
    from typer.testing import CliRunner

    from tuner.cli import app

    spec = tmp_path / "job.yaml"
    spec.write_text(json.dumps(_raw(data="bad_data:two_splits", code_dir=str(USER_MODELS))))
    result = CliRunner().invoke(app, ["check", str(spec)])
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert "the data factory must return (train, val, test)" in result.output and "tuple of 2" in result.output


def test_keys_for_your_factories_pass_and_typos_of_the_builtins_do_not():
    spec = _spec(fixed={"hidden": 16, "data_path": "x"})
    assert spec.trial_config()["hidden"] == 16 and spec.code_dir == str(USER_MODELS)
    with pytest.raises(SpecError, match="fixed.widht: not a knob of the training loop; did you mean 'width'"):
        spec_from_mapping({"name": "b", "model": "mlp", "fixed": {"widht": 16}})
    with pytest.raises(SpecError, match="fixed.dropout: must be null"):  # knobs are checked for any model
        _spec(fixed={"dropout": 1.5})


def test_model_and_trainable_do_not_mix_and_trainable_mlp_says_what_to_write():
    with pytest.raises(SpecError, match="trainable: mlp is a built-in model: write model: mlp"):
        spec_from_mapping({"name": "b", "trainable": "mlp"})
    with pytest.raises(SpecError, match="model: is for the service's training loop"):
        spec_from_mapping({"name": "b", "trainable": "toy_trainable:train", "model": "mlp",
                           "code_dir": str(DATA / "user_trainables")}, base_dir=DATA)


def test_regression_metrics_and_modes_are_checked_per_task():
    base = {"name": "r", "model": "tabular:build", "data": "diabetes:load", "task": "regression",
            "code_dir": str(EXAMPLES / "diabetes-regression")}
    assert spec_from_mapping({**base, "metric": "val_rmse"}).metric == "val_rmse"
    with pytest.raises(SpecError, match="metric: the training loop reports val_loss, train_loss, val_rmse"):
        spec_from_mapping({**base, "metric": "val_acc", "mode": "max"})


# ------------------------------------------------------------------------------------- the knobs


def _nets():
    sys.path.insert(0, str(USER_MODELS))
    try:
        import nets
    finally:
        sys.path.remove(str(USER_MODELS))
    return nets


def test_init_keep_leaves_the_models_own_init_and_a_scheme_replaces_it():
    nets = _nets()
    own = build(nets.build, resolve_config({}), (1, 8, 8), 10)
    biases = [b for m in own.modules() if isinstance(m, nn.Conv2d) for b in m.bias.detach().tolist()]
    assert biases == pytest.approx([nets.OWN_BIAS] * 8)
    lecun = build(nets.build, resolve_config({"init": "lecun"}), (1, 8, 8), 10)
    hidden = lecun.head[1]  # Linear(512, 32)
    assert all(float(m.bias.detach().abs().max()) == 0.0
               for m in lecun.modules() if isinstance(m, (nn.Linear, nn.Conv2d)))
    assert float(hidden.weight.detach().std()) == pytest.approx(1 / math.sqrt(512), rel=0.1)


def test_dropout_sets_every_dropout_module_and_null_keeps_the_models_rates():
    nets = _nets()
    rates = lambda model: [m.p for m in model.modules() if isinstance(m, (nn.Dropout, nn.Dropout2d))]  # noqa: E731
    assert rates(build(nets.build, resolve_config({}), (1, 8, 8), 10)) == [0.1, 0.2]
    assert rates(build(nets.build, resolve_config({"dropout": 0.35}), (1, 8, 8), 10)) == [0.35, 0.35]


def test_the_loop_trains_a_user_model_on_a_user_dataset_reproducibly():
    sys.path.insert(0, str(USER_MODELS))
    try:
        import digits_data
    finally:
        sys.path.remove(str(USER_MODELS))
    nets = _nets()
    runs = []
    for _ in range(2):
        history = []
        fit({"epochs": 2, "clip": 1.0, "lr_decay": 0.5}, model=nets.build,
            data=digits_data.load, report=lambda m, c: history.append(m))
        runs.append([{k: v for k, v in m.items() if k != "epoch_time_s"} for m in history])  # a clock reading
    assert runs[0] == runs[1]
    assert [m["lr"] for m in runs[0]] == pytest.approx([0.01, 0.005])
    assert runs[0][-1]["val_acc"] > 0.5 and runs[0][0]["init_loss"] == pytest.approx(math.log(10), rel=0.2)


@pytest.mark.parametrize("model, data", [("nets:build", "digits"), ("mlp", "digits_data:load"),
                                         ("cnn", "digits_data:load")])
def test_your_model_and_the_built_in_data_combine_freely(model, data):
    from tuner.run import factories, trial_config

    spec = _spec(model=model, data=data)
    made = factories(spec)
    history = []
    fit({**trial_config(spec), "epochs": 1}, model=made.model, data=made.data,
        report=lambda m, c: history.append(m))
    assert history[0]["val_acc"] > 0.3, history


def test_regression_reports_mse_and_rmse_and_starts_near_the_targets_variance():
    sys.path.insert(0, str(EXAMPLES / "diabetes-regression"))
    try:
        import diabetes
        import tabular
    finally:
        sys.path.remove(str(EXAMPLES / "diabetes-regression"))
    history = []
    fit({"epochs": 3, "lr": 0.003}, model=tabular.build, data=diabetes.load, task="regression",
        report=lambda m, c: history.append(m))
    last = history[-1]
    assert set(last) >= {"val_loss", "val_rmse", "train_loss", "grad_norm"} and "val_acc" not in last
    assert last["val_rmse"] == pytest.approx(math.sqrt(last["val_loss"]))
    _, val, _ = diabetes.load({})
    assert history[0]["init_loss"] == pytest.approx(float(val.tensors[1].var(unbiased=False)), rel=0.2)
    assert last["val_loss"] < history[0]["init_loss"]


def test_tuner_check_runs_the_three_checks_on_your_model(tmp_path):
    from typer.testing import CliRunner

    from tuner.cli import app

    spec = tmp_path / "job.yaml"
    spec.write_text(json.dumps(_raw(code_dir=str(USER_MODELS))))
    ok = CliRunner().invoke(app, ["check", str(spec)])
    assert ok.exit_code == 0, ok.output
    assert ok.output.count("pass") == 3 and "ln(C)" in ok.output
    broken = CliRunner().invoke(app, ["check", str(spec), "--set", "fixed.lr=0.0",
                                      "--set", "search.space={dropout: {uniform: [0, 0.3]}}"])
    assert broken.exit_code == 1 and "FAIL" in broken.output


# --------------------------------------------------------------------------------- real Ray runs


@pytest.mark.slow
def test_a_diverging_user_model_trial_fails_alone(ray_session, tmp_path):
    from tuner.run import run_job

    spec = spec_from_mapping({
        "name": "diverges", "model": "tabular:build", "data": "diabetes:load", "task": "regression",
        "code_dir": str(EXAMPLES / "diabetes-regression"), "trial": {"epochs": 2}, "ensemble": {"top_k": 0},
        "search": {"num_samples": 2, "space": {"lr": {"choice": [1.0e6, 0.001]}}}, "fixed": {"optimizer": "sgd"}})
    result = run_job(spec, output_root=tmp_path)
    _, _, runs = children(result.tracking_uri, result.parent_run_id)
    by_lr = {float(r.data.params["lr"]): r for r in runs}
    assert by_lr[1.0e6].info.status == "FAILED" and by_lr[1.0e6].data.tags["tuner.end"] == "diverged"
    assert by_lr[0.001].info.status == "FINISHED" and result.succeeded


@pytest.mark.slow
def test_max_failures_resumes_a_user_model_from_its_best_epoch(ray_session, tmp_path):
    from tuner.run import run_job

    marker = tmp_path / "died"
    steps_per_epoch = math.ceil(1259 / 64)  # digits_data's 1,259 training examples, batches of 64
    spec = _spec(model="nets:dies_once", trial={"epochs": 5, "max_failures": 1},
                 search={"num_samples": 1, "space": {"lr": {"choice": [0.01]}}},
                 fixed={"marker": str(marker), "die_after_steps": 3 * steps_per_epoch})
    result = run_job(spec, output_root=tmp_path / "runs")
    assert marker.exists(), "the worker never died: the test proves nothing"
    assert result.statuses == {"trial-001": "FINISHED"}
    client, _, (child,) = children(result.tracking_uri, result.parent_run_id)
    # init_loss is reported with the first epoch of each start: epoch 1, then 4 after the restart.
    assert [m.step for m in client.get_metric_history(child.info.run_id, "init_loss")] == [1, 4]
    assert [m.step for m in client.get_metric_history(child.info.run_id, "val_loss")] == [1, 2, 3, 4, 5]


_PREDICT = """
import sys, numpy as np, mlflow
from sklearn.datasets import load_digits
assert not any("user_models" in p for p in sys.path), sys.path
n = 1797
order = np.random.default_rng(0).permutation(n)
test = order[: int(0.15 * n)]
bunch = load_digits()
model = mlflow.pyfunc.load_model(sys.argv[1])
probs = model.predict((bunch.data[test] / 16.0).astype("float32"))
import nets  # the model's own copy of the user's module, from its code_paths
assert "user_models" not in nets.__file__, nets.__file__
assert np.allclose(probs.sum(1), 1, atol=1e-5)
print(repr(float((probs.argmax(1) == bunch.target[test]).mean())))
"""


@pytest.mark.slow
def test_your_model_end_to_end_through_the_cli(tmp_path):
    """validate, run (3 trials), the ensemble loaded and served where the user's folder is unknown,
    export and train, all from a fresh `tuner` process with no PYTHONPATH. The run's output goes to a
    file, as `tuner run ... > file` does: a short plain log (no escape codes) ending in the summary."""
    project = tmp_path / "project"
    shutil.copytree(USER_MODELS, project)
    (project / "job.yaml").write_text(json.dumps(_raw(search={
        "algorithm": "random", "num_samples": 3, "space": {"lr": {"loguniform": [0.003, 0.03]},
                                                            "dropout": {"uniform": [0.0, 0.3]}}},
        ensemble={"top_k": 2})))
    env = _env_without_user_code()
    log = tmp_path / "run.log"
    with open(log, "w") as handle:
        code = subprocess.call([*CLI, "run", "job.yaml"], cwd=project, stdout=handle, stderr=subprocess.STDOUT,
                               env={**env, "TERM": "xterm-256color"}, timeout=600)
    text = log.read_text()
    assert code == 0, text
    lines = text.splitlines()
    assert "\x1b" not in text and len(lines) <= 25, text
    assert "INFO" not in text, text  # nothing below WARNING: MLflow's lines on a new store (it logs INFO) included
    assert lines[0].startswith("[0:00] 0/3 trials done") and any("3/3 trials done" in line for line in lines), text
    assert "own: 3 trials: 3 finished" in text and "top trials by val_loss" in text and "ensemble of 2: test acc" in text
    assert "MLflow UI: http://127.0.0.1:5000/#/experiments/" in text
    assert lines[-1].startswith("export: tuner export own -o best.yaml"), text
    uri = f"sqlite:///{project / 'tuner_runs' / 'mlflow.db'}"
    from tuner.export import find_parent_run

    parent = find_parent_run(uri, "own")
    model_uri = parent.data.tags["ensemble_model_uri"]
    assert parent.data.params["model"] == "nets:build" and parent.data.tags["check.overfits one batch"].startswith("pass")
    _, _, runs = children(uri, parent.info.run_id)
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * 3
    assert all("dropout" in r.data.params and "val_acc" in r.data.metrics for r in runs)

    # The registered model, loaded in a fresh process elsewhere, reproduces the logged test accuracy.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.rmtree(project / "__pycache__", ignore_errors=True)
    predict = subprocess.run([sys.executable, "-c", _PREDICT, model_uri], cwd=elsewhere, capture_output=True,
                             text=True, timeout=120, env={**env, "MLFLOW_TRACKING_URI": uri})
    assert predict.returncode == 0, predict.stderr
    assert float(predict.stdout.strip().splitlines()[-1]) == parent.data.metrics["ensemble_test_acc"]

    # `mlflow models serve` answers /invocations with the same probabilities.
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local",
         "-h", "127.0.0.1", "-p", str(port)], cwd=elsewhere, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**env, "MLFLOW_TRACKING_URI": uri, "PATH": f"{Path(sys.executable).parent}:{env['PATH']}"})
    try:
        wait_for_http(f"http://127.0.0.1:{port}/ping", server, what="mlflow models serve")
        from sklearn.datasets import load_digits

        rows = (load_digits().data[:3] / 16.0).tolist()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", method="POST",
                                         data=json.dumps({"inputs": rows}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            served = np.array(json.loads(response.read())["predictions"])
    finally:
        stop_group(server)
    import mlflow

    from tuner.tracking import fluent_tracking_uri

    with fluent_tracking_uri(uri):
        local = mlflow.pyfunc.load_model(model_uri).predict(np.array(rows, dtype=np.float32))
    assert served.shape == (3, 10) and np.allclose(served, local, atol=1e-6)

    # export + train reproduce the best trial's val_loss exactly (CPU, same seed).
    export = subprocess.run([*CLI, "export", "own", "-o", "best.yaml"], cwd=project, env=env, capture_output=True,
                            text=True, timeout=120)
    assert export.returncode == 0, export.stderr
    train = subprocess.run([*CLI, "train", "best.yaml"], cwd=project, env=env, capture_output=True, text=True,
                           timeout=300)
    assert train.returncode == 0, train.stderr
    assert train.stdout.strip().splitlines()[-1] == f"best val_loss={parent.data.metrics['best_val_loss']!r}"


@pytest.mark.slow
def test_regression_end_to_end_on_the_diabetes_example(ray_session, tmp_path):
    from tuner.run import run_job
    from tuner.spec import load_spec

    spec = load_spec(EXAMPLES / "diabetes-regression" / "job.yaml",
                     overrides=["search.num_samples=3", "trial.epochs=4", "ensemble.top_k=2"])
    result = run_job(spec, output_root=tmp_path, check=True)
    assert result.succeeded and result.ensemble["task"] == "regression"
    assert result.ensemble["ensemble_test_rmse"] == pytest.approx(math.sqrt(result.ensemble["ensemble_test_loss"]))
    client, parent, runs = children(result.tracking_uri, result.parent_run_id)
    assert {"ensemble_test_rmse", "best_single_test_rmse", "ensemble_test_loss"} <= set(parent.data.metrics)
    assert parent.data.tags["check.loss at init ≈ var(y)"].startswith("pass")
    assert len(runs) == 3 and all("val_rmse" in r.data.metrics for r in runs)
    predict = subprocess.run(
        [sys.executable, "-c", "import sys, mlflow, numpy as np\n"
         "out = mlflow.pyfunc.load_model(sys.argv[1]).predict(np.zeros((5, 10), dtype='float32'))\n"
         "print(out.shape, bool(np.isfinite(out).all()))", parent.data.tags["ensemble_model_uri"]],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**_env_without_user_code(), "MLFLOW_TRACKING_URI": result.tracking_uri})
    assert predict.returncode == 0, predict.stderr
    assert predict.stdout.strip().splitlines()[-1] == "(5,) True"
