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

import jax
import jax.numpy as jnp
import numpy as np

from agan_jax import checkpoint, image_io, plots, pyramid
from agan_jax import lock as run_lock
from agan_jax.compiler import compile_workers
from agan_jax.errors import UserError
from agan_jax.memory import forget_compiled, resident_mib
from agan_jax.models import families
from agan_jax.run import Run
from agan_jax.settings import DataSettings, Settings, config_to_dict
from agan_jax.state import StageData
from agan_jax.train.group import Models
from agan_jax.train.log import (
    drop_records,
    write_stage_images,
)
from agan_jax.train.lower import LowerStages
from agan_jax.train.metrics import make_writer
from agan_jax.train.programs import (
    StagePrograms,
    Stages,
    compile_stage,
    plan_stages,
)
from agan_jax.train.runner import StageLog, TrainingDiverged, run_stage
from agan_jax.train.updates import resolve_rule


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


class PlotPolicy:
    """When training redraws plots/losses.png: after a stage once at least 20 times
    the last drawing's seconds have passed since it (at most ~5% of the wall time;
    a draw takes 1-2 s on the 2-core CPU), and at the end of a run that trained.
    A failed draw warns and training goes on."""

    def __init__(self, workdir: str, ratio: float = 20.0, first_cost: float = 1.5):
        self.workdir, self.ratio = workdir, ratio
        self.path = os.path.join(workdir, plots.LOSSES_PNG)
        self.last, self.cost = time.time(), first_cost

    def draw(self, force: bool = False, quiet: bool = False) -> None:
        """Redraws the plot when due (`force`: now); `quiet`: a failure is not
        reported (an error already on its way to the user says what went wrong)."""
        t0 = time.time()
        if not force and t0 - self.last < self.ratio * self.cost:
            return
        try:
            plots.write_losses([self.workdir])
        except UserError:
            pass  # nothing logged yet
        except Exception as e:  # noqa: BLE001 - a plot never stops training
            if not quiet:
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
    keys = ", ".join(sorted(checkpoint.RESUMABLE_KEYS))
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


