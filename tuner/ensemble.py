"""The best ensemble: the top-k trials' best-epoch models, class probabilities averaged.

Members are ranked on validation (the job's metric); the ensemble and the best single trial are then
scored once on the held-out test split. The ensemble is saved as an MLflow pyfunc model whose
``predict`` takes raw inputs (as the data set stores them, before scaling) and returns class
probabilities, logged on the job's parent run and registered under the job's name.

User trainables take part when each checkpoint holds ``val_probs.npy`` and ``test_probs.npy`` (N x C
class probabilities) and ``test_labels.npy``; their ensemble is scored but not packaged as a model,
since only the user's code knows how to rebuild their networks.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import numpy as np

from trainables.pyfunc import EnsembleModel
from tuner.spec import JobSpec
from tuner.tracking import fluent_tracking_uri

log = logging.getLogger(__name__)

ENSEMBLE_MODEL_NAME = "ensemble"


def _scores(probs: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    acc = float((probs.argmax(1) == labels).mean())
    loss = float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)).mean())
    return acc, loss


def build_ensemble(spec: JobSpec, ranked: list[dict[str, Any]], *, folder, tracker,
                   dataset=None) -> dict[str, Any] | None:
    """Score the top-k ensemble, log it on the parent run; None (with the reason logged) when impossible.

    ``dataset``: the built-in trainables' data set the job trained on (its test labels score members).
    """
    members = [r for r in ranked if r["checkpoint"] and (Path(r["checkpoint"]) / "test_probs.npy").exists()]
    members = members[: spec.ensemble.top_k]
    if not members:
        reason = "no trial checkpoint holds test_probs.npy (see README: ensembles of user trainables)"
        log.warning("no ensemble: %s", reason)
        tracker.emit("parent", tags={"ensemble": f"none: {reason}"})
        return None
    if dataset is not None:
        labels = dataset.y_test
    else:
        label_file = Path(members[0]["checkpoint"]) / "test_labels.npy"
        if not label_file.exists():
            reason = "user trainable checkpoints need test_labels.npy beside test_probs.npy"
            tracker.emit("parent", tags={"ensemble": f"none: {reason}"})
            log.warning("no ensemble: %s", reason)
            return None
        labels = np.load(label_file)
    test_probs = [np.load(Path(m["checkpoint"]) / "test_probs.npy") for m in members]
    ensemble_acc, ensemble_loss = _scores(np.mean(test_probs, axis=0), labels)
    single_acc, single_loss = _scores(test_probs[0], labels)
    result: dict[str, Any] = {
        "members": [m["trial"] for m in members],
        "ensemble_test_acc": ensemble_acc, "ensemble_test_loss": ensemble_loss,
        "best_single_test_acc": single_acc, "best_single_test_loss": single_loss,
        "model_uri": None,
    }
    tracker.emit("parent", metrics={k: v for k, v in result.items() if k.endswith(("_acc", "_loss"))},
                 tags={"ensemble_members": ",".join(result["members"])})
    if dataset is not None:
        model_dir = folder.path / "ensemble_model"
        save_ensemble_model(model_dir, members, dataset)
        result["model_dir"] = str(model_dir)
        result["model_uri"] = _log_model(model_dir, members, spec, tracker)
        if result["model_uri"]:
            tracker.emit("parent", tags={"ensemble_model_uri": result["model_uri"]})
    return result


# ------------------------------------------------------------------------------------ the model


def _model_kwargs(staging: Path) -> dict[str, Any]:
    """What save_model and log_model both take: the code, the members, pinned requirements.

    Requirements are given rather than inferred: inference loads the model in a subprocess (~5 s).
    """
    import importlib.metadata as md

    import trainables

    return dict(python_model=EnsembleModel(), artifacts={"ensemble": str(staging)},
                code_paths=[str(Path(trainables.__file__).parent)],
                pip_requirements=[f"{p}=={md.version(p)}" for p in ("mlflow", "torch", "numpy", "cloudpickle")])


def save_ensemble_model(model_dir: Path, members: list[dict[str, Any]], dataset) -> None:
    """Write the pyfunc model to ``model_dir`` (member weights and configs travel inside it)."""
    staging = model_dir.parent / "ensemble_members"
    staging.mkdir(exist_ok=True)
    meta = {"input_dim": dataset.input_dim, "image_shape": dataset.image_shape, "num_classes": dataset.num_classes,
            "scaling": [dataset.scaling.offset, dataset.scaling.divisor], "members": []}
    for i, member in enumerate(members):
        shutil.copy(Path(member["checkpoint"]) / "model.pt", staging / f"member-{i}.pt")
        meta["members"].append({"trial": member["trial"], "config": member["config"]})
    (staging / "ensemble.json").write_text(json.dumps(meta, default=str))
    if model_dir.exists():
        shutil.rmtree(model_dir)
    mlflow.pyfunc.save_model(path=str(model_dir), **_model_kwargs(staging))


def _log_model(model_dir: Path, members: list[dict[str, Any]], spec: JobSpec, tracker) -> str | None:
    """Log the saved model on the parent run as a LoggedModel; register it under the job's name."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    staging = model_dir.parent / "ensemble_members"
    run_id = tracker.delivery.parent_run_id
    # MLflow resolves the version's `models:/` source through the fluent tracking URI, so the
    # registration stays inside the block too.
    with fluent_tracking_uri(tracker.tracking_uri):
        try:
            with mlflow.start_run(run_id=run_id):
                info = mlflow.pyfunc.log_model(name=ENSEMBLE_MODEL_NAME, **_model_kwargs(staging))
        except Exception as exc:  # noqa: BLE001 - the tracking server may be away; the model stays on disk
            log.warning("ensemble model not logged to MLflow (%s); it is saved in %s", str(exc).splitlines()[0],
                        model_dir)
            return None
        # Registered through the client: MLflow's fluent registration prints to stderr.
        client = MlflowClient(tracker.tracking_uri, registry_uri=tracker.tracking_uri)
        try:
            if not client.search_registered_models(filter_string=f"name = '{spec.name}'"):
                client.create_registered_model(spec.name)
            client.create_model_version(spec.name, source=info.model_uri, run_id=run_id, model_id=info.model_id)
        except MlflowException as exc:  # a store without a model registry: the LoggedModel is still there
            log.warning("ensemble model logged as %s but not registered (%s)", info.model_uri,
                        str(exc).splitlines()[0])
    return info.model_uri
