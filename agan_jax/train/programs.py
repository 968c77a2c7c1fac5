"""A stage's programs: planned from abstract shapes before anything trains, and
compiled ahead of time (train/loop.py compiles stage s+1 in a worker thread
while stage s trains).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from agan_jax import compiler
from agan_jax.memory import release_free_memory
from agan_jax.models.family import Family
from agan_jax.sampling import make_sampler
from agan_jax.settings import Settings
from agan_jax.state import StageData, abstract
from agan_jax.train.group import Models
from agan_jax.train.log import grid_batch, make_reconstructor
from agan_jax.train.lower import LowerStages
from agan_jax.train.runner import make_runner
from agan_jax.train.updates import StageFns, make_stage_fns


@dataclasses.dataclass(frozen=True)
class StagePlan:
    """One stage's functions and the abstract shapes of its programs' arguments."""

    fns: StageFns
    state: Any  # StageState of ShapeDtypeStructs
    data: StageData  # of ShapeDtypeStructs
    init_args: tuple  # (key, prev_g, prev_d)
    prepare_args: tuple  # (g_vars, lower_vars, lower_amps, z_rec, real)


@dataclasses.dataclass(frozen=True)
class Stages:
    """What every stage of one run shares: its family, settings and sizes."""

    family: Family
    settings: Settings
    sizes: list[tuple[int, int]]

    def fns(self, stage: int, finetune: bool = False) -> StageFns:
        s = self.settings
        return make_stage_fns(
            self.family,
            s.model,
            self.sizes,
            stage,
            s.train if finetune else s.train.at_stage(stage, self.sizes),
            s.loss,
            s.augment,
            finetune,
        )


def plan_stages(stages: Stages, first: int, last: int, prev_g, prev_d, lower, z_rec):
    """Abstract shapes of stages first..last, before anything trains.

    Args:
      prev_g, prev_d: variables (or shapes) of stage first-1, None at stage 0.
      lower: generator variables (or shapes) of stages < first.
      z_rec: the stage-0 reconstruction input (None before stage 0 trained).
    Returns:
      {stage: StagePlan}.
    """
    spec, sizes, seed = stages.settings.model, stages.sizes, stages.settings.seed
    key = jax.ShapeDtypeStruct((), jax.random.key(0).dtype)
    f32 = jnp.float32
    prev_g, prev_d, z_rec = abstract(prev_g), abstract(prev_d), abstract(z_rec)
    lower = [abstract(v) for v in lower]
    source = jax.ShapeDtypeStruct((*sizes[0], 3), f32)
    plan = {}
    for s in range(first, last + 1):
        fns = stages.fns(s)
        state = jax.eval_shape(fns.init_state, key, prev_g, prev_d)
        if z_rec is None:
            rec0 = functools.partial(stages.family.stage0_rec, spec, seed, sizes)
            z_rec = jax.eval_shape(rec0, state.g_vars, source)
        real = jax.ShapeDtypeStruct((*sizes[s], 3), f32)
        prep_args = (state.g_vars, tuple(lower), jax.ShapeDtypeStruct((s,), f32))
        prep_args += (z_rec, real)
        rec_inputs, _ = jax.eval_shape(fns.prepare, *prep_args)
        data = StageData(
            real=real,
            amps=jax.ShapeDtypeStruct((s + 1,), f32),
            rec_inputs=rec_inputs,
            lower_vars=tuple(lower),
            source=source,
        )
        plan[s] = StagePlan(fns, state, data, (key, prev_g, prev_d), prep_args)
        lower.append(state.g_vars)
        prev_g, prev_d = state.g_vars, state.d_vars
    return plan


@dataclasses.dataclass(frozen=True)
class StagePrograms:
    """The compiled programs of one stage."""

    fns: StageFns
    init: Any  # init_state(key, prev_g_vars, prev_d_vars)
    prepare: Any  # (g_vars, lower_vars, lower_amps, z_rec, real) -> (rec, rmse)
    runners: dict  # iterations per call -> compiled runner (runner.make_runner)
    sampler: Any  # (keys, g_vars 0..s, amps, base) -> (images, attentions) or None
    # Compile seconds by part: 'setup' (init + prepare), 'runners', 'lower'
    # (train/lower.py), 'grid'; parts compiled in threads overlap.
    compile_parts: dict
    compile_s: float  # wall seconds of the whole compile
    reconstruct: Any = None  # (g_vars 0..s, amps, z_rec) -> image, with `sampler`


def compile_stage(
    stages: Stages,
    s: int,
    plan: StagePlan,
    models: Models | None = None,
    lower: LowerStages | None = None,
    threads: int = 1,
) -> StagePrograms:
    """Compiles one stage's programs from abstract shapes (in a worker thread).

    `models`: how the loop holds its models (group.Models; default one,
    unbatched). Training programs run over the model axis; the stage grid's
    sampler and reconstruction take one model (called once per model).
    `lower`: the loop's frozen-stage programs (train/lower.py): the update
    programs then take the lower-stage samples in `StageState.lower`, and the
    programs of stages below s that their calls need are compiled here (those
    of earlier stages compiled once, for the first stage that needed them).
    None: every update draws its own (the whole pyramid below in its program).
    `threads`: programs compiled at once (init and prepare beside the update
    programs, and those side by side), where no training needs the cores.
    """
    if threads <= 1:
        return _compile_stage(stages, s, plan, models or Models(), lower, None)
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        return _compile_stage(stages, s, plan, models or Models(), lower, pool)


def entering(sizes, s: int, plan: StagePlan, lower: LowerStages, options):
    """Stage s's `prepare` made of the frozen stages' own programs (one model):
    their reconstruction (`LowerStages.reconstruct`, the programs the stage grids
    use) and the stage's `enter` on it; compiled here when missing."""
    _, lower_vars, _, _, real = plan.prepare_args
    lower.prepare_reconstruct(s, lower_vars)
    x = jax.ShapeDtypeStruct((*sizes[s - 1], 3), jnp.float32)
    enter = plan.fns.enter.lower(x, real).compile(compiler_options=options)
    reconstruct = lower.reconstruct(s)

    def prepare(g_vars, lower_vars, lower_amps, z_rec, real):
        del g_vars  # host amplitudes: no eager indexing program
        return enter(reconstruct(lower_vars, np.asarray(lower_amps), z_rec), real)

    return prepare


