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
import re
from collections.abc import Callable, Mapping
from typing import Any

from agan_jax import compiler
from agan_jax.errors import UserError

SCHEDULES = ("geometric", "cos", "quad", "circ", "log")
UPDATE_RULES = ("singan", "fresh", "consingan")
STAGE0_REC_NOISE = ("auto", "fixed", "redraw")
COMPILE_UNITS = ("auto", "update", "iteration", "rolled")
GP_MODES = ("jvp", "double_grad")
# loss.tv_reduction: the reductions of losses.total_variation.
TV_REDUCTIONS = ("mean", "sum", "pytorch")
# model.blend: how AGAN's generator (models/agan.py) proposes x_hat.
BLENDS = ("convex", "residual")
# model.upsample: how a stage's output reaches the next stage's size
# (pyramid.upsampler: resize; official SinGAN's scale-and-crop).
UPSAMPLES = ("resize", "official")


# Fields added after runs were first saved, each with the value that reproduces
# what a run saved before the field existed did: a run.json without the field is
# read as if it held this value (checkpoint.RunStore.read_metadata), so adding a
# field never makes a trained run unloadable. New fields go here too.
ADDED_FIELDS: dict[str, Any] = {
    "model.warm_start": True,  # every earlier run warm-started
    "model.blend": "convex",  # every earlier run blended as the AGAN paper's eq. 12
    "model.upsample": "resize",  # every earlier run resized between stages
    "train.stage0_rec_noise": "fixed",  # earlier runs kept one z*
    "data.fit": "",  # earlier runs trained the image as loaded
    "train.models_per_call": 0,  # how a folder groups (not a result)
    "train.group_mode": "auto",  # how a folder groups (not a result)
    "train.compile_ahead": True,  # how programs compile (not a result)
    "train.compile_workers": 0,  # how programs compile (not a result)
    "pyramid.min_step": 0.0,  # earlier runs kept every stage of the schedule
    "train.iters_by_step": False,  # earlier runs trained iters_per_stage everywhere
    "loss.noise_amp_floor": 0.0,  # earlier runs: 0.1 x RMSE, no floor
    "loss.tv_from_stage": 0,  # earlier runs: TV at every stage
}


def fill_added_fields(config: Mapping) -> dict:
    """A copy of a saved run's config (plain nested dict) with every field of
    ADDED_FIELDS that it lacks set to the value earlier runs behaved with."""
    out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in config.items()}
    for dotted, value in ADDED_FIELDS.items():
        section, name = dotted.split(".")
        if isinstance(out.get(section), dict) and name not in out[section]:
            out[section][name] = value
    return out


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


def _read(
    cls,
    config: Mapping,
    path: str,
    keys: Mapping[str, str] | None = None,
    problems: list[str] | None = None,
):
    """cls(**fields), each field read from config[path][key] (key: the field's
    name unless `keys` renames it) and converted to the field's type.

    A value that does not convert is a UserError, or, with `problems`, a line
    appended to it and the field left None (the range checks skip it)."""
    section = _section(config, path)
    values = {}
    for f in dataclasses.fields(cls):
        key = (keys or {}).get(f.name, f.name)
        raw = _get(section, path, key)
        try:
            values[f.name] = _CONVERTERS[f.type](raw)
        except (TypeError, ValueError) as e:
            line = f"config.{path}.{key} = {raw!r}: must be {_TYPE_WORDS[f.type]} ({e})"
            if problems is None:
                raise UserError(f"{line}; fix --config.{path}.{key}") from None
            problems.append(line)
            values[f.name] = None
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
_TYPE_WORDS = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "bool": "True or False",
}


@dataclasses.dataclass(frozen=True)
class DataSettings:
    """The training image and the finest and coarsest sizes."""

    image: str
    max_size: int
    min_size: int  # resolved: min_size_ratio * max_size when that ratio is set
    min_size_ratio: float  # 0: use min_size as given
    fit: str  # "": the image as loaded; "HxW": centre-cropped to H:W, resized to HxW

    @property
    def fit_hw(self) -> tuple[int, int] | None:
        """(H, W) of `fit`, None when it is off (or malformed: see validate)."""
        m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", self.fit or "")
        return (int(m[1]), int(m[2])) if m else None