class StageLoop:
    """The state of one stage loop over a group of members (a single run is a
    group of one): the trained part of their pyramids, held over the model axis
    (`models`, group.Models), their writers and plots, and the compile worker.
    Each method is one step of `train_members`."""

    def __init__(self, members: list[Member], last: int, models: Models):
        self.members, self.last, self.models = members, last, models
        lead = members[0]
        self.settings, self.sizes = lead.settings, lead.sizes
        self.family = families.of(lead.settings.model)
        self.stages = Stages(self.family, self.settings, self.sizes)
        self.first = self.saved = self.resume()
        self.reals = [pyramid.build(jnp.asarray(m.image), self.sizes) for m in members]
        self.writers = [make_writer(m.workdir, self.settings.log) for m in members]
        self.plotters = [PlotPolicy(m.workdir) for m in members]
        self.lower = LowerStages(
            self.settings.model,
            self.sizes,
            models,
            self.settings.train.compiler_options,
        )
        ts = self.settings.train
        stages = last - self.first + 1
        self.workers = (
            compile_workers(ts.compile_workers, stages) if ts.compile_ahead else 1
        )
        self.pool = concurrent.futures.ThreadPoolExecutor(
            self.workers, thread_name_prefix="compile"
        )
        self.futures: dict[int, concurrent.futures.Future] = {}
        self.t_run = time.time()

    def resume(self) -> int:
        """Loads the members' saved stages (the same count for all); returns it.
        Drops metrics.jsonl records of the stages to train again."""
        models, num_stages = self.models, len(self.sizes)
        counts = set()
        for m in self.members:
            m.store.check_or_write_metadata(m.meta, m.image)
            counts.add(len(m.store.finished_stages(num_stages)))
        if len(counts) != 1:
            raise ValueError("a group's members must have the same stages saved")
        (done,) = counts
        for m in self.members:  # a killed attempt's records would appear twice
            drop_records(os.path.join(m.workdir, "metrics.jsonl"), done)
        runs = [m.store.load_run(upto=done) for m in self.members] if done else []
        self.g_list = [models.stack([r.g_vars[s] for r in runs]) for s in range(done)]
        self.amps = [[float(a) for a in r.noise_amps] for r in runs] or [
            [] for _ in self.members
        ]
        self.z_rec = (
            models.stack([jnp.asarray(r.z_rec) for r in runs]) if runs else None
        )
        d = [m.store.load_d_vars(done - 1) for m in self.members] if done else None
        self.prev_d = models.stack(d) if d else None
        return done

    def stage_train(self, s: int):
        """Stage s's training settings (its own iterations with
        `train.iters_by_step`)."""
        return self.settings.train.at_stage(s, self.sizes)

    def plan(self) -> None:
        """Abstract shapes of every stage to train (programs.plan_stages)."""
        one = functools.partial(self.models.take, i=0)
        self.planned = plan_stages(
            self.stages,
            self.first,
            self.last,
            one(self.g_list[-1] if self.g_list else None),
            one(self.prev_d),
            [one(g) for g in self.g_list],
            one(self.z_rec),
        )
        if self.workers > 1:  # every stage compiles from the start
            for s in range(self.first, self.last + 1):
                self.submit(s)

    def submit(self, s: int) -> None:
        """Compiles stage s in the worker pool; the first stage, which nothing
        trains beside, with its programs side by side on every core."""
        threads = (os.cpu_count() or 1) if s == self.first else 1
        self.futures[s] = self.pool.submit(
            compile_stage,
            self.stages,
            s,
            self.planned[s],
            self.models,
            self.lower,
            threads,
        )

    def programs(self, s: int) -> tuple[StagePrograms, float]:
        """Stage s's compiled programs and the seconds waited for them; with
        `train.compile_ahead` stage s+1 then compiles while s trains (with
        several `train.compile_workers`, every stage compiles from the start)."""
        t0, ahead = time.time(), self.settings.train.compile_ahead
        if s not in self.futures:  # the first stage, or compile_ahead=False:
            # compile now, the stage below's programs and JAX's caches released.
            if s > self.first:
                forget_compiled()
            self.submit(s)
        # Popped: a finished stage's programs are freed once the next begins.
        progs = self.futures.pop(s).result()
        wait_s = time.time() - t0
        if s > self.first and ahead and not self.futures:
            # The worker is idle: drop what the stages before kept in JAX's
            # caches (their eager ops' programs; docs/performance.md, "Memory").
            forget_compiled()
        if s < self.last and ahead and s + 1 not in self.futures:
            self.submit(s + 1)
        return progs, wait_s

    def stage_inputs(self, s: int, progs: StagePrograms):
        """(state, data, noise amplitudes) of stage s: init or warm start, z*
        at stage 0, the reconstruction input and each member's noise amplitude."""
        models, spec, seed = self.models, self.settings.model, self.settings.seed
        prev_g = self.g_list[-1] if self.g_list else None
        key = models.repeat(stage_key(seed, s))
        state = models.each(progs.init, key, prev_g, self.prev_d)
        g_vars = models.field(state, "g_vars")
        if self.z_rec is None:
            stage0 = functools.partial(self.family.stage0_rec, spec, seed, self.sizes)
            z = [
                stage0(g, r[0])
                for g, r in zip(models.split(g_vars), self.reals, strict=True)
            ]
            self.z_rec = models.stack(z)
        lower = models.map(lambda i: tuple(models.take(g, i) for g in self.g_list))
        lower_amps = models.map(
            lambda i: jnp.asarray(self.amps[i], jnp.float32).reshape(s)
        )
        real = models.map(lambda i: self.reals[i][s])
        rec_inputs, rmse = models.call(
            progs.prepare, g_vars, lower, lower_amps, self.z_rec, real
        )
        new = [
            noise_amp(
                self.settings.loss, None if rmse is None else models.take(rmse, i)
            )
            for i in range(models.count)
        ]
        data = models.map(
            lambda i: StageData(
                real=self.reals[i][s],
                amps=jnp.asarray([*self.amps[i], new[i]], jnp.float32),
                rec_inputs=models.take(rec_inputs, i),
                lower_vars=models.take(lower, i),
                source=self.reals[i][0],
            )
        )
        return state, data, new

    def train(self, s: int, progs: StagePrograms, state, data, amps, progress: bool):
        """Runs stage s's iterations; returns (state, seconds)."""
        models, ts = self.models, self.stage_train(s)
        log = StageLog(
            stage=s,
            num_stages=len(self.sizes),
            hw=self.sizes[s],
            writers=self.writers,
            noise_amps=amps,
            names=[m.name for m in self.members],
            lambda_gp=self.settings.loss.lambda_gp,
            model_axis=models.batched,
        )
        runners = {
            n: self.fed(s, progs, n, models.runner(r)) for n, r in progs.runners.items()
        }
        try:
            return run_stage(state, data, runners, ts, log, progress)
        except TrainingDiverged as e:
            advice = diverged_advice(e, self.settings, self.members[0].workdir, s)
            raise TrainingDiverged(advice, e.stage, e.iteration) from None

    def fed(self, s: int, progs: StagePrograms, k: int, run):
        """The runner `run` of k iterations per call, given before each call
        the lower-stage samples its updates take (train/lower.py); `run`
        itself when the stage's updates draw none."""
        slots, models = progs.fns.lower_slots, self.models
        if not slots:
            return run
        per_iter = self.stage_train(s).per_iter
        amps = [
            models.map(lambda i, j=j: jnp.float32(self.amps[i][j])) for j in range(s)
        ]

        def fed_run(state, data):
            x = self.lower.draw(state, k, slots, per_iter, self.g_list, amps)
            return run(models.replace(state, lower=x), data)

        return fed_run

    def save(self, s: int, progs: StagePrograms, state, amps: list[float]) -> None:
        """Adds stage s to the pyramid and saves it in every member's directory."""
        models = self.models
        if progs.fns.rec_draw is not None:
            # 'redraw' (official SinGAN): the last iteration's map is z*; the
            # (lower, noise) inputs of the families that train with 'singan'.
            draw = functools.partial(
                progs.fns.rec_draw, i=self.stage_train(s).iters - 1
            )
            self.z_rec = models.call(draw, models.field(state, "key"))[1]
        self.g_list.append(models.field(state, "g_vars"))
        for a, n in zip(self.amps, amps, strict=True):
            a.append(n)
        self.prev_d = models.field(state, "d_vars")
        for i, m in enumerate(self.members):
            one = models.take(state, i)
            try:
                m.store.save_stage(
                    s, one, models.take(self.z_rec, i), amps[i], self.sizes[s]
                )
            except OSError as e:
                raise UserError(
                    f"could not save stage {s} to {m.store.ckpt_dir} "
                    f"({e.strerror or e}); {checkpoint.saved_phrase(self.saved)} "
                    "and intact. Free space on that disk (or fix its permissions) "
                    f"and re-run the same command to resume at stage {s}"
                ) from e
        self.saved = s + 1

    def log(self, s: int, progs: StagePrograms, amps, seconds: dict) -> None:
        """Stage s's stage_done record, sample grids and loss plots per member.
        `seconds`: 'start' (wall time the stage began), 'wait', 'train'."""
        ts, models = self.stage_train(s), self.models
        record = stage_record(s, self.sizes[s], progs, ts.iters, seconds)
        if models.batched:
            record["models"] = models.count
        for i, (m, writer) in enumerate(zip(self.members, self.writers, strict=True)):
            writer.record({**record, "noise_amp": amps[i]})
            if progs.sampler is not None:
                g_i = [models.take(g, i) for g in self.g_list]
                z_i = models.take(self.z_rec, i)
                amps_i = jnp.asarray(self.amps[i], jnp.float32)
                write_stage_images(
                    progs.sampler,
                    ts.stage_samples,
                    self.settings.seed,
                    g_i,
                    self.amps[i],
                    m.workdir,
                    s,
                    self.reals[i][s],
                    writer=writer,
                    reconstruction=progs.reconstruct(tuple(g_i), amps_i, z_i),
                    step=ts.iters,
                )
            writer.flush()
            if s < self.last:
                self.plotters[i].draw()

    def finish(self) -> None:
        """Closes the members' stores; a run_done record when a stage trained."""
        for m, writer in zip(self.members, self.writers, strict=True):
            m.store.close()
            if self.last >= self.first:
                seconds = round(time.time() - self.t_run, 3)
                stages = len(self.g_list)
                writer.record(
                    {"event": "run_done", "stages": stages, "seconds": seconds}
                )

    def close(self, interrupted: bool, failed: bool) -> None:
        """Stops the compile worker, closes the writers and draws the plots
        (quietly when training `failed`: a full disk's one line stays the last)."""
        self.pool.shutdown(wait=False, cancel_futures=True)
        for writer, plotter in zip(self.writers, self.plotters, strict=True):
            writer.close()
            if not interrupted and (
                self.last >= self.first or not os.path.exists(plotter.path)
            ):
                plotter.draw(force=True, quiet=failed)


