"""One training stage built as training builds it, its compiled runners, and
the seconds per iteration of one stage (in this process or a child).

`build_stage` takes frozen `Settings`, the stage sizes and the real pyramid; the
stages below are initialised (not trained: speed and memory do not depend on
their weights) and the stage's reconstruction input and noise amplitude come
from the family's `prepare`, as in `agan_jax/train/loop.py`. `step_setup` is the
microbenchmarks' SinGAN stage at a hand-picked size; `config_stage` the stage of
a config's own pyramid.

XLA_FLAGS is read once, when jax starts its backend, so a variant with other
flags runs in a child process: `python -m benchmarks.stage child JSON`.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from agan_jax import compiler, pyramid
from agan_jax.models import families
from agan_jax.models.family import Family
from agan_jax.settings import Settings
from agan_jax.state import StageData
from agan_jax.train.group import Models
from agan_jax.train.loop import noise_amp, prepare_image
from agan_jax.train.lower import LowerStages
from agan_jax.train.runner import make_runner
from agan_jax.train.updates import StageFns, make_stage_fns
from benchmarks import common

Size = tuple[int, int]
# The config every microbenchmark starts from (its model and train fields are
# then set per figure); defaults live in configs/default.py only.
MICRO_CONFIG = "configs/singan.py"


@dataclasses.dataclass
class StepSetup:
    """One stage at `sizes[stage]` with initialised, frozen stages below."""

    settings: Settings
    family: Family
    sizes: list[Size]
    stage: int
    fns: StageFns
    state: Any  # StageState (the runners donate it: use `fresh_state`)
    data: StageData

    @property
    def ts(self):
        return self.settings.train

    def fresh_state(self) -> Any:
        """A copy of the initial state (the runners donate their input)."""
        return jax.tree.map(jnp.copy, self.state)

    def fed_state(self, k: int = 1) -> Any:
        """A fresh state holding the lower-stage samples of k iterations, as
        the stage loop feeds them (train/lower.py); without frozen stages below,
        `fresh_state`."""
        state, slots = self.fresh_state(), self.fns.lower_slots
        if not slots:
            return state
        s = self.settings
        lower = LowerStages(s.model, self.sizes, Models(), s.train.compiler_options)
        amps = [self.data.amps[j] for j in range(self.stage)]
        x = lower.draw(state, k, slots, s.train.per_iter, self.data.lower_vars, amps)
        return state.replace(lower=x)

    def make_fns(self) -> StageFns:
        """New (never traced) stage functions, for compile-time measurements."""
        s = self.settings
        return make_stage_fns(
            self.family, s.model, self.sizes, self.stage, s.train, s.loss, s.augment
        )


def with_fields(settings: Settings, **values: Any) -> Settings:
    """`settings` with fields of its train, model or loss settings replaced by
    name (d_steps=1, num_layers=2, lambda_gp=...), checked."""
    groups = {"train": settings.train, "model": settings.model, "loss": settings.loss}
    changes: dict[str, dict] = {g: {} for g in groups}
    for name, value in values.items():
        owner = next(
            (
                g
                for g, obj in groups.items()
                if name in {f.name for f in dataclasses.fields(obj)}
            ),
            None,
        )
        if owner is None:
            raise TypeError(f"no train, model or loss setting is called {name!r}")
        changes[owner][name] = value
    out = dataclasses.replace(
        settings,
        **{g: dataclasses.replace(groups[g], **c) for g, c in changes.items() if c},
    )
    out.check()
    return out


def pyramid_sizes(hw: Size, lower: int, r: float = 0.75) -> list[Size]:
    """`lower` coarser sizes (ratio r per stage) followed by hw."""
    h, w = hw
    return [
        (max(8, round(h * r ** (lower - i))), max(8, round(w * r ** (lower - i))))
        for i in range(lower)
    ] + [(h, w)]


def build_stage(
    settings: Settings,
    sizes: Sequence[Size],
    stage: int,
    reals: Sequence[jax.Array],
    seed: int = 0,
) -> StepSetup:
    """Stage `stage` of a pyramid, set up as training sets it up.

    Stages below are initialised in turn (each from the one below, as training
    warm-starts), noise amplitudes 1 at stage 0 and 0.1 above; the stage's own
    reconstruction input and amplitude come from the family's `prepare` and
    `train.loop.noise_amp`.
    """
    family = families.of(settings.model)
    spec, ts, ls = settings.model, settings.train, settings.loss
    sizes = [tuple(s) for s in sizes]
    opts = ts.compiler_options

    def compiled(fn, *args):  # as train.programs.compile_stage compiles them
        return fn.lower(*args).compile(compiler_options=opts)(*args)

    key = jax.random.key(seed)
    lower, prev_g, prev_d, z_rec = [], None, None, None
    for s in range(stage + 1):
        fns = make_stage_fns(family, spec, sizes, s, ts, ls, settings.augment)
        state = compiled(fns.init_state, jax.random.fold_in(key, s), prev_g, prev_d)
        if z_rec is None:
            z_rec = family.stage0_rec(spec, seed, sizes, state.g_vars, reals[0])
        if s < stage:
            lower.append(state.g_vars)
            prev_g, prev_d = state.g_vars, state.d_vars
    lower_amps = jnp.asarray([1.0] + [0.1] * (stage - 1), jnp.float32)[:stage]
    rec_inputs, rmse = compiled(
        fns.prepare, state.g_vars, tuple(lower), lower_amps, z_rec, reals[stage]
    )
    amp = noise_amp(ls, rmse)
    data = StageData(
        real=reals[stage],
        amps=jnp.asarray([*lower_amps.tolist(), amp], jnp.float32),
        rec_inputs=rec_inputs,
        lower_vars=tuple(lower),
        source=reals[0],
    )
    return StepSetup(settings, family, list(sizes), stage, fns, state, data)


def step_setup(
    hw: Size = (49, 64),
    width: int = 64,
    lower: int = 1,
    *,
    seed: int = 0,
    num_layers: int = 5,
    **values: Any,
) -> StepSetup:
    """A SinGAN stage of `width` channels at hw above `lower` frozen stages, on a
    random image.

    Every stage has `width` channels and `num_layers` convolutions (SinGAN: 5);
    `values` set further train, model or loss settings (gp_mode, compile_unit,
    steps_per_call, d_steps, ...; `with_fields`). 2000 iterations per stage.
    """
    base = common.settings_of(MICRO_CONFIG, {"train.iters_per_stage": 2000})
    settings = with_fields(
        base, nfc=width, max_nfc=width, num_layers=num_layers, **values
    )
    sizes = pyramid_sizes(hw, lower)
    rng = np.random.default_rng(seed)
    image = jnp.asarray(rng.uniform(-1, 1, (*hw, 3)).astype(np.float32))
    return build_stage(settings, sizes, lower, pyramid.build(image, sizes), seed)


def config_sizes(settings: Settings):
    """(stage sizes, real pyramid) of a config's own image and schedule."""
    image, original_hw, _ = prepare_image(settings.data)
    sizes = pyramid.stage_sizes_for(
        settings.pyramid, settings.data, image.shape[:2], original_hw
    )
    return sizes, pyramid.build(jnp.asarray(image), sizes)


