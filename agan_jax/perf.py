"""Microbenchmarks behind issue 6: one training iteration, the gradient penalty,
compile times, XLA flags; and the whole-process CPU targets.

Every `*_s` function builds what it measures from scratch, runs it and returns
seconds (per iteration, per call or per compile). Steps are timed as the median
of `calls` calls after one warm-up call, each call waited for, so one slow call
on a loaded machine does not move the figure much. `interleave` runs variants
in turns for comparisons on a shared machine. `format_micro` and
`format_targets` print the tables with the issue's figures and targets beside
the measured ones.

XLA_FLAGS is read once, when jax starts its CPU backend, so a variant with other
flags runs in a child process (`python -m agan_jax.perf child JSON`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from agan_jax import compiler, losses, train
from agan_jax.models import ModelSpec, make_discriminator
from agan_jax.state import StageData

Size = tuple[int, int]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
XNNPACK = "--xla_cpu_use_xnnpack=true"
# jax_disable_most_optimizations, as per-compile options (see jax._src.compiler).
FEW_OPTIMIZATIONS = {
    "xla_backend_optimization_level": 0,
    "xla_llvm_disable_expensive_passes": True,
}
# LLVM O1 for XLA's generated CPU kernels (the default is O2; convolutions call
# Eigen either way): 15-30% less compile time, same iteration time (levers suite).
BACKEND_O1 = compiler.options(compiler.CPU_BACKEND_OPT_LEVEL)


# ----------------------------------------------------------------------------
# One stage set up as in training.


@dataclasses.dataclass
class StepSetup:
    """One SinGAN stage at `sizes[stage]` with frozen, initialised stages below."""

    spec: ModelSpec
    sizes: list[Size]
    stage: int
    ts: train.TrainSettings
    fns: train.StageFns
    state: Any  # StageState (donated by the runners: use `fresh_state`)
    data: StageData

    def fresh_state(self) -> Any:
        """A copy of the initial state (the runners donate their input)."""
        return jax.tree.map(jnp.copy, self.state)


def pyramid_sizes(hw: Size, lower: int, r: float = 0.75) -> list[Size]:
    """`lower` coarser sizes (ratio r per stage) followed by hw."""
    h, w = hw
    return [
        (max(8, round(h * r ** (lower - i))), max(8, round(w * r ** (lower - i))))
        for i in range(lower)
    ] + [(h, w)]


def step_setup(
    hw: Size = (49, 64),
    width: int = 64,
    lower: int = 1,
    *,
    seed: int = 0,
    num_layers: int = 5,
    **settings: Any,
) -> StepSetup:
    """A SinGAN stage of `width` channels at hw above `lower` frozen stages.

    Every stage has `width` channels and `num_layers` convolutions (SinGAN: 5);
    `settings` override `train.TrainSettings` (gp_mode, compile_unit,
    steps_per_call, d_steps, ...).
    """
    spec = ModelSpec(kind="singan", nfc=width, max_nfc=width, num_layers=num_layers)
    sizes = pyramid_sizes(hw, lower)
    ts = train.TrainSettings(**{"iters": 2000, **settings})
    key = jax.random.key(seed)
    lower_vars = []
    for s in range(lower):
        fns_s = train.make_stage_fns(spec, sizes, s, ts)
        lower_vars.append(fns_s.init_state(jax.random.fold_in(key, s)).g_vars)
    fns = train.make_stage_fns(spec, sizes, lower, ts)
    state = fns.init_state(jax.random.fold_in(key, lower))
    rng = np.random.default_rng(seed)
    img = jnp.asarray(rng.uniform(-1, 1, (*hw, 3)).astype(np.float32))
    data = StageData(
        real=img,
        rec_prev=jnp.zeros_like(img) if lower == 0 else img * 0.9,
        z_rec=jnp.asarray(rng.normal(size=(*hw, 3)).astype(np.float32)),
        noise_amp=jnp.float32(1.0 if lower == 0 else 0.1),
        lower_vars=tuple(lower_vars),
        lower_amps=jnp.full((lower,), 0.1, jnp.float32),
    )
    return StepSetup(spec, sizes, lower, ts, fns, state, data)


def build_runner(
    setup: StepSetup, compiler_options: dict | None = None
) -> tuple[Callable, int, float]:
    """(run, iterations per call, compile seconds) for the setup's compile unit.

    The training code path (`train.make_runner`); `compiler_options` are compiled
    in over the settings' own.
    """
    ts = setup.ts
    t0 = time.perf_counter()
    # The variant's options over the settings' own (LLVM O1 on CPU unless
    # xla_opt_level says otherwise, see agan_jax.compiler).
    options = {**(ts.compiler_options or {}), **(compiler_options or {})} or None
    runners = train.make_runner(
        setup.fns, ts, setup.state, setup.data, setup.stage, options=options
    )
    k = max(runners)
    return runners[k], k, time.perf_counter() - t0


def time_calls(
    run: Callable, state: Any, data: Any, calls: int, per_call: int = 1
) -> tuple[float, Any]:
    """Median seconds per iteration over `calls` waited-for calls, after a warm-up.

    Returns (seconds, final state); `run` may donate `state`.
    """
    state, _ = run(state, data)
    jax.block_until_ready(state)
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        state, m = run(state, data)
        jax.block_until_ready((state, m))
        times.append((time.perf_counter() - t0) / per_call)
    return statistics.median(times), state


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
    **settings: Any,
) -> IterTiming:
    """Compiles and times one stage's iteration (d_steps + g_steps updates).

    `settings` override further `train.TrainSettings` fields (d_steps, g_steps).
    """
    setup = step_setup(
        hw,
        width,
        lower,
        compile_unit=compile_unit,
        steps_per_call=steps_per_call,
        gp_mode=gp_mode,
        **settings,
    )
    run, k, compile_s = build_runner(setup, compiler_options)
    iter_s, _ = time_calls(run, setup.state, setup.data, calls, per_call=k)
    return IterTiming(compile_s, iter_s)


# ----------------------------------------------------------------------------
# The measured facts of issue 6, one function each.


def iteration_jit_s(
    hw: Size = (49, 64), width: int = 64, calls: int = 3, **kw
) -> float:
    """One iteration jitted alone (compile_unit 'iteration', steps_per_call 1)."""
    return measure_iteration(
        hw, width, compile_unit="iteration", calls=calls, **kw
    ).iter_s


def iteration_scan_s(
    hw: Size = (49, 64), width: int = 64, k: int = 2, calls: int = 1, **kw
) -> float:
    """Per iteration, inside a lax.scan of k iterations (steps_per_call = k)."""
    return measure_iteration(
        hw, width, compile_unit="iteration", steps_per_call=k, calls=calls, **kw
    ).iter_s


def iteration_update_s(
    hw: Size = (49, 64), width: int = 64, calls: int = 3, **kw
) -> float:
    """One iteration as 6 compiled update calls (compile_unit 'update', CPU default)."""
    return measure_iteration(hw, width, compile_unit="update", calls=calls, **kw).iter_s


def _critic_and_input(hw: Size, width: int, num_layers: int = 5, seed: int = 0):
    spec = ModelSpec(kind="singan", nfc=width, max_nfc=width, num_layers=num_layers)
    d_mod = make_discriminator(spec, 0)
    x = jax.random.uniform(jax.random.key(seed), (*hw, 3), minval=-1.0, maxval=1.0)
    d_vars = d_mod.init(jax.random.key(seed + 1), x[None], train=False)

    def critic_of(params):
        def critic(y):
            out, _ = d_mod.apply(
                {**d_vars, "params": params},
                y[None],
                train=True,
                mutable=["batch_stats"],
            )
            return out[0]

        return critic

    return d_vars["params"], critic_of, x


def gp_param_grad_fn(
    mode: str, hw: Size = (49, 64), width: int = 64, num_layers: int = 5
):
    """(jitted params -> parameter gradient of the penalty, params, x) for one mode.

    'double_grad': grad of `losses.gradient_penalty` (a gradient of a gradient);
    'jvp': grad of `losses.penalty_surrogate` (same gradient, cheaper).
    """
    params, critic_of, x = _critic_and_input(hw, width, num_layers)

    def objective(p, x):
        if mode == "jvp":
            return losses.penalty_surrogate(critic_of(p), x)[0]
        if mode == "double_grad":
            return losses.gradient_penalty(critic_of(p), x)
        raise ValueError(f"gp mode must be 'jvp' or 'double_grad', got {mode!r}")

    return jax.jit(jax.grad(objective)), params, x


def gp_grad_s(
    mode: str,
    hw: Size = (49, 64),
    width: int = 64,
    calls: int = 5,
    num_layers: int = 5,
) -> float:
    """Seconds per call of the gradient penalty's parameter gradient."""
    fn, params, x = gp_param_grad_fn(mode, hw, width, num_layers)
    jax.block_until_ready(fn(params, x))
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(params, x))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def d_update_s(
    mode: str, hw: Size = (49, 64), width: int = 64, calls: int = 3
) -> float:
    """Seconds per critic update (fresh fake, WGAN loss, penalty, Adam) in one mode."""
    setup = step_setup(hw, width, 1, gp_mode=mode)
    fn = (
        jax.jit(setup.fns.d_step, donate_argnums=(0,))
        .lower(setup.state, setup.data)
        .compile()
    )
    return time_calls(fn, setup.state, setup.data, calls)[0]


