"""The stage loop, written once for every model family.

For each unfinished stage: plan (abstract shapes of every stage, before anything
trains), compile ahead (stage s+1 compiles in a worker thread while stage s
trains), init or warm start, prepare the reconstruction input and noise
amplitude, run the compiled iterations, save the stage, log it (metrics.jsonl
and, with `log.tensorboard`, TensorBoard files: train/metrics.py), write its
sample grids and redraw plots/losses.png. What differs between SinGAN, AGAN and
ConSinGAN comes from the run's `Family` (models/families.py); this module names
none of them.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import logging
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from agan_jax import checkpoint, image_io, plots, pyramid
from agan_jax import lock as run_lock
from agan_jax.errors import UserError
from agan_jax.memory import release_free_memory
from agan_jax.models import families
from agan_jax.models.family import Family
from agan_jax.run import Run
from agan_jax.sampling import make_sampler
from agan_jax.settings import DataSettings, Settings, config_to_dict
from agan_jax.state import StageData
from agan_jax.train.log import drop_records, make_reconstructor, write_stage_images
from agan_jax.train.metrics import make_writer
from agan_jax.train.runner import TrainingDiverged, make_runner, run_stage
from agan_jax.train.updates import StageFns, make_stage_fns, resolve_rule


def stage_key(seed: int, stage: int) -> jax.Array:
    """The PRNG key of one stage: resuming at any stage continues the same stream."""
    return jax.random.fold_in(jax.random.key(seed), stage)


def prepare_image(data: DataSettings) -> tuple[np.ndarray, tuple[int, int], str]:
    """Loads the training image; returns (image, original (h, w), resolved path)."""
    path = image_io.resolve_path(data.image)
    image = image_io.load_image(path, data.max_size, data.min_size)
    return image, image_io.file_size(path), path


def noise_amp(ls, rmse) -> float:
    """A stage's noise amplitude: 1 at stage 0 (rmse None), else noise_amp_base x
    the RMSE of the real image against the reconstruction entering the stage (in
    float64 on the host, as SinGAN computes it)."""
    return 1.0 if rmse is None else ls.noise_amp_base * float(rmse)


def abstract(tree):
    """ShapeDtypeStructs of every leaf of a tree (None stays None)."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(jnp.shape(x), x.dtype), tree)


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
            s.train,
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
    # Compile seconds by part: 'setup' (init + prepare), 'runners', 'grid'.
    compile_parts: dict
    reconstruct: Any = None  # (g_vars 0..s, amps, z_rec) -> image, with `sampler`

    @property
    def compile_s(self) -> float:
        return sum(self.compile_parts.values())


def compile_stage(stages: Stages, s: int, plan: StagePlan) -> StagePrograms:
    """Compiles one stage's programs from abstract shapes (in a worker thread)."""
    t0 = time.time()
    ts = stages.settings.train
    opts = ts.compiler_options
    init = plan.fns.init_state.lower(*plan.init_args).compile(compiler_options=opts)
    prepare = plan.fns.prepare.lower(*plan.prepare_args).compile(compiler_options=opts)
    t1 = time.time()
    runners = make_runner(
        plan.fns, ts, plan.state, plan.data, s, stages.family.fuse_min_pixels
    )
    t2 = time.time()
    sampler = reconstruct = None
    if ts.stage_samples > 0:
        f = make_sampler(
            stages.settings.model, stages.sizes, 0, s + 1, with_attention=True
        )
        keys = jax.ShapeDtypeStruct((ts.stage_samples,), jax.random.key(0).dtype)
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
    release_free_memory()  # the compiler's scratch memory (agan_jax/memory.py)
    parts = {"setup": t1 - t0, "runners": t2 - t1, "grid": t3 - t2}
    return StagePrograms(plan.fns, init, prepare, runners, sampler, parts, reconstruct)


class PlotPolicy:
    """When training redraws plots/losses.png: after a stage once at least 20 times
    the last drawing's seconds have passed since it (at most ~5% of the wall time;
    a draw takes 1-2 s on the 2-core CPU), and at the end of a run that trained.
    A failed draw warns and training goes on."""

    def __init__(self, workdir: str, ratio: float = 20.0, first_cost: float = 1.5):
        self.workdir, self.ratio = workdir, ratio
        self.path = os.path.join(workdir, plots.LOSSES_PNG)
        self.last, self.cost = time.time(), first_cost

    def draw(self, force: bool = False) -> None:
        t0 = time.time()
        if not force and t0 - self.last < self.ratio * self.cost:
            return
        try:
            plots.write_losses([self.workdir])
        except UserError:
            pass  # nothing logged yet
        except Exception as e:  # noqa: BLE001 - a plot never stops training
            logging.warning("could not draw %s: %s", self.path, e)
        self.last = time.time()
        self.cost = self.last - t0