@dataclasses.dataclass(frozen=True)
class PyramidSettings:
    """How the stage sizes are laid out (pyramid.py)."""

    schedule: str
    num_stages: int  # ignored by 'geometric', which derives it from r0
    r0: float
    # > 1: a stage less than this factor larger than the stage kept below it is
    # dropped (pyramid.merge_close_stages); 0 or 1: every stage of the schedule.
    min_step: float


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
    # SinGAN/AGAN: a stage starts from the previous stage's weights where shapes
    # match (models/singan.py); False: fresh weights at every stage.
    warm_start: bool
    # AGAN only: "convex", the paper's eq. 12 blend of G_A's tanh proposal;
    # "residual" (an ablation), G_A's output added to the stage's input first.
    blend: str
    # SinGAN/AGAN: how a stage's output is brought to the next stage's size
    # (pyramid.upsampler): "resize" (bicubic, to the size) or "official" (official
    # SinGAN's: 8-bit, bicubic by 1/r, cropped, clipped; geometric pyramids only).
    upsample: str

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
    compile_unit: str  # "auto", "update", "iteration", "rolled" (train/runner.py)
    update_rule: str  # "auto" (the family's), "singan", "fresh", "consingan"
    stage0_rec_noise: str  # "auto", "fixed" z* or "redraw" (official SinGAN)
    xla_opt_level: int  # XLA backend optimisation level; -1: see compiler.py
    remat: bool  # jax.checkpoint around the generator in training
    compile_ahead: bool  # compile stage s+1 while stage s trains (train/loop.py)
    # Stages compiling at once, every stage planned at the start; 0: auto
    # (compiler.compile_workers).
    compile_workers: int
    log_every: int
    stage_samples: int  # samples in the grid written after each stage
    # Models per compiled program when a folder trains (train/many.py); 0: auto.
    models_per_call: int
    group_mode: str  # "auto", "vmap" or "shared" (train/group.py)
    # Stages above 0 train iters x log(step) / log(mean step) iterations (at_stage).
    iters_by_step: bool

    def at_stage(self, stage: int, sizes) -> TrainSettings:
        """The settings stage `stage` of a pyramid of `sizes` trains with: these,
        or with `iters_by_step` a copy whose `iters` (and `lr_decay_iter`, when
        set, so the decay keeps its place in the stage) are scaled by
        pyramid.step_weight, the log of the stage's size step over the mean log
        step. Stage 0 keeps `iters`; stages 1.. together train what they would
        without it (up to rounding), each at least one iteration: a stage that
        barely grows the image gets few, a large step many."""
        if not self.iters_by_step or stage == 0:
            return self
        from agan_jax import pyramid

        factor = pyramid.step_weight(sizes, stage)
        iters = max(1, round(self.iters * factor))
        decay = self.lr_decay_iter
        if decay >= 0:
            decay = round(decay * factor)
        return dataclasses.replace(self, iters=iters, lr_decay_iter=decay)

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

    @property
    def per_iter(self) -> int:
        """Optimiser updates per iteration (how far a stage's step advances)."""
        return self.d_steps + self.g_steps

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
    tv_reduction: str  # TV_REDUCTIONS: "mean", "sum", "pytorch" (losses.py)
    # The generator objective has the TV term from this stage on (0: every stage).
    tv_from_stage: int
    noise_amp_base: float
    # Stages above 0: noise amplitude max(floor, noise_amp_base x RMSE); 0: none.
    noise_amp_floor: float


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
    def from_config(
        cls, config, checks: Callable[[Settings], list[str]] | None = None
    ) -> Settings:
        """Reads and checks a ConfigDict or a plain nested dict (run.json).

        Every value is converted and range-checked before anything else runs; a
        UserError lists every problem found, one per line, as
        "config.FIELD = VALUE: must be RANGE".
        """
        c = config_to_dict(config)
        problems: list[str] = []
        try:
            seed = _int(_get(c, "config", "seed"))
        except (TypeError, ValueError) as e:
            problems.append(f"config.seed = {c['seed']!r}: must be an integer ({e})")
            seed = 0
        c["loss"] = {
            **_section(c, "loss"),
            "noise_amp_base": _get(c, "config", "noise_amp_base"),
        }
        data = _read(DataSettings, c, "data", problems=problems)
        if data.min_size_ratio is not None and data.max_size is not None:
            if data.min_size_ratio > 0:
                data = dataclasses.replace(
                    data, min_size=max(16, round(data.min_size_ratio * data.max_size))
                )
        out = cls(
            seed=seed,
            data=data,
            pyramid=_read(PyramidSettings, c, "pyramid", problems=problems),
            model=_read(ModelSpec, c, "model", problems=problems),
            train=_read_train(c, problems),
            loss=_read(LossSettings, c, "loss", problems=problems),
            augment=_read(AugmentSettings, c, "augment", problems=problems),
            log=_read(LogSettings, c, "log", problems=problems) if "log" in c else None,
        )
        out.validate(problems, checks)
        return out

    def validate(
        self,
        problems: list[str] | None = None,
        checks: Callable[[Settings], list[str]] | None = None,
    ) -> None:
        """UserError listing every setting outside its range (after `problems`,
        the lines of values that did not convert). `checks`: further problems of
        settings valid alone, e.g. `models.families.settings_problems` (the model
        kind, a family's own checks: settings knows no family), run only when
        every value is in range."""
        found = list(problems or []) + range_problems(self)
        if not found and checks is not None:
            found = checks(self)
        if not found:
            return
        if len(found) == 1:
            raise UserError(
                f"{found[0]}; fix it with --config.FIELD=VALUE (defaults: "
                "configs/default.py)"
            )
        lines = "\n".join(f"  {line}" for line in found)
        raise UserError(
            f"{len(found)} config values are invalid; fix them with "
            f"--config.FIELD=VALUE (defaults: configs/default.py):\n{lines}"
        )

    def check(self) -> None:
        """`validate()`: the name callers of earlier versions use."""
        self.validate()


