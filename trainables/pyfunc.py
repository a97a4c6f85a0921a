"""The ensemble as an MLflow pyfunc model: inputs -> the members' averaged outputs.

Lives in `trainables` (torch, numpy and mlflow only) so a saved model loads wherever those are
installed; `tuner.ensemble` builds and logs it, with the code it needs (this package and, for your
own model, your code folder) inside the model as MLflow ``code_paths``.

    model = mlflow.pyfunc.load_model(model_uri)
    out = model.predict(inputs)   # classification: N x C probabilities (rows sum to 1); regression: predictions

Inputs are examples as the data set yields them (any shape with N first, flattened is fine); for
the built-in data sets, raw values before scaling (the model scales them as training did), and a
regression's predictions come back in the targets' own units.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np

MEMBERS_FILE = "ensemble.json"


def load_members(folder: Path) -> tuple[dict[str, Any], list]:
    """The ensemble's description and its members, rebuilt by their model factory, in eval mode."""
    from trainables.factories import model_factory
    from trainables.train import load_checkpoint

    meta = json.loads((folder / MEMBERS_FILE).read_text())
    factory = model_factory(meta["model"])  # a user's module comes from the model's code_paths
    return meta, [load_checkpoint(folder / member["folder"], factory)[0] for member in meta["members"]]


def predict_members(meta: dict[str, Any], members: list, inputs: Any) -> np.ndarray:
    """The members' mean output on ``inputs`` (probabilities or predictions)."""
    import torch
    from torch.utils.data import TensorDataset

    from trainables.train import outputs

    x = np.asarray(getattr(inputs, "values", inputs), dtype=np.float32)
    if meta.get("input_scaling"):
        offset, divisor = meta["input_scaling"]
        x = (x - offset) / divisor
    x = torch.from_numpy(x.astype(np.float32).reshape(len(x), *meta["input_shape"]))
    dummy = torch.zeros(len(x), *([meta["output_dim"]] if meta["task"] == "regression" and meta["output_dim"] > 1
                                   else []))
    data = TensorDataset(x, dummy)
    mean = np.mean([outputs(m, data, meta["task"], torch.device("cpu"))[0].numpy() for m in members], axis=0)
    if meta.get("target_scaling"):  # built-in regression data: back to the targets' own units
        centre, scale = meta["target_scaling"]
        mean = mean * scale + centre
    return mean


class EnsembleModel(mlflow.pyfunc.PythonModel):
    """An MLflow pyfunc model: inputs -> averaged class probabilities, or averaged predictions.

    ``model_input: np.ndarray`` tells MLflow not to infer a schema from the hint (inputs are arrays of
    any shape, N x features or N x H x W); without a hint MLflow warns on every save and load.
    """

    def load_context(self, context) -> None:
        self.meta, self.members = load_members(Path(context.artifacts["ensemble"]))

    def predict(self, context, model_input: np.ndarray, params=None):
        return predict_members(self.meta, self.members, model_input)
