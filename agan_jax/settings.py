"""The only reader of the ConfigDict: frozen settings, read and checked once.

`Settings.from_config(config)` turns an `ml_collections.ConfigDict` (or the plain
dict saved in a run's run.json) into frozen dataclasses of plain Python values:
data/pyramid, model, train, loss, augment and log. Every field read here is a
field of `configs/default.py`, where every default lives; values derived from
others (the ConSinGAN harmonization `min_size`, the 'auto' update rule) are
computed here, after command-line overrides. Factories close over these values;
the config never enters a traced function.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from typing import Any

from agan_jax import compiler
from agan_jax.errors import UserError

SCHEDULES = ("geometric", "cos", "quad", "circ", "log")
UPDATE_RULES = ("singan", "fresh", "consingan")
COMPILE_UNITS = ("auto", "update", "iteration")
GP_MODES = ("jvp", "double_grad")


def _section(config: Mapping, name: str) -> Mapping:
    if name not in config:
        raise UserError(
            f"the config has no '{name}' section; start from configs/default.py "
            "(every field is listed there)"
        )
    return config[name]


def _get(section: Mapping, path: str, name: str) -> Any:
    if name not in section:
        raise UserError(
            f"the config has no field {path}.{name}; this run or config predates "
            "it: start from configs/default.py (every field is listed there)"
        )
    return section[name]


def _read(cls, config: Mapping, path: str, keys: Mapping[str, str] | None = None):
    """cls(**fields), each field read from config[path][key] (key: the field's
    name unless `keys` renames it) and converted to the field's type."""
    section = _section(config, path)
    values = {}
    for f in dataclasses.fields(cls):
        key = (keys or {}).get(f.name, f.name)
        raw = _get(section, path, key)
        try:
            values[f.name] = _CONVERTERS[f.type](raw)
        except (TypeError, ValueError) as e:
            raise UserError(
                f"{path}.{key}={raw!r} is not a valid {f.type} ({e}); fix "
                f"--config.{path}.{key}"
            ) from None
    return cls(**values)


def _bool(x) -> bool:
    if isinstance(x, bool):
        return x
    if isinstance(x, str) and x.lower() in ("true", "false"):
        return x.lower() == "true"
    if isinstance(x, int | float) and x in (0, 1):
        return bool(x)
    raise ValueError("expected True or False")


def _int(x) -> int:
    if isinstance(x, bool) or (isinstance(x, float) and not x.is_integer()):
        raise ValueError("expected an integer")
    return int(x)


_CONVERTERS = {"int": _int, "float": float, "str": str, "bool": _bool}


@dataclasses.dataclass(frozen=True)
class DataSettings:
    """The training image and the finest and coarsest sizes."""

    image: str
    max_size: int
    min_size: int  # resolved: min_size_ratio * max_size when that ratio is set
    min_size_ratio: float  # 0: use min_size as given


