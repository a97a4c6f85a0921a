"""The tuning service: job spec, search wiring, run/resume, MLflow tracking, ensemble, export, CLI.

Entry points: `tuner.spec.load_spec` (YAML -> JobSpec), `tuner.run.run_job` (JobSpec -> JobResult)
and the `tuner` command (`tuner.cli`). This package imports nothing heavy on its own, so that
`search_spaces` and `trainables` can use its error types.
"""

from tuner.errors import NotFoundError, SpecError, UserError

__all__ = ["NotFoundError", "SpecError", "UserError"]