def config_to_dict(config) -> dict:
    """A ConfigDict (or nested mapping) as plain JSON-compatible nested dicts."""
    if hasattr(config, "to_json_best_effort"):
        return json.loads(config.to_json_best_effort())
    return json.loads(json.dumps(config))


# -- range checks ----------------------------------------------------------------

# Learning rates above this are rejected: Adam's step is about lr per update, so
# lr > 1 moves weights initialised at N(0, 0.02) by more than 50x their scale in
# one step; the defaults are 5e-4.
MAX_LR = 1.0
# Loss weights above this are rejected: Adam's step does not grow with a loss's
# scale, so a larger weight only silences the other terms, and far larger ones
# overflow float32 (loss.alpha=1e38 made the first loss inf). The defaults are
# 0.1 (lambda_gp), 10 (alpha) and 0 or 1 (tv_weight).
MAX_LOSS_WEIGHT = 1e4
# data.max_size above this is rejected: the finest stage of a photo is trained at
# up to max_size pixels on its longer side (100000 trained a 48-megapixel stage);
# the paper trains at 250.
MAX_MAX_SIZE = 4096


class Problems:
    """Collects "config.FIELD = VALUE: must be RANGE" lines; None values (those
    that did not convert, already reported) are skipped."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def need(self, field: str, value: Any, ok, rule: str) -> None:
        if value is None:
            return
        try:
            good = bool(ok(value))
        except (TypeError, ValueError, ZeroDivisionError):
            good = False
        if not good:
            self.lines.append(f"config.{field} = {value!r}: must be {rule}")

    def add(self, field: str, value: Any, text: str) -> None:
        """A problem in words: "config.FIELD = VALUE: text"."""
        self.lines.append(f"config.{field} = {value!r}: {text}")

    def int_at_least(self, field: str, value: Any, low: int) -> None:
        self.need(field, value, lambda v: v >= low, f"an integer >= {low}")

    def number(self, field: str, value: Any, ok, rule: str) -> None:
        """`rule` starts "a number"; NaN and infinities are refused."""
        rule = rule.replace("a number", "a finite number", 1)
        self.need(field, value, lambda v: math.isfinite(v) and ok(v), rule)

    def choice(self, field: str, value: Any, choices) -> None:
        self.need(field, value, lambda v: v in choices, f"one of {', '.join(choices)}")

    def probability(self, field: str, value: Any) -> None:
        self.number(field, value, lambda v: 0 <= v <= 1, "a number in [0, 1]")


def range_problems(s: Settings) -> list[str]:
    """Every setting of `s` outside its range, as "config.FIELD = VALUE: must be
    RANGE" lines (config field names, as given on the command line)."""
    p = Problems()
    _data_problems(p, s.data)
    _pyramid_problems(p, s.pyramid, s.data)
    _model_problems(p, s.model)
    _train_problems(p, s.train)
    _loss_problems(p, s.loss)
    _augment_problems(p, s.augment)
    if s.model.upsample == "official" and s.pyramid.schedule != "geometric":
        p.add(
            "model.upsample",
            s.model.upsample,
            "official SinGAN's upsampling scales by one factor per stage; it needs "
            "pyramid.schedule=geometric (or model.upsample=resize)",
        )
    return p.lines