@dataclasses.dataclass(frozen=True)
class PyramidSettings:
    """How the stage sizes are laid out (pyramid.py)."""

    schedule: str
    num_stages: int  # ignored by 'geometric', which derives it from r0
    r0: float


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """The networks of a model family (models/): plain values only."""

    kind: str
    nfc: int
    nfc_growth: int
    max_nfc: int
    num_layers: int
    kernel: int
    batch_norm: bool
    # ConSinGAN only: concurrently trained blocks, their learning-rate scale, the
    # training mode and the LeakyReLU slope.
    train_depth: int
    lr_scale: float
    mode: str
    leaky_slope: float

    def width(self, stage: int) -> int:
        """Number of features of every conv at `stage` (SinGAN's growth rule)."""
        return min(self.nfc * 2 ** (stage // self.nfc_growth), self.max_nfc)

    @property
    def pad(self) -> int:
        """Zero padding that the valid convolutions of one stack consume per side."""
        return self.num_layers * (self.kernel // 2)


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """How a stage trains: iterations, optimisers, compiled-call layout, logging."""

    iters: int
    d_steps: int
    g_steps: int
    lr_g: float
    lr_d: float
    beta1: float
    beta2: float
    adam_eps: float
    lr_milestone: float
    lr_decay_iter: int  # first iteration at lr x gamma; -1: lr_milestone x iters
    gamma: float
    gp_mode: str  # "jvp" (fast, same gradient) or "double_grad" (reference)
    steps_per_call: int  # 0 resolved per backend (train/runner.py)
    compile_unit: str  # "auto", "update" or "iteration" (train/runner.py)
    update_rule: str  # "auto" (the family's), "singan", "fresh", "consingan"
    xla_opt_level: int  # XLA backend optimisation level; -1: see compiler.py
    remat: bool  # jax.checkpoint around the generator in training
    log_every: int
    stage_samples: int  # samples in the grid written after each stage

    @property
    def compiler_options(self) -> dict | None:
        """Options for every `.compile()` of training (agan_jax.compiler)."""
        return compiler.options(self.xla_opt_level)

    @property
    def decay_iter(self) -> int:
        """The first iteration (0-based) trained at lr x gamma."""
        if self.lr_decay_iter >= 0:
            return self.lr_decay_iter
        return round(self.lr_milestone * self.iters)

    def decay_boundary(self, updates_per_iter: int) -> int:
        """The optimiser update count from which the learning rate is x gamma, for
        an optimiser that takes `updates_per_iter` updates per iteration."""
        return self.decay_iter * updates_per_iter


@dataclasses.dataclass(frozen=True)
class LossSettings:
    """Weights of the losses (losses.py) and the noise amplitude rule."""

    lambda_gp: float
    alpha: float
    tv_weight: float
    tv_reduction: str  # "mean" or "sum" over the TV terms (losses.total_variation)
    noise_amp_base: float


@dataclasses.dataclass(frozen=True)
class AugmentSettings:
    """Probabilities and strengths of the training augmentations (ConSinGAN
    harmonization and editing modes, agan_jax/augment.py)."""

    p_colour: float  # brightness, contrast, saturation, per-channel gains
    p_noise: float  # additive Gaussian noise, std ~ U(0, noise_std)
    noise_std: float
    p_cutout: float  # one rectangle of a random colour
    cutout_max: float  # its largest side, as a fraction of the image side
    p_tiles: float  # editing only: tiles x tiles grid, shuffled
    tiles: int


@dataclasses.dataclass(frozen=True)
class LogSettings:
    """How a training invocation is watched (agan_jax/train/metrics.py)."""

    tensorboard: bool  # TensorBoard event files beside metrics.jsonl


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything a run is configured by, read from the config once."""

    seed: int
    data: DataSettings
    pyramid: PyramidSettings
    model: ModelSpec
    train: TrainSettings
    loss: LossSettings
    augment: AugmentSettings
    # None when the config has no 'log' section: a run's run.json, which keeps
    # what the run is, not how one invocation watched it.
    log: LogSettings | None

    @classmethod
    def from_config(cls, config) -> Settings:
        """Reads and checks a ConfigDict or a plain nested dict (run.json)."""
        c = config_to_dict(config)
        seed = _int(_get(c, "config", "seed"))
        c["loss"] = {
            **_section(c, "loss"),
            "noise_amp_base": _get(c, "config", "noise_amp_base"),
        }
        data = _read(DataSettings, c, "data")
        if data.min_size_ratio > 0:
            data = dataclasses.replace(
                data, min_size=max(16, round(data.min_size_ratio * data.max_size))
            )
        out = cls(
            seed=seed,
            data=data,
            pyramid=_read(PyramidSettings, c, "pyramid"),
            model=_read(ModelSpec, c, "model"),
            train=_read_train(c),
            loss=_read(LossSettings, c, "loss"),
            augment=_read(AugmentSettings, c, "augment"),
            log=_read(LogSettings, c, "log") if "log" in c else None,
        )
        out.check()
        return out

    def check(self) -> None:
        """UserError naming the first field outside its range."""
        check_data(self.data)
        check_pyramid(self.pyramid)
        check_model(self.model)
        check_train(self.train)
        check_loss(self.loss)
        check_augment(self.augment)


def config_to_dict(config) -> dict:
    """A ConfigDict (or nested mapping) as plain JSON-compatible nested dicts."""
    if hasattr(config, "to_json_best_effort"):
        return json.loads(config.to_json_best_effort())
    return json.loads(json.dumps(config))


def _need(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


def check_data(d: DataSettings) -> None:
    _need(
        d.max_size >= 1 and d.min_size >= 1,
        f"data.min_size ({d.min_size}) and data.max_size ({d.max_size}) must be "
        "positive; set them to positive integers",
    )
    _need(
        0 <= d.min_size_ratio <= 1,
        f"data.min_size_ratio must lie in [0, 1] (0: use data.min_size), got "
        f"{d.min_size_ratio}",
    )


def check_pyramid(p: PyramidSettings) -> None:
    _need(
        p.schedule in SCHEDULES,
        f"unknown pyramid schedule {p.schedule!r}; set pyramid.schedule to one of "
        f"{', '.join(SCHEDULES)}",
    )
    _need(0.0 < p.r0 < 1.0, f"pyramid.r0 must lie in (0, 1), got {p.r0}; use 0.75")
    _need(
        p.num_stages >= 2,
        f"a pyramid needs at least 2 stages, got {p.num_stages}; set "
        "pyramid.num_stages to 2 or more",
    )


def check_model(m: ModelSpec) -> None:
    _need(m.num_layers >= 2, "model.num_layers must be at least 2")
    _need(m.train_depth >= 1, "model.train_depth must be at least 1")


def check_train(t: TrainSettings) -> None:
    _need(
        t.iters >= 1 and t.d_steps >= 1 and t.g_steps >= 1,
        "train.iters_per_stage, d_steps and g_steps must be >= 1",
    )
    _need(t.gp_mode in GP_MODES, f"train.gp_mode must be one of {GP_MODES}")
    _need(
        t.xla_opt_level in (-1, 0, 1, 2, 3),
        f"train.xla_backend_opt_level must be -1 (auto) or 0..3, got {t.xla_opt_level}",
    )
    _need(
        t.compile_unit in COMPILE_UNITS,
        f"train.compile_unit must be 'auto', 'update' or 'iteration', got "
        f"{t.compile_unit!r}",
    )
    _need(
        t.update_rule in UPDATE_RULES + ("auto",),
        f"train.update_rule must be one of {UPDATE_RULES + ('auto',)}, got "
        f"{t.update_rule!r}",
    )
    _need(t.steps_per_call >= 1, "train.steps_per_call must be >= 0 (0: auto)")
    _need(
        math.isfinite(t.adam_eps) and t.adam_eps > 0,
        f"train.adam_eps must be a positive number, got {t.adam_eps}",
    )


def check_loss(lo: LossSettings) -> None:
    numbers = (lo.lambda_gp, lo.alpha, lo.tv_weight, lo.noise_amp_base)
    _need(
        all(math.isfinite(v) for v in numbers),
        "loss weights and noise_amp_base must be finite numbers",
    )
    _need(
        lo.tv_reduction in ("mean", "sum"),
        f"loss.tv_reduction must be 'mean' or 'sum', got {lo.tv_reduction!r}",
    )


def check_augment(a: AugmentSettings) -> None:
    _need(a.tiles >= 1, "augment.tiles must be >= 1")


def default_steps_per_call() -> int:
    """Iterations per compiled call when train.steps_per_call is 0 (auto).

    CPU: 1. With jax 0.10.2 on a 2-core CPU a lax.scan around this step ran 8x
    slower per iteration than the same step jitted alone (SPEC 6). Accelerators:
    10, to remove launch gaps between iterations (not measured in this repo yet).
    """
    import jax

    return 1 if jax.default_backend() == "cpu" else 10


def _read_train(c: Mapping) -> TrainSettings:
    keys = {"iters": "iters_per_stage", "xla_opt_level": "xla_backend_opt_level"}
    t = _read(TrainSettings, c, "train", keys)
    return dataclasses.replace(
        t,
        steps_per_call=t.steps_per_call or default_steps_per_call(),
        log_every=max(1, t.log_every),
        stage_samples=max(0, t.stage_samples),
    )