def _timed(fn, *args):
    t0 = time.time()
    return fn(*args), time.time() - t0


def _compile_stage(stages, s, plan, models, lower, pool) -> StagePrograms:
    t0 = time.time()
    ts = stages.settings.train.at_stage(s, stages.sizes)
    opts = ts.compiler_options
    fns, b = models.fns(plan.fns), models.abstract

    def setup():
        # init_state is called once per model (group.Models.each).
        init = fns.init_state.lower(*plan.init_args).compile(compiler_options=opts)
        # One model's prepare from the frozen stages' programs; a vmap'd group
        # (one call for all models) keeps the pyramid in its prepare program.
        if lower is not None and plan.fns.enter is not None and models.mode != "vmap":
            return init, entering(stages.sizes, s, plan, lower, opts)
        pre = fns.prepare.lower(*b(plan.prepare_args)).compile(compiler_options=opts)
        return init, pre

    if pool is None:
        setup_done = concurrent.futures.Future()
        setup_done.set_result(_timed(setup))
    else:
        setup_done = pool.submit(_timed, setup)
    t1 = time.time()
    fuse, f32 = compiler.fuse_min_pixels(stages.family.kind), jnp.float32
    slots = plan.fns.lower_slots if lower is not None else 0
    if slots:  # k iterations per call hold k x slots samples of stage s-1

        def state(k):
            below = jax.ShapeDtypeStruct((k * slots, *stages.sizes[s - 1], 3), f32)
            return b(plan.state.replace(lower=below))

    else:
        state = b(plan.state)
    runners = make_runner(fns, ts, state, b(plan.data), s, fuse, pool=pool)
    lower_s = 0.0
    if slots:
        t = time.time()
        for k in runners:
            lower.prepare(s, k * slots, plan.data.lower_vars, slots, ts.per_iter)
        lower_s = time.time() - t
    t2 = time.time()
    sampler = reconstruct = None
    # In calls of grid_batch samples (1 on CPU): the whole grid in one call
    # raised the peak memory (docs/performance.md, "Whole-process CPU targets").
    batch = grid_batch(ts.stage_samples)
    if ts.stage_samples > 0 and lower is not None and stages.family.stage_generators:
        # The grid from the per-stage programs, those of stages below s compiled
        # for earlier stages' grids already.
        grid = lower.single()
        grid.prepare_grid(s + 1, batch, (*plan.data.lower_vars, plan.state.g_vars))
        sampler, reconstruct = grid.sampler(s + 1, batch), grid.reconstruct(s + 1)
    elif ts.stage_samples > 0:
        f = make_sampler(
            stages.settings.model, stages.sizes, 0, s + 1, with_attention=True
        )
        keys = jax.ShapeDtypeStruct((batch,), jax.random.key(0).dtype)
        amps = jax.ShapeDtypeStruct((s + 1,), jnp.float32)
        variables = (*plan.data.lower_vars, plan.state.g_vars)
        base = jax.ShapeDtypeStruct((1, 1, 3), jnp.float32)
        sampler = (
            jax.jit(f).lower(keys, variables, amps, base).compile(compiler_options=opts)
        )
        rec = make_reconstructor(stages.settings.model, stages.sizes, s + 1)
        z_rec = plan.prepare_args[3]
        reconstruct = (
            jax.jit(rec).lower(variables, amps, z_rec).compile(compiler_options=opts)
        )
    t3 = time.time()
    (init, prepare), setup_s = setup_done.result()
    release_free_memory()  # the compiler's scratch memory (agan_jax/memory.py)
    parts = {"setup": setup_s, "runners": t2 - t1 - lower_s, "lower": lower_s}
    parts["grid"] = t3 - t2
    wall = time.time() - t0
    return StagePrograms(fns, init, prepare, runners, sampler, parts, wall, reconstruct)
