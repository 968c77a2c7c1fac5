"""How a stage's updates are compiled and run: the compile-unit policy, the
compiled runners, and the loop over a stage's iterations with its progress bar,
metrics and non-finite check.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from agan_jax.settings import COMPILE_UNITS, TrainSettings
from agan_jax.train.metrics import MetricWriter
from agan_jax.train.updates import StageFns


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite (`stage`, `iteration`: where). The stage loop
    adds which stages are saved and what to change; launchers exit with status 2."""

    def __init__(self, message: str, stage: int | None = None, iteration=None):
        super().__init__(message)
        self.stage, self.iteration = stage, iteration


def resolve_compile_unit(
    unit: str, stage: int | None = None, pixels: int | None = None, min_pixels: int = 0
) -> str:
    """'auto' -> 'update', 'iteration' or 'rolled' for one stage; other units as
    given.

    Accelerators: 'rolled' (the rolled iteration compiles in about half the
    time of the unrolled one at nearly the same speed). CPU: 'update' for stage
    0 (`stage` None counts as 0), whose compile is waited for, and for stages
    under `min_pixels` (`compiler.fuse_min_pixels` of the family); otherwise
    'iteration' (a fused iteration runs faster than one call per update but
    compiles longer, which competes with training for the cores). The
    measurements behind both: docs/performance.md, "GPU compile time" and
    "Compile unit".
    """
    if unit not in COMPILE_UNITS:
        raise ValueError(f"compile unit must be one of {COMPILE_UNITS}, got {unit!r}")
    if unit != "auto":
        return unit
    if jax.default_backend() != "cpu":
        return "rolled"
    if not stage or (pixels is not None and pixels < min_pixels):
        return "update"
    return "iteration"


def chunk_fn(iteration, k: int):
    """k iterations per call: the step itself (k == 1) or a lax.scan of k steps."""
    if k == 1:
        return iteration

    def run(state, data):
        return jax.lax.scan(lambda st, _: iteration(st, data), state, None, length=k)

    return run


def compile_chunk(iteration, k: int, state, data, options=None):
    """jit with donated state, compiled ahead of time for this stage's shapes."""
    return (
        jax.jit(chunk_fn(iteration, k), donate_argnums=(0,))
        .lower(state, data)
        .compile(compiler_options=options)
    )


def make_runner(
    fns: StageFns,
    ts: TrainSettings,
    state,
    data,
    stage: int | None = None,
    min_pixels: int = 0,
    options: dict | None = None,
    pool=None,
) -> dict:
    """Compiles this stage's step functions once: {iterations per call: runner}.

    compile_unit 'update': one compiled call per critic or generator update (two
    small programs, compiled in a fraction of the time of a whole iteration);
    'iteration': one call runs `steps_per_call` whole iterations ('rolled': the
    same with each kind of update in a lax.scan loop, see updates.py); 'auto': by
    backend and stage size (resolve_compile_unit). `options`: XLA compile options
    instead of the settings' own (benchmarks of other options). `state`: the
    abstract state, or a function of the iterations per call that gives it (a
    stage fed lower-stage samples holds as many as its calls' iterations take,
    train/lower.py). `pool`: an executor that compiles the unit's programs side
    by side (default: one after the other).
    """
    state_for = state if callable(state) else (lambda k: state)
    opts = ts.compiler_options if options is None else options
    h, w = data.real.shape[-3:-1]  # (models,) h, w, 3
    unit = resolve_compile_unit(ts.compile_unit, stage, h * w, min_pixels)
    compile_all = map if pool is None else pool.map
    if unit == "update":

        def compile_one(f):
            jitted = jax.jit(f, donate_argnums=(0,))
            return jitted.lower(state_for(1), data).compile(compiler_options=opts)

        d_fn, g_fn = compile_all(compile_one, (fns.d_step, fns.g_step))

        def run_update(state, data):
            for _ in range(ts.d_steps):
                state, md = d_fn(state, data)
            for _ in range(fns.g_calls):
                state, mg = g_fn(state, data)
            return state, {**md, **mg}

        return {1: run_update}
    step = fns.rolled if unit == "rolled" else fns.iteration
    k = max(1, min(ts.steps_per_call, ts.iters))
    ks = [k, 1] if ts.iters % k else [k]
    compiled = compile_all(
        lambda n: compile_chunk(step, n, state_for(n), data, opts), ks
    )
    runners = dict(zip(ks, compiled, strict=True))
    return runners


