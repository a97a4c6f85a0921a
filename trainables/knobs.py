"""Every knob of the service's training loop, its default, and what values it accepts.

Declared once, as the pydantic model `Knobs` (no torch import), so that the job spec can check a
search space or a `fixed` section against it before anything starts. A trial's config is
``DEFAULTS | fixed | sampled``.

Most knobs act on any model, built-in or your own (`trainables.train` applies them from outside the
model); `batchnorm`, `width`, `depth` and `channels` only reach a model through its factory, which
reads them from ``config`` (the built-in mlp and cnn do; yours may).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

Init = Literal["keep", "uniform", "gaussian", "lecun", "xavier", "kaiming"]  # keep: the model's own init
Optimizer = Literal["sgd", "momentum", "nesterov", "adam", "adagrad", "rmsprop"]
Schedule = Literal["exponential", "step", "cosine", "none"]
INIT_CHOICES: tuple[str, ...] = get_args(Init)
INITS = INIT_CHOICES[1:]  # the schemes that re-initialise
OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)
LR_SCHEDULES: tuple[str, ...] = get_args(Schedule)
MODELS = ("mlp", "cnn")  # built-in model factories

Rate = Annotated[float, Field(ge=0, lt=1)]


def _one_of(names: tuple[str, ...]) -> str:
    return f"one of {', '.join(names)}"


class Knobs(BaseModel):
    """A trial's knobs. Each field's description is what the spec's error says a value must be."""

    # strict: 1.0 is no batch size and true is no learning rate; a typo'd YAML value is an error.
    model_config = ConfigDict(strict=True, allow_inf_nan=False, frozen=True)

    seed: int = Field(0, ge=0, lt=2**32, description="an integer in 0 .. 2**32 - 1")  # same config and seed -> same metrics on CPU
    epochs: int = Field(20, ge=1, description="an integer >= 1")  # set from trial.epochs by the spec
    batch_size: int = Field(64, ge=1, description="an integer >= 1")
    lr: float = Field(0.01, ge=0, description="a number >= 0")  # initial learning rate
    optimizer: Optimizer = Field("adam", description=_one_of(OPTIMIZERS))  # momentum/nesterov: SGD with `momentum`
    momentum: float = Field(0.9, ge=0, lt=1, description="a number in [0, 1)")  # momentum and nesterov's gamma
    weight_decay: float = Field(0.0, ge=0, description="a number >= 0")  # L2 penalty through the optimizer
    init: Init = Field("keep", description=_one_of(INIT_CHOICES))  # keep the model's own, or re-init every Linear/Conv
    batchnorm: bool = Field(False, description="true or false")  # factories: BatchNorm after each linear/conv
    dropout: Rate | None = Field(None, description="null (the model's own) or a number in [0, 1)")  # p of every dropout module
    clip: Annotated[float, Field(gt=0)] | None = Field(None, description="null (off) or a number > 0")  # global L2 norm
    lr_schedule: Schedule = Field("exponential", description=_one_of(LR_SCHEDULES))  # stepped once per epoch
    lr_decay: float = Field(1.0, gt=0, le=1, description="a number in (0, 1]")  # gamma of exponential and step
    lr_step_size: int = Field(10, ge=1, description="an integer >= 1")  # epochs between decays (step schedule)
    warmup_epochs: int = Field(0, ge=0, description="an integer >= 0")  # linear warm-up from lr/warmup_epochs
    patience: Annotated[int, Field(ge=1)] | None = Field(None, description="null (off) or an integer >= 1")  # early stop on val_loss
    width: int = Field(128, ge=1, description="an integer >= 1")  # factories: units per hidden layer (mlp)
    depth: int = Field(2, ge=1, description="an integer >= 1")  # factories: hidden layers (mlp)
    channels: int = Field(16, ge=1, description="an integer >= 1")  # factories: first conv block (cnn)
    amp: bool = Field(False, description="true or false")  # mixed precision on CUDA; a warning on CPU


DEFAULTS: dict[str, Any] = Knobs().model_dump()


def knob_problem(name: str, value: Any) -> str | None:
    """Why ``value`` is not allowed for knob ``name``, or None when it is (or the knob is unknown)."""
    field = Knobs.model_fields.get(name)
    if field is None:
        return None
    try:
        Knobs.model_validate({name: value})
    except ValidationError:
        return f"must be {field.description}"
    return None