def _data_problems(p: Problems, d: DataSettings) -> None:
    p.need(
        "data.image",
        d.image,
        lambda v: v.strip() != "",
        "a non-empty path to a PNG/JPEG file (e.g. data/colusseum.png)",
    )
    p.need(
        "data.max_size",
        d.max_size,
        lambda v: 1 <= v <= MAX_MAX_SIZE,
        f"an integer in [1, {MAX_MAX_SIZE}] (the longer side of the finest stage, "
        "in pixels: 64 on CPU, 250 in the paper)",
    )
    if d.fit:
        p.need(
            "data.fit",
            d.fit,
            lambda v: d.fit_hw is not None and min(d.fit_hw) >= 1,
            "'' (off) or HxW, e.g. 48x64",
        )
        if d.fit_hw is not None and d.max_size is not None:
            p.need(
                "data.fit",
                d.fit,
                lambda v: max(d.fit_hw) <= d.max_size,
                f"HxW with both sides <= data.max_size ({d.max_size})",
            )
    p.probability("data.min_size_ratio", d.min_size_ratio)
    if d.min_size_ratio is None or d.min_size_ratio <= 0:
        p.int_at_least("data.min_size", d.min_size, 1)
        if d.max_size is not None and d.max_size >= 1:
            p.need(
                "data.min_size",
                d.min_size,
                lambda v: v <= d.max_size,
                f"<= data.max_size ({d.max_size})",
            )
    elif d.min_size_ratio <= 1 and d.max_size is not None and d.max_size >= 1:
        # min_size = max(16, round(ratio x max_size)) must fit in max_size.
        p.need(
            "data.max_size",
            d.max_size,
            lambda v: v >= d.min_size,
            f">= {d.min_size} (the min_size that data.min_size_ratio="
            f"{d.min_size_ratio} gives: max(16, round(ratio x max_size)))",
        )


def _pyramid_problems(p: Problems, y: PyramidSettings, d: DataSettings) -> None:
    p.choice("pyramid.schedule", y.schedule, SCHEDULES)
    p.int_at_least("pyramid.num_stages", y.num_stages, 2)
    p.number("pyramid.r0", y.r0, lambda v: 0 < v < 1, "a number in (0, 1), e.g. 0.75")
    p.number(
        "pyramid.min_step",
        y.min_step,
        lambda v: v == 0 or 1 <= v <= 2,
        "0 (off) or a number in [1, 2], e.g. 1.1",
    )
    if y.schedule != "geometric" and _is_int(d.max_size) and _is_int(d.min_size):
        # Every stage's shorter side lies in [min_size, max_size]: more stages
        # than that repeat sizes.
        most = max(2, d.max_size - d.min_size + 1)
        p.need(
            "pyramid.num_stages",
            y.num_stages,
            lambda v: v <= most,
            f"an integer in [2, {most}]: stage sizes have their shorter side in "
            f"[data.min_size, data.max_size] = [{d.min_size}, {d.max_size}], so more "
            "stages repeat sizes (lower it, or widen that range)",
        )


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _model_problems(p: Problems, m: ModelSpec) -> None:
    p.int_at_least("model.nfc", m.nfc, 1)
    p.int_at_least("model.nfc_growth", m.nfc_growth, 1)
    p.int_at_least("model.max_nfc", m.max_nfc, 1)
    p.int_at_least("model.num_layers", m.num_layers, 2)
    # Valid convolutions with kernel // 2 zero padding per side per layer keep the
    # size only for odd kernels (models/layers.py: `pad`).
    p.need(
        "model.kernel",
        m.kernel,
        lambda v: v >= 1 and v % 2 == 1,
        "an odd integer >= 1 (e.g. 3)",
    )
    p.int_at_least("model.train_depth", m.train_depth, 1)
    p.choice("model.blend", m.blend, BLENDS)
    p.choice("model.upsample", m.upsample, UPSAMPLES)
    p.number("model.lr_scale", m.lr_scale, lambda v: 0 <= v <= 1, "a number in [0, 1]")
    p.number(
        "model.leaky_slope", m.leaky_slope, lambda v: 0 <= v < 1, "a number in [0, 1)"
    )