@contextlib.contextmanager
def no_persistent_cache() -> Iterator[None]:
    """Compiles inside really compile: the persistent XLA cache is off meanwhile."""
    from jax.experimental.compilation_cache import compilation_cache as cc

    old = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    cc.reset_cache()
    try:
        yield
    finally:
        jax.config.update("jax_enable_compilation_cache", old)
        cc.reset_cache()


def stage_compile_s(
    hw: Size = (49, 64),
    width: int = 64,
    lower: int = 1,
    compile_unit: str = "update",
    num_layers: int = 5,
    **settings: Any,
) -> float:
    """Seconds to compile one stage's programs (init, runner, reconstruction input),
    from abstract shapes as `train.train` does, with the persistent cache off."""
    spec = ModelSpec(kind="singan", nfc=width, max_nfc=width, num_layers=num_layers)
    sizes = pyramid_sizes(hw, lower)
    ts = train.TrainSettings(
        **{"compile_unit": compile_unit, "steps_per_call": 1, **settings}
    )
    with no_persistent_cache():
        plan = train.plan_stages(spec, sizes, ts, 0, lower, None, None, [])
        t0 = time.perf_counter()
        train.compile_stage(spec, sizes, ts, lower, plan[lower])
        return time.perf_counter() - t0


# ----------------------------------------------------------------------------
# Child processes (other XLA_FLAGS) and interleaved comparisons.


