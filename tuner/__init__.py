"""The tuning service: job spec, search wiring, run/resume, MLflow tracking, ensemble, export, CLI."""

from tuner.errors import SpecError, UserError
from tuner.spec import JobSpec, load_spec

__all__ = ["JobSpec", "SpecError", "UserError", "load_spec"]
