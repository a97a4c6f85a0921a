"""The best ensemble: the top-k trials' best-epoch models, their outputs averaged.

Members are ranked on validation (the job's metric); the ensemble and the best single trial are then
scored once on the held-out test split: accuracy and log loss for classification (probabilities
averaged), RMSE and mean squared error for regression (predictions averaged). The ensemble is saved
as an MLflow pyfunc model (`trainables.pyfunc`) that carries the code it needs, your model's module
included (MLflow's ``code_paths``), logged on the job's parent run and registered under the job's name.

Jobs with their own Ray trainable (``trainable: module:function``) take part when each checkpoint
holds ``test_probs.npy`` (N x C class probabilities) and ``test_labels.npy``; their ensemble is
scored but not packaged as a model, since only the user's code knows how to rebuild their networks.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from tuner.errors import describe
from tuner.spec import JobSpec
from tuner.tracking import fluent_tracking_uri
from tuner.tracking.names import RankedTrial

log = logging.getLogger(__name__)

ENSEMBLE_MODEL_NAME = "ensemble"


def _scores(out: np.ndarray, targets: np.ndarray, task: str) -> dict[str, float]:
    """Test scores of outputs: {acc, loss} (log loss) or {rmse, loss} (mean squared error)."""
    if task == "classification":
        loss = float(-np.log(np.clip(out[np.arange(len(targets)), targets], 1e-12, None)).mean())
        return {"acc": float((out.argmax(1) == targets).mean()), "loss": loss}
    mse = float(np.mean((out - targets) ** 2))
    return {"rmse": float(np.sqrt(mse)), "loss": mse}


def _result(members: list[RankedTrial], test_outputs: list[np.ndarray], targets: np.ndarray,
            task: str) -> dict[str, Any]:
    ensemble = _scores(np.mean(test_outputs, axis=0), targets, task)
    single = _scores(test_outputs[0], targets, task)
    return {"members": [m.trial for m in members], "task": task, "model_uri": None,
            **{f"ensemble_test_{k}": v for k, v in ensemble.items()},
            **{f"best_single_test_{k}": v for k, v in single.items()}}


def _none(tracker, reason: str) -> None:
    log.warning("no ensemble: %s", reason)
    tracker.emit("parent", tags={"ensemble": f"none: {reason}"})


def build_ensemble(spec: JobSpec, ranked: list[RankedTrial], *, folder, tracker, model=None,
                   data=None) -> dict[str, Any] | None:
    """Score the top-k ensemble and log it on the parent run; None (with the reason logged) when impossible.

    ``model`` and ``data``: the job's factories (jobs on the service's loop); its test split scores
    the members. The trials' results stand whatever happens here: a failure (your ``load`` raising in
    the driver, a model MLflow cannot save) is the ensemble's reason for being absent, tagged on the
    parent run and warned about, and the job goes on to its report.
    """
    try:
        if spec.trainable is not None:
            return _trainable_ensemble(spec, ranked, tracker)
        return _model_ensemble(spec, ranked, folder=folder, tracker=tracker, data=data)
    except Exception as exc:  # noqa: BLE001 - recorded as the reason on the parent run, with a warning
        return _none(tracker, f"the ensemble could not be built: {describe(exc)}")


def _model_ensemble(spec: JobSpec, ranked: list[RankedTrial], *, folder, tracker, data) -> dict[str, Any] | None:
    members = [r for r in ranked if r.checkpoint and (Path(r.checkpoint) / "meta.json").exists()]
    members = members[: spec.ensemble.top_k]
    if not members:
        return _none(tracker, "no trial left a checkpoint")
    staging = _stage_members(folder.path / "ensemble_members", members, spec)
    from trainables.pyfunc import load_members
    from trainables.train import outputs, resolve_config, splits

    _, nets = load_members(staging)
    _, _, test = splits(data, resolve_config(members[0].config))
    test_outputs, targets = [], None
    for net in nets:
        out, targets = outputs(net, test, spec.task)
        test_outputs.append(out.numpy())
    result = _result(members, test_outputs, targets.numpy(), spec.task)
    tracker.emit("parent", metrics={k: v for k, v in result.items() if k.startswith(("ensemble_", "best_single_"))},
                 tags={"ensemble_members": ",".join(result["members"])})
    model_dir = folder.path / "ensemble_model"
    save_ensemble_model(model_dir, staging, spec)
    result["model_dir"] = str(model_dir)
    result["model_uri"] = _log_model(model_dir, staging, spec, tracker)
    if result["model_uri"]:
        tracker.emit("parent", tags={"ensemble_model_uri": result["model_uri"]})
    return result


def _trainable_ensemble(spec: JobSpec, ranked: list[RankedTrial], tracker) -> dict[str, Any] | None:
    """A user Ray trainable's ensemble, from the class probabilities its checkpoints hold."""
    members = [r for r in ranked if r.checkpoint and (Path(r.checkpoint) / "test_probs.npy").exists()]
    members = members[: spec.ensemble.top_k]
    if not members:
        return _none(tracker, "no trial checkpoint holds test_probs.npy (see README: your own trainable)")
    label_file = Path(members[0].checkpoint) / "test_labels.npy"
    if not label_file.exists():
        return _none(tracker, "trainable checkpoints need test_labels.npy beside test_probs.npy")
    probs = [np.load(Path(m.checkpoint) / "test_probs.npy") for m in members]
    result = _result(members, probs, np.load(label_file), "classification")
    tracker.emit("parent", metrics={k: v for k, v in result.items() if k.startswith(("ensemble_", "best_single_"))},
                 tags={"ensemble_members": ",".join(result["members"])})
    return result