def child_env(xla_flags: str = "") -> dict[str, str]:
    """The environment of a child run: given XLA_FLAGS, no persistent cache."""
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env["XLA_FLAGS"] = " ".join(f for f in (env.get("XLA_FLAGS", ""), xla_flags) if f)
    env["AGAN_JAX_CACHE"] = "off"
    env["PYTHONWARNINGS"] = "ignore"
    return env


def iteration_in_child(xla_flags: str = "", timeout: float = 1800, **kw) -> IterTiming:
    """`measure_iteration(**kw)` in a fresh process started with these XLA_FLAGS."""
    kw = {k: list(v) if isinstance(v, tuple) else v for k, v in kw.items()}
    p = subprocess.run(
        [sys.executable, "-m", "agan_jax.perf", "child", json.dumps(kw)],
        cwd=ROOT,
        env=child_env(xla_flags),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    for line in p.stdout.splitlines():
        if line.startswith("PERF_RESULT "):
            return IterTiming(**json.loads(line[len("PERF_RESULT ") :]))
    raise RuntimeError(f"child run failed (rc {p.returncode}): {p.stderr[-2000:]}")


def interleave(
    variants: dict[str, Callable[[], float]], rounds: int = 3
) -> dict[str, list[float]]:
    """Runs every variant once per round, in turns; returns the seconds of each.

    On a machine shared with other jobs the load drifts; taking turns exposes
    every variant to the same drift, so ratios of medians stay meaningful.
    """
    out: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(rounds):
        names = list(variants) if r % 2 == 0 else list(reversed(variants))
        for name in names:
            out[name].append(variants[name]())
    return out


def interleaved_runners(
    setups: dict[str, tuple[Callable, int, Any, Any]], rounds: int = 6, calls: int = 1
) -> dict[str, float]:
    """Median seconds per iteration of compiled runners timed in turns.

    setups: name -> (run, iterations per call, state, data). After one warm-up
    call each, every round times `calls` calls of each runner (order reversed
    every other round). States carry over (the runners donate them).
    """
    states = {}
    for name, (run, _, state, data) in setups.items():
        states[name], _ = run(state, data)
        jax.block_until_ready(states[name])
    times: dict[str, list[float]] = {name: [] for name in setups}
    for r in range(rounds):
        names = list(setups) if r % 2 == 0 else list(reversed(setups))
        for name in names:
            run, k, _, data = setups[name]
            for _ in range(calls):
                t0 = time.perf_counter()
                states[name], m = run(states[name], data)
                jax.block_until_ready((states[name], m))
                times[name].append((time.perf_counter() - t0) / k)
    return {name: statistics.median(v) for name, v in times.items()}


def max_param_diff(a: Any, b: Any) -> float:
    """Largest absolute difference between two states' G and D parameters."""
    pa = (a.g_vars["params"], a.d_vars["params"])
    pb = (b.g_vars["params"], b.d_vars["params"])
    return float(
        max(
            jnp.max(jnp.abs(x - y))
            for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb), strict=True)
        )
    )


