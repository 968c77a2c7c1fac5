"""Speed levers: variants of one stage compared in turns.

A `Variant` is a way to build one stage's programs (settings, per-compile XLA
options, or process-wide XLA_FLAGS in child processes). Variants are compiled
and timed in turns, so load drift on a shared machine hits every variant alike:
read the ratios. Each lever table also gives the largest parameter difference to
the plain step after 3 iterations (`runner_agreement`).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from agan_jax import compiler
from agan_jax.errors import UserError
from benchmarks import common, references, stage
from benchmarks.stage import IterTiming, Size

# jax_disable_most_optimizations, as per-compile options (see jax._src.compiler).
FEW_OPTIMIZATIONS = {
    "xla_backend_optimization_level": 0,
    "xla_llvm_disable_expensive_passes": True,
}
# LLVM O1 for XLA's generated CPU kernels (agan_jax/compiler.py's CPU default).
BACKEND_O1 = compiler.options(compiler.CPU_BACKEND_OPT_LEVEL)
LEVERS = ("xnnpack", "xnnpack_child", "compile_unit", "opt_level")


@dataclasses.dataclass(frozen=True)
class Variant:
    """A way to build one stage's programs.

    settings: train/model/loss settings by name (compile_unit, steps_per_call, ...);
    options: per-compile XLA options (`Lowered.compile(compiler_options)`);
    xla_flags: process-wide XLA_FLAGS (only `compare_children` honours them).
    """

    name: str
    settings: dict = dataclasses.field(default_factory=dict)
    options: dict | None = None
    xla_flags: str = ""


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
        for name in list(setups) if r % 2 == 0 else list(reversed(setups)):
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
    common_settings: dict | None = None,
) -> float:
    """Max parameter difference after `iters` iterations: the plain runner (unit
    update, XLA's default O2) against the runner with `variant` settings and
    `compiler_options`; `common_settings` (d_steps, num_layers, ...) go to both.

    Adam's epsilon is 1 here (as in the training tests) so that the comparison
    measures the programs, not Adam's sign-like first steps amplifying rounding.
    """
    shared = {"adam_eps": 1.0, **(common_settings or {})}
    plain = {"compile_unit": "update", "xla_opt_level": 2}
    base = stage.step_setup(hw, width, lower, **{**shared, **plain})
    other = stage.step_setup(hw, width, lower, **{**shared, **variant})
    out = []
    for setup, opts in ((base, None), (other, compiler_options)):
        run, k, _ = stage.build_runner(setup, opts)
        state = setup.fresh_state()
        for _ in range(max(1, iters // k)):
            state, _ = run(state, setup.data)
        out.append(state)
    return max_param_diff(*out)


def compare_in_process(
    hw: Size,
    width: int,
    lower: int,
    variants: Sequence[Variant],
    rounds: int = 6,
    calls: int = 1,
    compile_rounds: int = 1,
    values: dict | None = None,
) -> dict[str, dict[str, float]]:
    """Compile seconds and seconds per iteration of each variant, in one process.

    Each variant is compiled `compile_rounds` times in turns (fresh functions, so
    nothing comes from jax's in-memory caches; persistent cache off), then their
    runners are timed in turns. `values`: settings of every variant (tiny runs).
    Returns {name: {compile_s, iter_s}} (medians).
    """
    setups = {
        v.name: stage.step_setup(hw, width, lower, **{**(values or {}), **v.settings})
        for v in variants
    }
    compile_s: dict[str, list[float]] = {v.name: [] for v in variants}
    built: dict[str, tuple] = {}
    with common.no_persistent_cache():
        for r in range(compile_rounds):
            for v in variants if r % 2 == 0 else list(reversed(variants)):
                base = setups[v.name]
                setup = dataclasses.replace(base, fns=base.make_fns())
                run, k, c = stage.build_runner(setup, v.options)
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
    values: dict | None = None,
) -> dict[str, dict[str, float]]:
    """As `compare_in_process`, each measurement in a fresh child process (XLA_FLAGS
    differ), children of the variants started in turns."""
    timings: dict[str, list[IterTiming]] = {v.name: [] for v in variants}
    for r in range(rounds):
        for v in variants if r % 2 == 0 else list(reversed(variants)):
            kw = {"hw": hw, "width": width, "lower": lower, "calls": calls}
            kw.update({**(values or {}), **v.settings})
            if v.options:
                kw["compiler_options"] = v.options
            timings[v.name].append(stage.iteration_in_child(v.xla_flags, **kw))
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
    rows = []
    for name in names:
        r = results[name]
        diff = (agreement or {}).get(name)
        rows.append(
            (
                name,
                f"{r['compile_s']:.2f}",
                f"{r['iter_s']:.4f}",
                f"{r['iter_s'] / base['iter_s']:.2f}",
                f"{r['compile_s'] + iters * r['iter_s']:.1f}",
                "-" if diff is None else f"{diff:.1e}",
            )
        )
    columns = (
        "variant",
        "compile s",
        "s/iteration",
        "iteration ratio",
        f"compile + {iters} it s",
        "max param diff",
    )
    return f"{title}\n\n{common.table(columns, rows)}"


@dataclasses.dataclass(frozen=True)
class LeverSizes:
    """Stages each lever is measured at: ((h, w), width, stages below) each."""

    xnnpack: tuple = (((49, 64), 64, 1), ((97, 128), 64, 1))
    compile_unit: tuple = (
        ((25, 33), 32, 0),
        ((49, 64), 64, 1),
        ((62, 82), 64, 1),
        ((77, 103), 64, 1),
        ((97, 128), 64, 1),
    )
    opt_level: tuple = (((25, 33), 32, 0), ((35, 47), 32, 2))
    agreement: tuple = ((25, 33), 32, 0)  # the stage of the param-diff column
    values: tuple[tuple[str, Any], ...] = ()  # settings of every stage
    compile_rounds: int = 2  # compiles per variant of the opt_level lever


FULL = LeverSizes()
TINY = LeverSizes(
    (((12, 16), 8, 0),),
    (((12, 16), 8, 0),),
    (((12, 16), 8, 0),),
    ((12, 16), 8, 0),
    (("d_steps", 1), ("g_steps", 1), ("num_layers", 2)),
    1,
)


def _agreement(variants: Sequence[Variant], sizes: LeverSizes) -> dict[str, float]:
    """Max parameter difference to the plain step after 3 iterations."""
    hw, width, lower = sizes.agreement
    return {
        v.name: runner_agreement(
            hw,
            width,
            v.settings,
            lower=lower,
            compiler_options=v.options,
            common_settings=dict(sizes.values),
        )
        for v in variants[1:]
    }


def suite(
    levers: Sequence[str] = ("xnnpack", "compile_unit", "opt_level"),
    rounds: int = 6,
    sizes: str = "full",
    log: Callable[[str], None] | None = None,
) -> tuple[str, dict]:
    """`--suite=levers`: (header and one table per lever and size, raw results).

    sizes: 'full' (about 15 min on 2 cores) or 'tiny' (checks the suite runs).
    """
    for name in levers:
        if name not in LEVERS:
            raise UserError(f"unknown lever {name!r}; choose from {LEVERS}")
    sz = TINY if sizes == "tiny" else FULL
    values = dict(sz.values)
    parts = [common.environment() + (" (TINY sizes)" if sizes == "tiny" else "")]
    out: dict[str, Any] = {}

    def emit(key: str, title: str, res: dict, agree: dict | None = None) -> None:
        out[key] = {"timings": res, "max_diff": agree} if agree is not None else res
        parts.append(format_lever(title, res, agreement=agree))
        if log:
            log(parts[-1] + "\n")

    update = {"compile_unit": "update"}
    iteration = {"compile_unit": "iteration"}
    diff_at = "x".join(map(str, sz.agreement[0]))
    if "xnnpack" in levers:
        # Per-compile options: the variants run in turns in one process.
        variants = [
            Variant("default", update),
            Variant("xla_cpu_use_xnnpack", update, {"xla_cpu_use_xnnpack": True}),
            Variant("xla_cpu_use_onednn", update, {"xla_cpu_use_onednn": True}),
        ]
        agree = _agreement(variants, sz)
        for hw, width, lower in sz.xnnpack:
            res = compare_in_process(hw, width, lower, variants, rounds, values=values)
            emit(
                f"xnnpack_{hw[0]}x{hw[1]}",
                f"Conv libraries as compile options, {hw[0]}x{hw[1]}, {width} ch, unit "
                f"update (param diff: 3 iterations at {diff_at} vs plain)",
                res,
                agree,
            )
    if "xnnpack_child" in levers:
        for hw, width, lower in sz.xnnpack:
            variants = [
                Variant("default flags", iteration),
                Variant(
                    f"XLA_FLAGS={references.XNNPACK}",
                    iteration,
                    None,
                    references.XNNPACK,
                ),
            ]
            res = compare_children(hw, width, lower, variants, 2, values=values)
            emit(
                f"xnnpack_child_{hw[0]}x{hw[1]}",
                f"XNNPACK, {hw[0]}x{hw[1]}, {width} ch, unit iteration (child "
                "processes)",
                res,
            )
    if "compile_unit" in levers:
        for hw, width, lower in sz.compile_unit:
            variants = [Variant("update", update), Variant("iteration", iteration)]
            res = compare_in_process(hw, width, lower, variants, rounds, values=values)
            emit(
                f"compile_unit_{hw[0]}x{hw[1]}",
                f"compile_unit, {hw[0]}x{hw[1]}, {width} ch, {lower} stage(s) below",
                res,
            )
    if "opt_level" in levers:
        o2 = {**update, "xla_opt_level": 2}  # XLA's own default, the plain step
        variants = [
            Variant("XLA default (O2)", o2),
            Variant("few optimisations (O0, cheap LLVM)", o2, FEW_OPTIMIZATIONS),
            Variant(
                "cheap LLVM passes only",
                o2,
                {"xla_llvm_disable_expensive_passes": True},
            ),
            Variant("backend O1 (CPU default)", update, BACKEND_O1),
        ]
        agree = _agreement(variants, sz)
        for hw, width, lower in sz.opt_level:
            res = compare_in_process(
                hw,
                width,
                lower,
                variants,
                rounds,
                compile_rounds=sz.compile_rounds,
                values=values,
            )
            emit(
                f"opt_level_{hw[0]}x{hw[1]}",
                f"XLA optimisation level, {hw[0]}x{hw[1]}, {width} ch, {lower} "
                f"stage(s) below, unit update (param diff: 3 iterations at "
                f"{diff_at} vs plain)",
                res,
                agree,
            )
    parts.append(f"load average at the end: {common.load_average():.1f}")
    return "\n\n".join(parts), out
