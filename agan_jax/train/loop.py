"""The stage loop, written once for every model family.

For each unfinished stage: plan (abstract shapes of every stage, before anything
trains), compile ahead (stage s+1 compiles in a worker thread while stage s
trains), init or warm start, prepare the reconstruction input and noise
amplitude, run the compiled iterations, save the stage, log it (metrics.jsonl
and, with `log.tensorboard`, TensorBoard files: train/metrics.py), write its
sample grids and redraw plots/losses.png. What differs between SinGAN, AGAN and
ConSinGAN comes from the run's `Family` (models/families.py); this module names
none of them. The same loop trains a group of runs of one shape (train/group.py,
train/many.py): each stage compiles once for the group.
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
from agan_jax.memory import forget_compiled, release_free_memory, resident_mib
from agan_jax.models import families
from agan_jax.models.family import Family
from agan_jax.run import Run
from agan_jax.sampling import make_sampler
from agan_jax.settings import DataSettings, Settings, config_to_dict
from agan_jax.state import StageData
from agan_jax.train.group import Models
from agan_jax.train.log import (
    drop_records,
    grid_batch,
    make_reconstructor,
    write_stage_images,
)
from agan_jax.train.metrics import make_writer
from agan_jax.train.runner import TrainingDiverged, make_runner, run_stage
from agan_jax.train.updates import StageFns, make_stage_fns, resolve_rule


def stage_key(seed: int, stage: int) -> jax.Array:
    """The PRNG key of one stage: resuming at any stage continues the same stream."""
    return jax.random.fold_in(jax.random.key(seed), stage)


def prepare_image(data: DataSettings) -> tuple[np.ndarray, tuple[int, int], str]:
    """Loads the training image; returns (image, original (h, w), resolved path).

    With `data.fit` ('HxW') the image is centre-cropped to the aspect H:W and
    resized to HxW; the original size is then HxW (the stage sizes follow it).
    """
    path = image_io.resolve_path(data.image)
    if data.fit_hw is None:
        image = image_io.load_image(path, data.max_size, data.min_size)
        return image, image_io.file_size(path), path
    source = image_io.load_image(path, None, data.min_size)  # too small: refused
    image = fit_image(source, data.fit_hw)
    if min(data.fit_hw) < data.min_size:
        raise UserError(
            f"data.fit={data.fit} has a side below min_size={data.min_size}; give "
            "a larger --config.data.fit or lower --config.data.min_size"
        )
    return image, data.fit_hw, path


def fit_image(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """The largest centre crop of aspect h:w, resized to (h, w) (bicubic,
    antialiased, clipped to [-1, 1])."""
    ih, iw = image.shape[:2]
    h, w = hw
    ch, cw = (ih, round(ih * w / h)) if ih * w <= iw * h else (round(iw * h / w), iw)
    ch, cw = max(1, min(ch, ih)), max(1, min(cw, iw))
    top, left = (ih - ch) // 2, (iw - cw) // 2
    crop = jnp.asarray(image[top : top + ch, left : left + cw])
    return np.asarray(jnp.clip(pyramid.resize(crop, hw), -1.0, 1.0), np.float32)


def noise_amp(ls, rmse) -> float:
    """A stage's noise amplitude: 1 at stage 0 (rmse None), else noise_amp_base x
    the RMSE of the real image against the reconstruction entering the stage (in
    float64 on the host, as SinGAN computes it), at least `noise_amp_floor`."""
    if rmse is None:
        return 1.0
    return max(ls.noise_amp_floor, ls.noise_amp_base * float(rmse))


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
    # Compile seconds by part: 'setup' (init + prepare), 'runners', 'grid'.
    compile_parts: dict
    reconstruct: Any = None  # (g_vars 0..s, amps, z_rec) -> image, with `sampler`

    @property
    def compile_s(self) -> float:
        return sum(self.compile_parts.values())


def compile_stage(
    stages: Stages, s: int, plan: StagePlan, models: Models | None = None
) -> StagePrograms:
    """Compiles one stage's programs from abstract shapes (in a worker thread).

    `models`: how the loop holds its models (group.Models; default one,
    unbatched). Training programs run over the model axis; the stage grid's
    sampler and reconstruction take one model (called once per model).
    """
    t0 = time.time()
    models = models or Models()
    ts = stages.settings.train.at_stage(s, stages.sizes)
    opts = ts.compiler_options
    fns, b = models.fns(plan.fns), models.abstract
    # init_state is called once per model (group.Models.each).
    init = fns.init_state.lower(*plan.init_args).compile(compiler_options=opts)
    prepare = fns.prepare.lower(*b(plan.prepare_args)).compile(compiler_options=opts)
    t1 = time.time()
    runners = make_runner(
        fns, ts, b(plan.state), b(plan.data), s, stages.family.fuse_min_pixels
    )
    t2 = time.time()
    sampler = reconstruct = None
    if ts.stage_samples > 0:
        f = make_sampler(
            stages.settings.model, stages.sizes, 0, s + 1, with_attention=True
        )
        # In calls of grid_batch samples (1 on CPU): the whole grid in one call
        # added 218 MiB to peak RSS at ConSinGAN's 97x128 stage (issue 13).
        batch = grid_batch(ts.stage_samples)
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
    release_free_memory()  # the compiler's scratch memory (agan_jax/memory.py)
    parts = {"setup": t1 - t0, "runners": t2 - t1, "grid": t3 - t2}
    return StagePrograms(fns, init, prepare, runners, sampler, parts, reconstruct)


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


@dataclasses.dataclass
class Member:
    """One run of a stage loop: its image, directory and settings (a group's
    members share every setting but the image)."""

    name: str
    settings: Settings
    image: np.ndarray
    sizes: list[tuple[int, int]]
    meta: dict
    store: checkpoint.RunStore

    @property
    def workdir(self) -> str:
        return self.store.workdir


def prepare_member(
    settings: Settings,
    config: dict,
    workdir: str,
    stop_after: int | None = None,
    name: str = "",
) -> tuple[Member, int]:
    """Checks one run's settings, image and directory before any work; returns
    (member, last stage to train). UserError on bad input."""
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
    return Member(name, settings, image, sizes, meta, store), last


def trained_already(member: Member, last: int) -> bool:
    """Whether every wanted stage is saved (such a run is only read: no lock,
    nothing written but a missing losses plot)."""
    store = member.store
    if not (store.check_metadata(member.meta) and store.saved_stage_count() > last):
        return False
    plots_path = os.path.join(store.workdir, plots.LOSSES_PNG)
    if not os.path.exists(plots_path) and os.access(store.workdir, os.W_OK):
        PlotPolicy(store.workdir).draw(force=True)
    store.close()
    return True


def train_settings(
    settings: Settings,
    config: dict,
    workdir: str,
    stop_after: int | None = None,
    progress: bool = True,
) -> Run | None:
    """`train` from read settings (`config`: the same as a dict, for run.json)."""
    member, last = prepare_member(settings, config, workdir, stop_after)
    if trained_already(member, last):
        return checkpoint.load_run(workdir)
    with run_lock.RunLock(workdir, "training"):
        trained = train_members([member], last, progress)
    return checkpoint.load_run(workdir) if trained else None


def train_members(
    members: list[Member],
    last: int,
    progress: bool = True,
    models: Models | None = None,
) -> bool:
    """The stage loop, run while holding each member's lock: trains stages
    first..last of every member, `first` their (common) count of saved stages.

    One member trains unbatched; a group (`models`, group.Models) compiles each
    stage once for all its members (each calling the single-model programs, or
    one vmap'd program over a model axis), each member saved and logged as its
    own run. Returns whether any stage is saved.
    """
    models = models or Models()
    lead = members[0]
    settings, sizes, family = (
        lead.settings,
        lead.sizes,
        families.of(lead.settings.model),
    )
    ts, seed, spec = settings.train, settings.seed, settings.model
    stages = Stages(family, settings, sizes)
    num_stages = len(sizes)
    done = None
    for m in members:
        m.store.check_or_write_metadata(m.meta, m.image)
        finished = m.store.finished_stages(num_stages)
        if done is not None and len(finished) != done:
            raise ValueError("a group's members must have the same stages saved")
        done = len(finished)
    reals = [pyramid.build(jnp.asarray(m.image), sizes) for m in members]
    runs = [m.store.load_run(upto=done) for m in members] if done else None
    g_list = [models.stack([r.g_vars[s] for r in runs]) for s in range(done)]
    amps = [[float(a) for a in r.noise_amps] for r in runs or []] or [
        [] for _ in members
    ]
    z_rec = models.stack([jnp.asarray(r.z_rec) for r in runs]) if runs else None
    prev_d = (
        models.stack([m.store.load_d_vars(done - 1) for m in members]) if done else None
    )
    paths = [os.path.join(m.workdir, "metrics.jsonl") for m in members]
    first = saved = done
    # Records of the stages trained again (a killed attempt's) would appear twice.
    for path in paths:
        drop_records(path, first)
    t_run = time.time()
    one = functools.partial(models.take, i=0)
    prev_g = g_list[-1] if g_list else None
    plan = plan_stages(
        stages,
        first,
        last,
        one(prev_g),
        one(prev_d),
        [one(g) for g in g_list],
        one(z_rec),
    )
    writers = [make_writer(m.workdir, settings.log) for m in members]
    plotters = [PlotPolicy(m.workdir) for m in members]
    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="compile")
    ahead = ts.compile_ahead
    interrupted = False
    try:
        futures = {}
        for s in range(first, last + 1):
            t0 = time.time()
            ts = settings.train.at_stage(s, sizes)  # this stage's iterations
            if s not in futures:  # the first stage, or train.compile_ahead=False:
                # compile now, the stage below's programs and JAX's caches
                # released first.
                progs = None
                if s > first:
                    forget_compiled()
                futures[s] = pool.submit(compile_stage, stages, s, plan[s], models)
            # Popped: a finished stage's programs are freed once the next begins.
            progs = futures.pop(s).result()
            wait_s = time.time() - t0
            if s > first and ahead:
                # The worker is idle: drop what the stages before kept in JAX's
                # caches (their eager ops' programs: -25% peak RSS, measured).
                forget_compiled()
            if s < last and ahead:  # the next stage compiles while this one trains
                futures[s + 1] = pool.submit(
                    compile_stage, stages, s + 1, plan[s + 1], models
                )
            prev_g = g_list[-1] if g_list else None
            key = models.repeat(stage_key(seed, s))
            state = models.each(progs.init, key, prev_g, prev_d)
            if z_rec is None:
                z_rec = models.stack(
                    [
                        family.stage0_rec(spec, seed, sizes, g, r[0])
                        for g, r in zip(
                            models.split(models.field(state, "g_vars")),
                            reals,
                            strict=True,
                        )
                    ]
                )
            real = models.stack([r[s] for r in reals])
            lower = models.stack(
                [tuple(models.take(g, i) for g in g_list) for i in range(models.count)]
            )
            lower_amps = models.stack(
                [jnp.asarray(a, jnp.float32).reshape(s) for a in amps]
            )
            rec_inputs, rmse = models.call(
                progs.prepare,
                models.field(state, "g_vars"),
                lower,
                lower_amps,
                z_rec,
                real,
            )
            new = [
                noise_amp(settings.loss, None if rmse is None else models.take(rmse, i))
                for i in range(models.count)
            ]
            data = models.stack(
                [
                    StageData(
                        real=reals[i][s],
                        amps=jnp.asarray([*amps[i], new[i]], jnp.float32),
                        rec_inputs=models.take(rec_inputs, i),
                        lower_vars=models.take(lower, i),
                        source=reals[i][0],
                    )
                    for i in range(models.count)
                ]
            )
            try:
                state, train_s = run_stage(
                    state,
                    data,
                    {n: models.runner(r) for n, r in progs.runners.items()},
                    ts,
                    s,
                    num_stages,
                    sizes[s],
                    paths[0],
                    progress,
                    writer=writers if models.batched else writers[0],
                    noise_amp=new if models.batched else new[0],
                    lambda_gp=settings.loss.lambda_gp,
                    names=[m.name for m in members] if models.batched else None,
                )
            except TrainingDiverged as e:
                raise TrainingDiverged(
                    diverged_advice(e, settings, lead.workdir, saved),
                    e.stage,
                    e.iteration,
                ) from None
            if progs.fns.rec_draw is not None:
                # 'redraw' (official SinGAN): the last iteration's map is z*; the
                # (lower, noise) inputs of the families that train with 'singan'.
                draw = functools.partial(progs.fns.rec_draw, i=ts.iters - 1)
                z_rec = models.call(draw, models.field(state, "key"))[1]
            g_list.append(models.field(state, "g_vars"))
            for a, n in zip(amps, new, strict=True):
                a.append(n)
            prev_d = models.field(state, "d_vars")
            for i, m in enumerate(members):
                try:
                    m.store.save_stage(
                        s,
                        models.take(state, i),
                        models.take(z_rec, i),
                        new[i],
                        sizes[s],
                    )
                except OSError as e:
                    raise UserError(
                        f"could not save stage {s} to {m.store.ckpt_dir} "
                        f"({e.strerror or e}); {checkpoint.saved_phrase(saved)} and "
                        "intact. Free space on that disk (or fix its permissions) and "
                        f"re-run the same command to resume at stage {s}"
                    ) from e
            saved = s + 1
            record = {
                "event": "stage_done",
                "stage": s,
                "size": list(sizes[s]),
                "compile_s": round(progs.compile_s, 3),
                **{
                    f"compile_{k}_s": round(v, 3)
                    for k, v in progs.compile_parts.items()
                },
                "compile_wait_s": round(wait_s, 3),
                "train_s": round(train_s, 3),
                "stage_s": round(time.time() - t0, 3),
                "iters_per_s": round(ts.iters / max(train_s, 1e-9), 3),
            }
            if models.batched:
                record["models"] = models.count
            resident = resident_mib()
            if resident is not None:
                record["rss_mib"], record["peak_rss_mib"] = map(round, resident)
            for i, (m, writer) in enumerate(zip(members, writers, strict=True)):
                writer.record({**record, "noise_amp": new[i]})
                if progs.sampler is not None:
                    g_i = [models.take(g, i) for g in g_list]
                    amps_now = jnp.asarray(amps[i], jnp.float32)
                    z_i = models.take(z_rec, i)
                    write_stage_images(
                        progs.sampler,
                        ts.stage_samples,
                        seed,
                        g_i,
                        amps[i],
                        m.workdir,
                        s,
                        reals[i][s],
                        writer=writer,
                        reconstruction=progs.reconstruct(tuple(g_i), amps_now, z_i),
                        step=ts.iters,
                    )
                writer.flush()
                if s < last:
                    plotters[i].draw()
        for m, writer in zip(members, writers, strict=True):
            m.store.close()
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
        for writer, plotter in zip(writers, plotters, strict=True):
            writer.close()
            if not interrupted and (last >= first or not os.path.exists(plotter.path)):
                plotter.draw(force=True)
    return bool(g_list)