def config_stage(settings: Settings, stage: int = -1) -> StepSetup:
    """Stage `stage` (default: the finest) of the settings' own pyramid."""
    sizes, reals = config_sizes(settings)
    stage = stage % len(sizes)
    return build_stage(settings, sizes, stage, reals, settings.seed)


def build_runner(
    setup: StepSetup, compiler_options: dict | None = None
) -> tuple[Callable, int, float]:
    """(run, iterations per call, compile seconds) for the setup's compile unit.

    The training code path (`train.runner.make_runner`); `compiler_options` are
    compiled in over the settings' own (LLVM O1 on CPU unless xla_opt_level says
    otherwise, see agan_jax/compiler.py).
    """
    ts = setup.ts
    t0 = time.perf_counter()
    options = {**(ts.compiler_options or {}), **(compiler_options or {})} or None
    runners = make_runner(
        setup.fns,
        ts,
        setup.state,
        setup.data,
        setup.stage,
        compiler.fuse_min_pixels(setup.family.kind),
        options=options,
    )
    k = max(runners)
    return runners[k], k, time.perf_counter() - t0


@dataclasses.dataclass(frozen=True)
class IterTiming:
    """Compile seconds of the runner and seconds per iteration."""

    compile_s: float
    iter_s: float


def measure_iteration(
    hw: Size = (49, 64),
    width: int = 64,
    lower: int = 1,
    calls: int = 3,
    compile_unit: str = "iteration",
    steps_per_call: int = 1,
    gp_mode: str = "jvp",
    compiler_options: dict | None = None,
    **values: Any,
) -> IterTiming:
    """Compiles and times one stage's iteration (d_steps + g_steps updates);
    `values` set further settings (d_steps, g_steps, num_layers, ...)."""
    setup = step_setup(
        hw,
        width,
        lower,
        compile_unit=compile_unit,
        steps_per_call=steps_per_call,
        gp_mode=gp_mode,
        **values,
    )
    run, k, compile_s = build_runner(setup, compiler_options)
    iter_s, _ = common.time_calls(run, setup.state, setup.data, calls, per_call=k)
    return IterTiming(compile_s, iter_s)


RESULT_TAG = "BENCH_RESULT "


def iteration_in_child(xla_flags: str = "", timeout: float = 1800, **kw) -> IterTiming:
    """`measure_iteration(**kw)` in a fresh process started with these XLA_FLAGS
    (`python -m benchmarks.stage child JSON`), persistent cache off."""
    kw = {k: list(v) if isinstance(v, tuple) else v for k, v in kw.items()}
    out = common.child_result("benchmarks.stage", kw, RESULT_TAG, xla_flags, timeout)
    return IterTiming(**out)


def _child_main(args: list[str]) -> None:
    kw = json.loads(args[0]) if args else {}
    if "hw" in kw:
        kw["hw"] = tuple(kw["hw"])
    timing = measure_iteration(**kw)
    print(RESULT_TAG + json.dumps(dataclasses.asdict(timing)), flush=True)


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "child":
        _child_main(sys.argv[2:])
    else:
        print("usage: python -m benchmarks.stage child JSON  (use launch.bench)")
        sys.exit(2)