def stage_record(s: int, size, progs: StagePrograms, iters: int, seconds: dict) -> dict:
    """The stage_done record of metrics.jsonl: sizes, compile and train seconds,
    iterations per second and the process's memory."""
    record = {
        "event": "stage_done",
        "stage": s,
        "size": list(size),
        "compile_s": round(progs.compile_s, 3),
        **{f"compile_{k}_s": round(v, 3) for k, v in progs.compile_parts.items()},
        "compile_wait_s": round(seconds["wait"], 3),
        "train_s": round(seconds["train"], 3),
        "stage_s": round(time.time() - seconds["start"], 3),
        "iters_per_s": round(iters / max(seconds["train"], 1e-9), 3),
    }
    resident = resident_mib()
    if resident is not None:
        record["rss_mib"], record["peak_rss_mib"] = map(round, resident)
    return record


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
    loop = StageLoop(members, last, models or Models())
    interrupted = failed = False
    try:
        loop.plan()
        for s in range(loop.first, last + 1):
            t0 = time.time()
            progs, wait_s = loop.programs(s)
            state, data, amps = loop.stage_inputs(s, progs)
            state, train_s = loop.train(s, progs, state, data, amps, progress)
            loop.save(s, progs, state, amps)
            loop.log(s, progs, amps, {"start": t0, "wait": wait_s, "train": train_s})
        loop.finish()
    except KeyboardInterrupt:
        interrupted = True
        raise TrainingInterrupted(
            f"interrupted: {checkpoint.saved_phrase(loop.saved)}; re-run the same "
            "command to resume"
        ) from None
    except BaseException:
        failed = True
        raise
    finally:
        loop.close(interrupted, failed)
    return bool(loop.g_list)