def runner_agreement(
    hw: Size,
    width: int,
    variant: dict,
    iters: int = 3,
    lower: int = 1,
    compiler_options: dict | None = None,
    common: dict | None = None,
) -> float:
    """Max parameter difference after `iters` iterations: the plain runner (unit
    update, XLA's default O2) against the runner with `variant` settings and
    `compiler_options`; `common` settings (d_steps, num_layers, ...) go to both.

    Adam's epsilon is 1 here (as in tests/test_train.py) so that the comparison
    measures the programs, not Adam's sign-like first steps amplifying rounding.
    """
    common = {"adam_eps": 1.0, **(common or {})}
    plain = {"compile_unit": "update", "xla_opt_level": 2}
    base = step_setup(hw, width, lower, **{**common, **plain})
    other = step_setup(hw, width, lower, **{**common, **variant})
    out = []
    for setup, opts in ((base, None), (other, compiler_options)):
        run, k, _ = build_runner(setup, opts)
        state = setup.fresh_state()
        for _ in range(max(1, iters // k)):
            state, _ = run(state, setup.data)
        out.append(state)
    return max_param_diff(*out)


# ----------------------------------------------------------------------------
# The table of measured facts.


@dataclasses.dataclass(frozen=True)
class Figure:
    """One measured fact of issue 6 and what it is compared with."""

    key: str
    what: str
    unit: str  # "s" or "ms"
    issue: str  # the issue's jax 0.10.2 figure, "" if none
    pytorch: float | None  # PyTorch reference in `unit`, None if none
    target: float | None  # measured must be <= target (in `unit`); None: no bound
    target_text: str  # the target as words


FIGURES: tuple[Figure, ...] = (
    Figure(
        "iter_jit_49x64",
        "iteration 49x64, 64 ch, jitted alone (unit iteration, steps_per_call 1)",
        "s",
        "0.89 (grad-of-grad GP), 0.50 (jvp GP)",
        0.61,
        0.61,
        "<= PyTorch 0.61",
    ),
    Figure(
        "iter_scan_49x64",
        "iteration 49x64, 64 ch, inside lax.scan (steps_per_call k), per iteration",
        "s",
        "7.7",
        0.61,
        None,
        "not used on CPU (steps_per_call 1)",
    ),
    Figure(
        "iter_update_49x64",
        "iteration 49x64, 64 ch, unit update (CPU default: 6 compiled calls)",
        "s",
        "",
        0.61,
        0.61,
        "<= PyTorch 0.61 (aim 0.43)",
    ),
    Figure(
        "gp_double_grad_49x64",
        "GP parameter gradient, grad-of-grad, critic 49x64, 64 ch",
        "ms",
        "183",
        47.0,
        None,
        "reference only",
    ),
    Figure(
        "gp_jvp_49x64",
        "GP parameter gradient, grad of jvp along v = dGP/dg",
        "ms",
        "56",
        47.0,
        None,
        "<= grad-of-grad",
    ),
    Figure(
        "d_update_double_grad_49x64",
        "critic update 49x64 (fake, WGAN, GP, Adam), gp_mode double_grad",
        "ms",
        "",
        None,
        None,
        "reference only",
    ),
    Figure(
        "d_update_jvp_49x64",
        "critic update 49x64, gp_mode jvp (default)",
        "ms",
        "",
        None,
        None,
        "<= double_grad",
    ),
    Figure(
        "iter_97x128",
        "iteration 97x128, 64 ch, jitted alone, default XLA flags",
        "s",
        "3.24",
        2.08,
        2.08,
        "<= PyTorch 2.08",
    ),
    Figure(
        "iter_97x128_xnnpack",
        f"iteration 97x128, 64 ch, jitted alone, XLA_FLAGS={XNNPACK}",
        "s",
        "2.24",
        2.08,
        2.08,
        "<= PyTorch 2.08",
    ),
    Figure(
        "compile_iteration_49x64",
        "compile one stage's programs 49x64, unit iteration (init, step, rec input)",
        "s",
        "11-14",
        None,
        None,
        "hidden behind the stage below (compiled in a worker thread)",
    ),
    Figure(
        "compile_update_49x64",
        "compile one stage's programs 49x64, unit update (CPU default)",
        "s",
        "",
        None,
        None,
        "hidden behind the stage below (compiled in a worker thread)",
    ),
    Figure(
        "iter_coarse_25x33",
        "iteration 25x33, 32 ch, stage 0, unit update (CPU default)",
        "s",
        "0.07",
        0.15,
        0.15,
        "<= PyTorch 0.15",
    ),
)


@dataclasses.dataclass(frozen=True)
class MicroSizes:
    """Image sizes and widths of the microbenchmarks (the issue's, or tiny ones)."""

    mid: Size = (49, 64)
    big: Size = (97, 128)
    coarse: Size = (25, 33)
    width: int = 64
    coarse_width: int = 32
    scan_k: int = 2
    calls: int = 3


TINY = MicroSizes((12, 16), (16, 20), (10, 12), 8, 8, 2, 1)


def run_micro(
    sizes: MicroSizes = MicroSizes(),
    only: Sequence[str] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, float]:
    """Measures every figure of FIGURES (or those in `only`); {key: seconds}."""
    m, b, c, w, n = sizes.mid, sizes.big, sizes.coarse, sizes.width, sizes.calls
    jobs: dict[str, Callable[[], float]] = {
        "iter_jit_49x64": lambda: iteration_jit_s(m, w, n),
        "iter_scan_49x64": lambda: iteration_scan_s(m, w, sizes.scan_k),
        "iter_update_49x64": lambda: iteration_update_s(m, w, n),
        "gp_double_grad_49x64": lambda: gp_grad_s("double_grad", m, w, 2 * n + 1),
        "gp_jvp_49x64": lambda: gp_grad_s("jvp", m, w, 2 * n + 1),
        "d_update_double_grad_49x64": lambda: d_update_s("double_grad", m, w, n),
        "d_update_jvp_49x64": lambda: d_update_s("jvp", m, w, n),
        "iter_97x128": lambda: iteration_in_child(hw=b, width=w, calls=n).iter_s,
        "iter_97x128_xnnpack": lambda: (
            iteration_in_child(XNNPACK, hw=b, width=w, calls=n).iter_s
        ),
        "compile_iteration_49x64": lambda: stage_compile_s(m, w, 1, "iteration"),
        "compile_update_49x64": lambda: stage_compile_s(m, w, 1, "update"),
        "iter_coarse_25x33": lambda: iteration_update_s(
            c, sizes.coarse_width, n, lower=0
        ),
    }
    out = {}
    for fig in FIGURES:
        if only is not None and fig.key not in only:
            continue
        t0 = time.perf_counter()
        out[fig.key] = jobs[fig.key]()
        if log:
            log(f"{fig.key}: {out[fig.key]:.4f} s ({time.perf_counter() - t0:.0f} s)")
    return out


def _num(x: float | None, unit: str) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    if unit == "ms":
        return f"{x:.0f}" if x >= 10 else f"{x:.2f}"
    return f"{x:.3f}" if x < 1 else f"{x:.2f}"


def format_micro(
    measured: dict[str, float], header: str = "", comparable: bool = True
) -> str:
    """Markdown table: one row per figure, measured beside the issue, PyTorch and
    the target; figures not measured say so. `comparable=False` (tiny sizes)
    leaves the 'meets' column empty."""
    lines = [header, ""] if header else []
    lines += [
        "| figure | unit | measured | issue (jax 0.10.2) | PyTorch | target | meets |",
        "|---|---|---|---|---|---|---|",
    ]
    for fig in FIGURES:
        scale = 1000.0 if fig.unit == "ms" else 1.0
        value = measured.get(fig.key)
        shown = "not measured" if value is None else _num(value * scale, fig.unit)
        meets = "-"
        if comparable and value is not None and fig.target is not None:
            meets = "yes" if value * scale <= fig.target else "no"
        lines.append(
            f"| {fig.what} | {fig.unit} | {shown} | {fig.issue or '-'} | "
            f"{_num(fig.pytorch, fig.unit)} | {fig.target_text} | {meets} |"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------
# Whole-process CPU targets and the GPU rows.


@dataclasses.dataclass(frozen=True)
class Target:
    """One whole-process target: a config trained and sampled from the shell."""

    key: str
    config: str  # --config value
    max_size: int
    pytorch_s: float
    pytorch_finest_s: float  # PyTorch's finest stage, seconds per iteration
    aim_s: float  # the aim, about 0.7x PyTorch (the issue: 185 s for SinGAN 64)


CPU_TARGETS: tuple[Target, ...] = (
    Target("singan_64", "configs/singan.py", 64, 265.0, 0.61, 185.0),
    Target("consingan_64", "configs/consingan.py", 64, 338.0, 0.49, 237.0),
    Target("singan_128", "configs/singan.py", 128, 989.0, 2.08, 692.0),
    Target("consingan_128", "configs/consingan.py", 128, 800.0, 1.92, 560.0),
)

GPU_ROWS: tuple[tuple[str, str], ...] = (
    ("configs/agan.py:gpu training (250 px, 6 stages x 2000 it), H100", "<= 60 s"),
    ("configs/singan.py:gpu training, H100", "<= 120 s"),
    ("achieved fraction of measured conv throughput (AGAN :gpu)", "report"),
    ("sampling at 250 px (vmap, large batch)", ">= 2,000 samples/s"),
    ("time to first sample after loading a run (persistent cache)", "<= 5 s"),
    ("peak device memory at max_size 250 / 500 / 1000", "table"),
    ("max_size 1000 training within 16 GB", "<= 16 GB"),
)


def run_target(
    target: Target,
    iters: int | None = None,
    num_samples: int = 50,
    workdir: str | None = None,
    timeout: float = 7200,
    overrides: Sequence[str] = (),
) -> dict:
    """Trains and samples `target` as two shell commands, cache off; their wall time.

    `python -m launch.train --config=C --config.data.max_size=N --workdir=W --quiet
    && python -m launch.sample --workdir=W --num_samples=50`, with
    AGAN_JAX_CACHE=off so that compilation is counted. `iters` overrides the
    iterations per stage (smoke runs; such rows are not comparable to the target);
    `overrides` are further launch.train flags (`--config.train.compile_unit=...`).
    XLA_FLAGS of this process pass on to both commands.
    """
    if not os.path.exists(os.path.join(ROOT, target.config)):
        return {"key": target.key, "error": f"{target.config} does not exist yet"}
    own = workdir is None
    workdir = workdir or tempfile.mkdtemp(prefix=f"agan_target_{target.key}_")
    train_cmd = [
        sys.executable,
        "-m",
        "launch.train",
        f"--config={target.config}",
        f"--config.data.max_size={target.max_size}",
        f"--workdir={workdir}",
        "--quiet",
    ]
    if iters is not None:
        train_cmd.append(f"--config.train.iters_per_stage={iters}")
    train_cmd += list(overrides)
    sample_cmd = [
        sys.executable,
        "-m",
        "launch.sample",
        f"--workdir={workdir}",
        f"--num_samples={num_samples}",
    ]
    env = child_env()
    result: dict[str, Any] = {
        "key": target.key,
        "iters": iters or 200,
        "overrides": list(overrides),
        "xla_flags": env["XLA_FLAGS"],
    }
    try:
        seconds = []
        for cmd in (train_cmd, sample_cmd):
            t0 = time.perf_counter()
            p = subprocess.run(
                cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
            )
            seconds.append(time.perf_counter() - t0)
            if p.returncode != 0:
                result["error"] = f"rc {p.returncode}: {p.stderr.strip()[-600:]}"
                return result
        result.update(train_s=seconds[0], sample_s=seconds[1], total_s=sum(seconds))
        result.update(stage_records(workdir))
    finally:
        if own:
            shutil.rmtree(workdir, ignore_errors=True)
    return result


def stage_records(workdir: str) -> dict:
    """Per-stage sizes, s/iteration and compile seconds from a run's metrics.jsonl."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        stages = [r for r in map(json.loads, f) if r.get("event") == "stage_done"]
    if not stages:
        return {}
    return {
        "stages": len(stages),
        "sizes": [r["size"] for r in stages],
        "finest_s_per_it": 1.0 / max(stages[-1]["iters_per_s"], 1e-9),
        "compile_s": [r.get("compile_s") for r in stages],
        "compile_wait_s": [r.get("compile_wait_s") for r in stages],
        "train_stage_s": [r.get("train_s") for r in stages],
    }


def format_targets(results: dict[str, dict], backend: str | None = None) -> str:
    """Markdown tables: whole-process CPU targets, then the GPU targets."""
    lines = [
        "| config (bundled colusseum, 3+3 updates) | iters/stage | stages | "
        "measured s (train + 50 samples) | PyTorch s | target s (1.0x) | aim s (0.7x) "
        "| x PyTorch | finest s/it | PyTorch finest s/it | meets |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in CPU_TARGETS:
        r = results.get(t.key)
        name = f"{t.config} max_size {t.max_size}"
        ref = f"{t.pytorch_s:.0f} | {t.pytorch_s:.0f} | {t.aim_s:.0f}"
        if r is None or "error" in r:
            why = "not measured" if r is None else f"failed: {r['error'][:120]}"
            lines.append(
                f"| {name} | - | - | {why} | {ref} | - | - | {t.pytorch_finest_s} | - |"
            )
            continue
        extra = " ".join([*r.get("overrides", []), r.get("xla_flags", "")]).strip()
        if extra:
            name += f" with {extra}"
        comparable = r.get("iters", 200) == 200
        meets = ("yes" if r["total_s"] <= t.pytorch_s else "no") if comparable else "-"
        lines.append(
            f"| {name} | {r.get('iters', 200)} | {r.get('stages', '-')} | "
            f"{r['total_s']:.0f} ({r['train_s']:.0f} + {r['sample_s']:.0f}) | {ref} | "
            f"{r['total_s'] / t.pytorch_s:.2f} | {r.get('finest_s_per_it', math.nan):.3f} "
            f"| {t.pytorch_finest_s} | {meets} |"
        )
    backend = backend or jax.default_backend()
    lines += ["", "| GPU target | bound | measured |", "|---|---|---|"]
    why = (
        f"not measured (no GPU: backend {backend})"
        if backend == "cpu"
        else "not measured (GPU suite not written yet)"
    )
    for what, bound in GPU_ROWS:
        lines.append(f"| {what} | {bound} | {why} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------
# Speed levers: variants of one stage compared in turns.


@dataclasses.dataclass(frozen=True)
class Variant:
    """A way to build one stage's programs.

    settings: `train.TrainSettings` overrides (compile_unit, steps_per_call, ...);
    options: per-compile XLA options (`Lowered.compile(compiler_options)`);
    xla_flags: process-wide XLA_FLAGS (only `compare_children` honours them).
    """

    name: str
    settings: dict = dataclasses.field(default_factory=dict)
    options: dict | None = None
    xla_flags: str = ""


def compare_in_process(
    hw: Size,
    width: int,
    lower: int,
    variants: Sequence[Variant],
    rounds: int = 6,
    calls: int = 1,
    compile_rounds: int = 1,
) -> dict[str, dict[str, float]]:
    """Compile seconds and seconds per iteration of each variant, in one process.

    Each variant is compiled `compile_rounds` times in turns (fresh functions, so
    nothing comes from jax's in-memory caches; persistent cache off), then their
    runners are timed in turns. Returns {name: {compile_s, iter_s}} (medians).
    """
    setups = {v.name: step_setup(hw, width, lower, **v.settings) for v in variants}
    compile_s: dict[str, list[float]] = {v.name: [] for v in variants}
    built: dict[str, tuple] = {}
    with no_persistent_cache():
        for r in range(compile_rounds):
            for v in variants if r % 2 == 0 else list(reversed(variants)):
                base = setups[v.name]
                fns = train.make_stage_fns(base.spec, base.sizes, base.stage, base.ts)
                setup = dataclasses.replace(base, fns=fns)
                run, k, c = build_runner(setup, v.options)
                compile_s[v.name].append(c)
                built[v.name] = (run, k, base.fresh_state(), base.data)
    iter_s = interleaved_runners(built, rounds, calls)
    return {
        v.name: {
            "compile_s": statistics.median(compile_s[v.name]),
            "iter_s": iter_s[v.name],
        }
        for v in variants
    }


def compare_children(
    hw: Size,
    width: int,
    lower: int,
    variants: Sequence[Variant],
    rounds: int = 2,
    calls: int = 3,
) -> dict[str, dict[str, float]]:
    """As `compare_in_process`, each measurement in a fresh child process (XLA_FLAGS
    differ), children of the variants started in turns."""
    timings: dict[str, list[IterTiming]] = {v.name: [] for v in variants}
    for r in range(rounds):
        for v in variants if r % 2 == 0 else list(reversed(variants)):
            kw = {
                "hw": hw,
                "width": width,
                "lower": lower,
                "calls": calls,
                **v.settings,
            }
            if v.options:
                kw["compiler_options"] = v.options
            timings[v.name].append(iteration_in_child(v.xla_flags, **kw))
    return {
        name: {
            "compile_s": statistics.median(t.compile_s for t in ts),
            "iter_s": statistics.median(t.iter_s for t in ts),
        }
        for name, ts in timings.items()
    }


def format_lever(
    title: str,
    results: dict[str, dict[str, float]],
    iters: int = 200,
    agreement: dict[str, float] | None = None,
) -> str:
    """Markdown table of one lever: compile s, s/iteration, ratios to the first
    variant, and compile + `iters` iterations (one stage's cost)."""
    names = list(results)
    base = results[names[0]]
    lines = [
        f"{title}",
        "",
        f"| variant | compile s | s/iteration | iteration ratio | compile + {iters} it s "
        "| max param diff |",
        "|---|---|---|---|---|---|",
    ]
    for name in names:
        r = results[name]
        diff = (agreement or {}).get(name)
        lines.append(
            f"| {name} | {r['compile_s']:.2f} | {r['iter_s']:.4f} | "
            f"{r['iter_s'] / base['iter_s']:.2f} | "
            f"{r['compile_s'] + iters * r['iter_s']:.1f} | "
            f"{'-' if diff is None else f'{diff:.1e}'} |"
        )
    return "\n".join(lines)


def environment(xla_flags: str | None = None) -> str:
    """Device, versions, load, flags and date: the header of a table."""
    import flax

    dev = jax.devices()[0]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    flags = os.environ.get("XLA_FLAGS", "") if xla_flags is None else xla_flags
    return (
        f"device: {dev.platform} ({getattr(dev, 'device_kind', '')}), "
        f"{os.cpu_count()} host cores, load average {load:.1f}, jax {jax.__version__}, "
        f"flax {flax.__version__}, XLA_FLAGS={flags or '(none)'}, "
        f"{time.strftime('%Y-%m-%d %H:%M')}"
    )


def _child_main(args: list[str]) -> None:
    kw = json.loads(args[0]) if args else {}
    if "hw" in kw:
        kw["hw"] = tuple(kw["hw"])
    timing = measure_iteration(**kw)
    print("PERF_RESULT " + json.dumps(dataclasses.asdict(timing)), flush=True)


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "child":
        _child_main(sys.argv[2:])
    else:
        print("usage: python -m agan_jax.perf child JSON  (use launch.bench instead)")
        sys.exit(2)
