"""The ensemble as an MLflow pyfunc model: raw inputs -> the members' averaged class probabilities.

Lives in `trainables` (torch, numpy and mlflow only) so a saved model loads wherever those are
installed; `tuner.ensemble` builds and logs it.

    model = mlflow.pyfunc.load_model(model_uri)
    probs = model.predict(raw_inputs)   # N x C, rows sum to 1
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow.pyfunc
import numpy as np


class EnsembleModel(mlflow.pyfunc.PythonModel):
    """An MLflow pyfunc model: raw inputs -> averaged class probabilities of the members.

    ``model_input: np.ndarray`` tells MLflow not to infer a schema from the hint (inputs are arrays of
    any shape, N x features or N x H x W); without a hint MLflow warns on every save and load.
    """

    def load_context(self, context) -> None:
        import torch

        from trainables.models import build_model
        from trainables.train import resolve_config

        meta = json.loads(Path(context.artifacts["ensemble"], "ensemble.json").read_text())
        self.offset, self.divisor = meta["scaling"]
        self.models = []
        for i, member in enumerate(meta["members"]):
            model = build_model(resolve_config(member["config"]), input_dim=meta["input_dim"],
                                image_shape=tuple(meta["image_shape"]) if meta["image_shape"] else None,
                                num_classes=meta["num_classes"])
            state = torch.load(Path(context.artifacts["ensemble"], f"member-{i}.pt"), weights_only=True)
            model.load_state_dict(state)
            model.eval()
            self.models.append(model)

    def predict(self, context, model_input: np.ndarray, params=None):
        import torch

        from trainables.models import predict_proba

        x = np.asarray(getattr(model_input, "values", model_input), dtype=np.float32)
        x = (x.reshape(len(x), -1) - self.offset) / self.divisor
        tensor = torch.from_numpy(x.astype(np.float32))
        return np.mean([predict_proba(m, tensor).numpy() for m in self.models], axis=0)
