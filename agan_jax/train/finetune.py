"""Fine-tuning the last stage of a trained run on one naive image (ConSinGAN's
harmonization/editing recipe; families with `Family.can_finetune`)."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import time
from typing import Any

import jax
import jax.numpy as jnp

from agan_jax import checkpoint, image_io, plots, pyramid
from agan_jax import lock as run_lock
from agan_jax.errors import UserError
from agan_jax.models import families
from agan_jax.run import Run
from agan_jax.settings import Settings
from agan_jax.state import StageData
from agan_jax.train.loop import PlotPolicy, stage_key
from agan_jax.train.metrics import make_writer
from agan_jax.train.programs import Stages
from agan_jax.train.runner import StageLog, make_runner, run_stage

# fold_in constant: fine-tuning's key stream differs from training's.
FINE_TUNE_KEY = 30_000


def fine_tune(
    config,
    workdir: str,
    naive_image_path: str,
    iters: int = 500,
    out_workdir: str | None = None,
    progress: bool = True,
) -> Run:
    """Fine-tunes the LAST stage of a trained run on a naive image.

    The run in `workdir` is left untouched: its files are copied to `out_workdir`
    (default `<workdir>_finetuned`, which must not exist yet), where the checkpoint
    of the last stage is replaced by the fine-tuned one; stages 0..S-2 are the
    same bytes. The last stage trains again for `iters` iterations (fresh
    optimisers, the run's own noise amplitudes and train window) with the naive
    image, resized to the coarsest stage, as the head's input: augmented as in
    training for harmonization / editing runs, as is otherwise. run.json records
    the naive image and the iterations under 'fine_tune'.

    Args:
      config: training settings to use (lr, steps, ...); None = the run's own.
    Returns:
      The fine-tuned Run (loaded from `out_workdir`).
    """
    job = FineTune.read(config, workdir, naive_image_path, iters)
    out = os.path.abspath(out_workdir or workdir.rstrip("/") + "_finetuned")
    out_lock = run_lock.RunLock(out, "fine-tuning")
    _check_new_dir(out)
    out_lock.acquire()  # makes `out`; a concurrent fine-tuning into it stops here
    if set(os.listdir(out)) != {run_lock.LOCK_FILE}:  # made meanwhile by another
        out_lock.release()
        _check_new_dir(out)
    try:
        job.copy_run(out)
        return job.train_into(out, progress)
    except BaseException:
        # `out` holds nothing that is not in the trained run: leave no half copy.
        shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        out_lock.release()


@dataclasses.dataclass(frozen=True)
class FineTune:
    """A checked fine-tuning request: the trained run, the settings to train
    with, and the naive image at the finest and the coarsest stage size."""

    workdir: str
    meta: dict
    run: Run
    settings: Settings
    family: Any
    naive: jax.Array
    source: jax.Array
    naive_image_path: str
    iters: int

    @property
    def sizes(self) -> list[tuple[int, int]]:
        return [tuple(hw) for hw in self.run.sizes]

    @classmethod
    def read(cls, config, workdir: str, naive_image_path: str, iters: int):
        """Reads and checks the run and the naive image (UserError naming the
        fix): a trained ConSinGAN-like run, at least one iteration."""
        src = checkpoint.RunStore(workdir)
        run = src.load_run()
        src.close()
        meta, run_settings = dict(run.meta), run.settings
        family = families.of(run_settings.model)
        if not family.can_finetune:
            raise UserError(
                f"{workdir} holds a {family.kind} run; fine-tuning is for ConSinGAN "
                "runs (train one with --config=configs/consingan.py:harmonization)"
            )
        if run.num_stages < len(run.sizes):
            raise UserError(
                f"{workdir} has {run.num_stages} of {len(run.sizes)} stages trained; "
                "finish training first (re-run python -m launch.train with the same "
                "--workdir)"
            )
        if int(iters) < 1:
            raise UserError(f"fine-tuning needs at least 1 iteration, got {iters}")
        settings = run_settings
        if config is not None:
            settings = families.settings_from_config(config)
        train = dataclasses.replace(settings.train, iters=int(iters))
        settings = dataclasses.replace(settings, model=run_settings.model, train=train)
        sizes = [tuple(hw) for hw in run.sizes]
        path = image_io.resolve_path(naive_image_path)
        naive = jnp.asarray(image_io.load_image(path, flag="--naive"))
        naive = jnp.clip(pyramid.resize(naive, sizes[-1]), -1.0, 1.0)
        source = jnp.clip(pyramid.resize(naive, sizes[0]), -1.0, 1.0)
        return cls(
            src.workdir,
            meta,
            run,
            settings,
            family,
            naive,
            source,
            naive_image_path,
            int(iters),
        )

    def copy_run(self, out: str) -> None:
        """Copies the run into `out` (not its logs, samples or reports) without the
        last stage's checkpoint; run.json records the fine-tuning."""
        last = len(self.sizes) - 1
        ignore = shutil.ignore_patterns(
            "stages",
            "samples",
            "metrics.jsonl",
            "events.out.tfevents.*",
            os.path.dirname(plots.LOSSES_PNG),
            "report.html",
            run_lock.LOCK_FILE,
        )
        shutil.copytree(self.workdir, out, ignore=ignore, dirs_exist_ok=True)
        shutil.rmtree(os.path.join(out, "checkpoints", str(last)))
        meta = dict(self.meta)
        meta["fine_tune"] = {
            "from": self.run.workdir,
            "naive_image": str(self.naive_image_path),
            "iters": self.iters,
            "stage": last,
        }
        with open(os.path.join(out, "run.json"), "w") as f:
            json.dump(meta, f, indent=2)

    def stage_inputs(self):
        """(fns, state, data, z*) of the last stage, warm-started from its
        trained variables, with the naive image as the head's input."""
        settings, run, sizes = self.settings, self.run, self.sizes
        last = len(sizes) - 1
        old = checkpoint.RunStore(self.workdir)
        trained = old.load_stage(last)
        old.close()
        to_jnp = functools.partial(jax.tree.map, jnp.asarray)
        fns = Stages(self.family, settings, sizes).fns(last, finetune=True)
        key = jax.random.fold_in(stage_key(settings.seed, last), FINE_TUNE_KEY)
        g_vars, d_vars = to_jnp(trained["g_vars"]), to_jnp(trained["d_vars"])
        state = fns.init_state(key, g_vars, d_vars)
        real = pyramid.build(jnp.asarray(run.real), sizes)[last]
        amps = jnp.asarray(run.noise_amps, jnp.float32)
        z_rec = jnp.asarray(run.z_rec)
        lower = tuple(run.g_vars[:last])
        rec_inputs, _ = fns.prepare(state.g_vars, lower, amps[:last], z_rec, real)
        data = StageData(
            real=real,
            amps=amps,
            rec_inputs=rec_inputs,
            lower_vars=lower,
            source=self.source,
        )
        return fns, state, data, z_rec

    def train_into(self, out: str, progress: bool) -> Run:
        """Trains the last stage again and saves it into `out`."""
        settings, ts, sizes = self.settings, self.settings.train, self.sizes
        last = len(sizes) - 1
        t0 = time.time()
        fns, state, data, z_rec = self.stage_inputs()
        runners = make_runner(fns, ts, state, data)
        compile_s = time.time() - t0
        amp = float(self.run.noise_amps[last])
        writer = make_writer(out, settings.log)
        log = StageLog(
            last,
            len(sizes),
            sizes[last],
            [writer],
            [amp],
            lambda_gp=settings.loss.lambda_gp,
        )
        try:
            state, train_s = run_stage(state, data, runners, ts, log, progress)
            store = checkpoint.RunStore(out)
            store.save_stage(last, state, z_rec, amp, sizes[last])
            store.close()
            writer.record(
                {
                    "event": "fine_tune_done",
                    "stage": last,
                    "iters": self.iters,
                    "compile_s": round(compile_s, 3),
                    "train_s": round(train_s, 3),
                }
            )
        finally:
            writer.close()
            PlotPolicy(out).draw(force=True)
        return checkpoint.load_run(out)


def _check_new_dir(out: str) -> None:
    """UserError when `out` exists (naming the pid of a fine-tuning writing it)."""
    if not os.path.exists(out):
        return
    pid = run_lock.holder(out)
    if pid:
        raise UserError(
            f"{out} is being written by another fine-tuning (pid {pid}); wait for "
            "it, or pass another output directory (--out)"
        )
    raise UserError(
        f"{out} already exists; pass another output directory (--out) or delete it"
    )