def _train_problems(p: Problems, t: TrainSettings) -> None:
    p.int_at_least("train.iters_per_stage", t.iters, 1)
    p.int_at_least("train.d_steps", t.d_steps, 1)
    p.int_at_least("train.g_steps", t.g_steps, 1)
    for name, lr in (("lr_g", t.lr_g), ("lr_d", t.lr_d)):
        p.number(
            f"train.{name}",
            lr,
            lambda v: 0 < v <= MAX_LR,
            f"a number in (0, {MAX_LR:g}] (default 5e-4)",
        )
    for name, beta in (("beta1", t.beta1), ("beta2", t.beta2)):
        p.number(f"train.{name}", beta, lambda v: 0 <= v < 1, "a number in [0, 1)")
    p.number("train.adam_eps", t.adam_eps, lambda v: v > 0, "a number > 0 (e.g. 1e-8)")
    p.number(
        "train.lr_milestone", t.lr_milestone, lambda v: v >= 0, "a number >= 0 (0.8)"
    )
    p.need(
        "train.lr_decay_iter",
        t.lr_decay_iter,
        lambda v: v >= -1,
        "an integer >= 0, or -1 (lr_milestone x iters_per_stage)",
    )
    p.number("train.gamma", t.gamma, lambda v: 0 < v <= 1, "a number in (0, 1]")
    p.choice("train.gp_mode", t.gp_mode, GP_MODES)
    p.need(
        "train.steps_per_call",
        t.steps_per_call,
        lambda v: v >= 1,
        "an integer >= 0 (0: auto)",
    )
    p.choice("train.compile_unit", t.compile_unit, COMPILE_UNITS)
    p.need(
        "train.compile_workers",
        t.compile_workers,
        lambda v: v >= 0,
        "an integer >= 0 (0: auto)",
    )
    p.need(
        "train.models_per_call",
        t.models_per_call,
        lambda v: v >= 0,
        "an integer >= 0 (0: auto)",
    )
    p.choice("train.group_mode", t.group_mode, ("auto", "vmap", "shared"))
    p.choice("train.update_rule", t.update_rule, UPDATE_RULES + ("auto",))
    p.choice("train.stage0_rec_noise", t.stage0_rec_noise, STAGE0_REC_NOISE)
    p.need(
        "train.xla_backend_opt_level",
        t.xla_opt_level,
        lambda v: v in (-1, 0, 1, 2, 3),
        "-1 (auto) or 0..3",
    )


def _loss_problems(p: Problems, lo: LossSettings) -> None:
    for name, v in (
        ("loss.lambda_gp", lo.lambda_gp),
        ("loss.alpha", lo.alpha),
        ("loss.tv_weight", lo.tv_weight),
    ):
        p.number(
            name,
            v,
            lambda x: 0 <= x <= MAX_LOSS_WEIGHT,
            f"a number in [0, {MAX_LOSS_WEIGHT:g}]: a larger weight silences the "
            "other losses and overflows float32 (training diverges whatever the "
            "learning rates)",
        )
    p.number("noise_amp_base", lo.noise_amp_base, lambda x: x >= 0, "a number >= 0")
    p.number(
        "loss.noise_amp_floor",
        lo.noise_amp_floor,
        lambda x: 0 <= x <= 1,
        "a number in [0, 1] (0: off), e.g. 0.02",
    )
    p.choice("loss.tv_reduction", lo.tv_reduction, TV_REDUCTIONS)
    p.int_at_least("loss.tv_from_stage", lo.tv_from_stage, 0)


def _augment_problems(p: Problems, a: AugmentSettings) -> None:
    for name in ("p_colour", "p_noise", "p_cutout", "cutout_max", "p_tiles"):
        p.probability(f"augment.{name}", getattr(a, name))
    p.number("augment.noise_std", a.noise_std, lambda v: v >= 0, "a number >= 0")
    p.int_at_least("augment.tiles", a.tiles, 1)


def default_steps_per_call() -> int:
    """Iterations per compiled call when train.steps_per_call is 0 (auto).

    CPU: 1: on the 2-core CPU a lax.scan around this step ran many times slower
    per iteration than the same step jitted alone (docs/performance.md, "What
    changed"). Accelerators: 10, to remove launch gaps between iterations.
    """
    import jax

    return 1 if jax.default_backend() == "cpu" else 10


def _read_train(c: Mapping, problems: list[str] | None = None) -> TrainSettings:
    keys = {"iters": "iters_per_stage", "xla_opt_level": "xla_backend_opt_level"}
    t = _read(TrainSettings, c, "train", keys, problems)
    resolved = {
        "steps_per_call": t.steps_per_call or default_steps_per_call(),
        "log_every": max(1, t.log_every) if t.log_every is not None else None,
        "stage_samples": (
            max(0, t.stage_samples) if t.stage_samples is not None else None
        ),
    }
    if t.steps_per_call is None:
        resolved["steps_per_call"] = None
    return dataclasses.replace(t, **resolved)