# ------------------------------------------------------------------------------------ the model


def _stage_members(staging: Path, members: list[RankedTrial], spec: JobSpec) -> Path:
    """Copy each member's weights and meta.json into ``staging`` and describe them in ensemble.json."""
    from trainables.pyfunc import MEMBERS_FILE

    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    meta = json.loads((Path(members[0].checkpoint) / "meta.json").read_text())
    described = []
    for i, member in enumerate(members):
        (staging / f"member-{i}").mkdir()
        for name in ("model.pt", "meta.json"):
            shutil.copy(Path(member.checkpoint) / name, staging / f"member-{i}" / name)
        described.append({"trial": member.trial, "folder": f"member-{i}"})
    (staging / MEMBERS_FILE).write_text(json.dumps({
        "model": spec.model, "task": spec.task, "input_shape": meta["input_shape"],
        "output_dim": meta["output_dim"], "input_scaling": meta.get("input_scaling"),
        "target_scaling": meta.get("target_scaling"), "members": described}))
    return staging


def code_paths(spec: JobSpec) -> list[str]:
    """The code the model needs in a fresh process: this `trainables` package and, for your own model,
    the Python modules and packages at the top of ``code_dir`` (nothing else from that folder)."""
    import trainables

    paths = [str(Path(trainables.__file__).parent)]
    if spec.model not in ("mlp", "cnn") and spec.code_dir:
        for entry in sorted(Path(spec.code_dir).iterdir()):
            if entry.name.startswith(".") or entry.name in ("__pycache__", "trainables"):
                continue
            if (entry.suffix == ".py" and entry.is_file()) or (entry / "__init__.py").is_file():
                paths.append(str(entry))
    return paths


def _model_kwargs(staging: Path, spec: JobSpec) -> dict[str, Any]:
    """What save_model and log_model both take: the code, the members, pinned requirements.

    Requirements are given rather than inferred: inference loads the model in a subprocess (~5 s).
    """
    import importlib.metadata as md

    from trainables.pyfunc import EnsembleModel

    return dict(python_model=EnsembleModel(), artifacts={"ensemble": str(staging)}, code_paths=code_paths(spec),
                pip_requirements=[f"{p}=={md.version(p)}" for p in ("mlflow", "torch", "numpy", "cloudpickle")])


def save_ensemble_model(model_dir: Path, staging: Path, spec: JobSpec) -> None:
    """Write the pyfunc model to ``model_dir`` (member weights and configs travel inside it)."""
    import mlflow.pyfunc

    if model_dir.exists():
        shutil.rmtree(model_dir)
    mlflow.pyfunc.save_model(path=str(model_dir), **_model_kwargs(staging, spec))


def _log_model(model_dir: Path, staging: Path, spec: JobSpec, tracker) -> str | None:
    """Log the saved model on the parent run as a LoggedModel; register it under the job's name."""
    import mlflow
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    run_id = tracker.delivery.parent_run_id
    # MLflow resolves the version's `models:/` source through the fluent tracking URI, so the
    # registration stays inside the block too.
    with fluent_tracking_uri(tracker.tracking_uri):
        try:
            with mlflow.start_run(run_id=run_id):
                info = mlflow.pyfunc.log_model(name=ENSEMBLE_MODEL_NAME, **_model_kwargs(staging, spec))
        except Exception as exc:  # noqa: BLE001 - the tracking server may be away; the model stays on disk
            log.warning("ensemble model not logged to MLflow (%s); it is saved in %s", describe(exc), model_dir)
            return None
        # Registered through the client: MLflow's fluent registration prints to stderr.
        client = MlflowClient(tracker.tracking_uri, registry_uri=tracker.tracking_uri)
        try:
            if not client.search_registered_models(filter_string=f"name = '{spec.name}'"):
                client.create_registered_model(spec.name)
            client.create_model_version(spec.name, source=info.model_uri, run_id=run_id, model_id=info.model_id)
        except MlflowException as exc:  # a store without a model registry: the LoggedModel is still there
            log.warning("ensemble model logged as %s but not registered (%s)", info.model_uri, describe(exc))
    return info.model_uri