def run_config(config: dict) -> dict:
    """The config as run.json keeps it: without `log` (how one invocation is
    watched, which a resume may change)."""
    return {k: v for k, v in config.items() if k != "log"}


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; the message says which stages are saved. Launchers
    print it and exit with status 130."""


def train(config, workdir: str, stop_after: int | None = None, progress: bool = True):
    """Trains every unfinished stage of the run in `workdir`; returns the Run.

    Re-running with the same config and workdir resumes at the first unfinished
    stage, with the same result as an uninterrupted run. `stop_after` stops after
    that stage (for tests and staged launches).

    One writer per run directory: training holds WORKDIR/.lock (agan_jax.lock)
    while it may write. A run whose wanted stages are all saved is only read (no
    lock, no writes: it may live on a read-only file system). Until stage 0 is
    saved the run's settings may change (run.json is rewritten); after that a
    resume must keep them. On resume, metrics.jsonl loses the records of the
    stages trained again. Errors: UserError (bad input, a locked or unwritable
    directory, a failed save: the message names the fix), TrainingDiverged,
    TrainingInterrupted (Ctrl-C); each says which stages are saved.
    """
    settings = families.settings_from_config(config)
    return train_settings(
        settings, config_to_dict(config), workdir, stop_after, progress
    )


def diverged_advice(e, settings: Settings, workdir: str, saved: int) -> str:
    """A TrainingDiverged message with the saved stages and a fix that works."""
    ts = settings.train
    lower = f"--config.train.lr_g={ts.lr_g / 2:g} --config.train.lr_d={ts.lr_d / 2:g}"
    if not saved:
        return (
            f"{e}. No stage is saved, so every setting may still change: lower the "
            f"learning rates (e.g. {lower}) and re-run the same command"
        )
    keys = ", ".join(sorted(checkpoint._RESUMABLE_KEYS))
    return (
        f"{e}. In {workdir} {checkpoint.saved_phrase(saved)}, and a resume keeps "
        f"the run's settings (only {keys} and log.* may change): to train with "
        f"lower learning rates (e.g. {lower}) use a new --workdir, or delete "
        f"{os.path.join(os.path.abspath(workdir), 'checkpoints')} to train this run "
        "again from stage 0"
    )


def train_settings(
    settings: Settings,
    config: dict,
    workdir: str,
    stop_after: int | None = None,
    progress: bool = True,
) -> Run | None:
    """`train` from read settings (`config`: the same as a dict, for run.json)."""
    settings.validate(checks=families.settings_problems)  # before any work
    family = families.of(settings.model)
    resolve_rule(family, settings.model, settings.train)  # refuse before any work
    store = checkpoint.RunStore(workdir)
    store.check_workdir()
    image, original_hw, _ = prepare_image(settings.data)
    sizes = pyramid.stage_sizes_for(
        settings.pyramid, settings.data, image.shape[:2], original_hw
    )
    num_stages = len(sizes)
    if stop_after is not None and not 0 <= stop_after:
        raise UserError(
            f"--stop_after_stage={stop_after} is not a stage: give one of "
            f"0..{num_stages - 1} (this run has {num_stages} stages), or leave it "
            "out to train every stage"
        )
    last = num_stages - 1 if stop_after is None else min(stop_after, num_stages - 1)
    meta = checkpoint.run_metadata(settings, run_config(config), sizes, image)
    # A run whose wanted stages are saved is only read: no lock, nothing written.
    if store.check_metadata(meta) and store.saved_stage_count() > last:
        plots_path = os.path.join(store.workdir, plots.LOSSES_PNG)
        if not os.path.exists(plots_path) and os.access(store.workdir, os.W_OK):
            PlotPolicy(store.workdir).draw(force=True)
        store.close()
        return checkpoint.load_run(workdir)
    with run_lock.RunLock(workdir, "training"):
        return _train_locked(
            settings, config, store, family, image, sizes, meta, last, progress
        )


def _train_locked(
    settings, config, store, family, image, sizes, meta, last, progress
) -> Run | None:
    """The stage loop of `train_settings`, run while holding the workdir's lock."""
    del config
    workdir = store.workdir
    ts, seed = settings.train, settings.seed
    stages = Stages(family, settings, sizes)
    num_stages = len(sizes)
    store.check_or_write_metadata(meta, image)
    reals = pyramid.build(jnp.asarray(image), sizes)

    done = store.finished_stages(num_stages)
    run = store.load_run(upto=len(done)) if done else None
    g_list = list(run.g_vars) if run else []
    amps = [float(a) for a in run.noise_amps] if run else []
    z_rec = jnp.asarray(run.z_rec) if run else None
    prev_d = store.load_d_vars(len(done) - 1) if done else None
    metrics_path = os.path.join(workdir, "metrics.jsonl")
    first = saved = len(done)
    # Records of the stages trained again (a killed attempt's) would appear twice.
    drop_records(metrics_path, first)
    t_run = time.time()
    prev_g = g_list[-1] if g_list else None
    plan = plan_stages(stages, first, last, prev_g, prev_d, g_list, z_rec)
    writer = make_writer(workdir, settings.log)
    plotter = PlotPolicy(workdir)
    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="compile")
    interrupted = False
    try:
        futures = {
            s: pool.submit(compile_stage, stages, s, plan[s])
            for s in range(first, last + 1)
        }
        for s in range(first, last + 1):
            t0 = time.time()
            # Popped: a finished stage's programs are freed once the next begins.
            progs = futures.pop(s).result()
            wait_s = time.time() - t0
            prev_g = g_list[-1] if g_list else None
            state = progs.init(stage_key(seed, s), prev_g, prev_d)
            if z_rec is None:
                z_rec = family.stage0_rec(
                    settings.model, seed, sizes, state.g_vars, reals[0]
                )
            lower_amps = jnp.asarray(amps, jnp.float32).reshape(s)
            rec_inputs, rmse = progs.prepare(
                state.g_vars, tuple(g_list), lower_amps, z_rec, reals[s]
            )
            amp = noise_amp(settings.loss, rmse)
            data = StageData(
                real=reals[s],
                amps=jnp.asarray([*amps, amp], jnp.float32),
                rec_inputs=rec_inputs,
                lower_vars=tuple(g_list),
                source=reals[0],
            )
            try:
                state, train_s = run_stage(
                    state,
                    data,
                    progs.runners,
                    ts,
                    s,
                    num_stages,
                    sizes[s],
                    metrics_path,
                    progress,
                    writer=writer,
                    noise_amp=amp,
                    lambda_gp=settings.loss.lambda_gp,
                )
            except TrainingDiverged as e:
                raise TrainingDiverged(
                    diverged_advice(e, settings, workdir, saved), e.stage, e.iteration
                ) from None
            if plan[s].fns.rec_draw is not None:
                # 'redraw' (official SinGAN): the last iteration's map is z*; the
                # (lower, noise) inputs of the families that train with 'singan'.
                z_rec = plan[s].fns.rec_draw(state.key, ts.iters - 1)[1]
            g_list.append(state.g_vars)
            amps.append(amp)
            prev_d = state.d_vars
            try:
                store.save_stage(s, state, z_rec, amp, sizes[s])
            except OSError as e:
                raise UserError(
                    f"could not save stage {s} to {store.ckpt_dir} "
                    f"({e.strerror or e}); {checkpoint.saved_phrase(saved)} and "
                    "intact. Free space on that disk (or fix its permissions) and "
                    f"re-run the same command to resume at stage {s}"
                ) from e
            saved = s + 1
            writer.record(
                {
                    "event": "stage_done",
                    "stage": s,
                    "size": list(sizes[s]),
                    "noise_amp": amp,
                    "compile_s": round(progs.compile_s, 3),
                    **{
                        f"compile_{k}_s": round(v, 3)
                        for k, v in progs.compile_parts.items()
                    },
                    "compile_wait_s": round(wait_s, 3),
                    "train_s": round(train_s, 3),
                    "stage_s": round(time.time() - t0, 3),
                    "iters_per_s": round(ts.iters / max(train_s, 1e-9), 3),
                },
            )
            if progs.sampler is not None:
                amps_now = jnp.asarray(amps, jnp.float32)
                write_stage_images(
                    progs.sampler,
                    ts.stage_samples,
                    seed,
                    g_list,
                    amps,
                    workdir,
                    s,
                    reals[s],
                    writer=writer,
                    reconstruction=progs.reconstruct(tuple(g_list), amps_now, z_rec),
                    step=ts.iters,
                )
            writer.flush()
            if s < last:
                plotter.draw()
        store.close()
        if last >= first:
            writer.record(
                {
                    "event": "run_done",
                    "stages": len(g_list),
                    "seconds": round(time.time() - t_run, 3),
                }
            )
    except KeyboardInterrupt:
        interrupted = True
        raise TrainingInterrupted(
            f"interrupted: {checkpoint.saved_phrase(saved)}; re-run the same "
            "command to resume"
        ) from None
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        writer.close()
        if not interrupted and (last >= first or not os.path.exists(plotter.path)):
            plotter.draw(force=True)
    return checkpoint.load_run(workdir) if g_list else None