def learning_rates(ts: TrainSettings, iteration: int) -> dict[str, float]:
    """The learning rates of an iteration's last critic and generator updates.

    Computed on the host from the step schedule of `state.adam` as `updates.d_tx`
    and the families' `g_tx` set it up: x gamma from update
    `ts.decay_boundary(steps)` on, counting updates from 0; iteration i (from 1)
    ends with critic update i x d_steps - 1 and generator update i x g_steps - 1.
    ConSinGAN's lower blocks train at lr_g x lr_scale^k; `lr_g` is the newest
    block's.
    """

    def lr(base: float, steps: int) -> float:
        decayed = iteration * steps - 1 >= ts.decay_boundary(steps)
        return base * ts.gamma if decayed else base

    return {"lr_d": lr(ts.lr_d, ts.d_steps), "lr_g": lr(ts.lr_g, ts.g_steps)}


@dataclasses.dataclass(frozen=True)
class StageLog:
    """Where one stage's iterations are logged, one entry per model of the loop
    (a single run is a group of one).

    writers: each model's metric writer; noise_amps: each model's noise amplitude
    of this stage (logged beside its losses); names: the models' names (a
    non-finite loss names its model when there are several); lambda_gp: to log
    the critic's WGAN term `d_wgan` = d_loss - lambda_gp x gp; model_axis: the
    runners' metrics carry a last model axis (a group, train/group.py).
    """

    stage: int
    num_stages: int
    hw: tuple[int, int]
    writers: Sequence[MetricWriter]
    noise_amps: Sequence[float | None]
    names: Sequence[str] = ("",)
    lambda_gp: float | None = None
    model_axis: bool = False

    def model_values(self, metrics: dict, i: int) -> dict[str, float]:
        """Model i's values of the last iteration of fetched metrics."""
        out = {}
        for key, v in metrics.items():
            v = np.asarray(v)
            flat = v.reshape(-1, v.shape[-1])[:, i] if self.model_axis else v.ravel()
            out[key] = flat[-1].item()
        return out

    def check_finite(self, m: dict[str, float], i: int, iteration: int) -> None:
        """TrainingDiverged when a loss of model i is NaN or infinite."""
        if all(math.isfinite(v) for v in m.values()):
            return
        bad = ", ".join(f"{key}={v}" for key, v in m.items())
        who = f" of {self.names[i]}" if self.model_axis else ""
        raise TrainingDiverged(
            f"non-finite loss{who} at stage {self.stage}, iteration {iteration}: {bad}",
            self.stage,
            iteration,
        )

    def write(self, ts: TrainSettings, pending: list, s_per_iter: float, bar) -> None:
        """Writes fetched log points [(iteration, metrics)] of every model."""
        for it, metrics in pending:
            for i, (w, amp) in enumerate(
                zip(self.writers, self.noise_amps, strict=True)
            ):
                m = self.model_values(metrics, i)
                self.check_finite(m, i, it)
                if self.lambda_gp is not None and "d_loss" in m and "gp" in m:
                    m["d_wgan"] = m["d_loss"] - self.lambda_gp * m["gp"]
                extra = {} if amp is None else {"noise_amp": amp}
                extra["s_per_iter"] = round(s_per_iter, 6)
                w.scalars(self.stage, it, {**m, **learning_rates(ts, it), **extra})
                if i == 0:
                    bar.set_postfix(
                        d=f"{m['d_loss']:.3f}", rec=f"{m['rec']:.4f}", refresh=False
                    )


def run_stage(
    state, data, runners: dict, ts: TrainSettings, log: StageLog, progress: bool = True
) -> tuple[Any, float]:
    """Runs one stage's iterations with compiled runners; returns (state, seconds).

    Metrics stay on the device until a log point (every `log_every` iterations,
    fetched four log points at a time): no host sync per step. Each log point
    writes, per model, the losses, `d_wgan`, the learning rates, the noise
    amplitude and `s_per_iter`, the wall seconds per iteration between two
    fetches (StageLog.write); a non-finite loss raises TrainingDiverged.
    """
    k = max(runners)
    group = f" x{len(log.names)}" if log.model_axis else ""
    bar = tqdm(
        total=ts.iters,
        desc=f"stage {log.stage}/{log.num_stages - 1} {log.hw[0]}x{log.hw[1]}{group}",
        disable=not progress,
        leave=True,
    )
    pending: list[tuple[int, Any]] = []
    done, t1 = 0, time.time()
    fetched = [0, t1]  # iterations done and wall time at the last fetch
    while done < ts.iters:
        n = k if ts.iters - done >= k else 1
        state, metrics = runners[n](state, data)
        done += n
        bar.update(n)
        if done % ts.log_every < n or done == ts.iters:
            pending.append((done, metrics))
        if len(pending) >= 4 or done == ts.iters:
            values, now = jax.device_get(pending), time.time()
            s_per_iter = (now - fetched[1]) / max(1, pending[-1][0] - fetched[0])
            fetched[:] = [pending[-1][0], now]
            log.write(ts, values, s_per_iter, bar)
            pending.clear()
    jax.block_until_ready(state)
    bar.close()
    return state, time.time() - t1
