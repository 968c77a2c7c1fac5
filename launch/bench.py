"""Benchmarks on whatever device JAX sees; prints markdown tables (issue 6).

  python -m launch.bench                              # --suite=train, configs/agan.py
  python -m launch.bench --config=configs/singan.py --config.train.iters_per_stage=50 \\
      --batch_sizes=1,4,16,64,256,1024
  python -m launch.bench --suite=micro                # issue 6's measured facts
  python -m launch.bench --suite=cpu_targets          # whole-process CPU targets
  python -m launch.bench --suite=levers               # speed levers, in turns
  python -m launch.bench --suite=issue6               # micro + cpu_targets (~45 min)

Suites:
  train        trains --config once (all stages, no progress bars); per stage
               iterations/s, compile time, parameter counts; then samples/s.
  micro        one SinGAN iteration at 49x64 (jitted alone, in lax.scan, split
               into updates), the gradient penalty's parameter gradient (grad of
               grad vs jvp), a critic update in both modes, 97x128 with and
               without XNNPACK (child processes), one stage's compile time, a
               coarse 25x33 iteration; each beside the issue's figure, PyTorch's
               and the target. --micro_sizes=tiny: the same on tiny sizes.
  cpu_targets  `launch.train` + `launch.sample --num_samples=50` as subprocesses,
               whole wall time, for SinGAN and ConSinGAN at max_size 64 and 128
               (minutes each); then the GPU targets ("not measured" on a CPU).
  levers       XNNPACK, compile unit and optimisation-level variants compared in
               turns (ratios), with the parameter difference to the plain step.
  issue6       micro, then cpu_targets: every figure of issue 6 in one command.

Compilation is part of what is measured: unless AGAN_JAX_CACHE is set, this
launcher runs with the persistent compilation cache off (AGAN_JAX_CACHE=off).
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("AGAN_JAX_CACHE", "off")  # before common reads it

from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from launch import common  # noqa: E402

SUITES = ("train", "micro", "cpu_targets", "levers", "issue6")

_SUITE = flags.DEFINE_enum("suite", "train", SUITES, "What to measure.")
_CONFIG = config_flags.DEFINE_config_file(
    "config", "configs/agan.py", "Config to benchmark (suite train).", lock_config=True
)
_BATCHES = flags.DEFINE_list(
    "batch_sizes",
    ["1", "4", "16", "64", "256"],
    "Sampling batch sizes (1024 takes minutes per call on a 2-core CPU).",
)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Keep the trained run here (suite train; default: temp)."
)
_JSON = flags.DEFINE_string("json", None, "Also write the raw results to this file.")
_MICRO_SIZES = flags.DEFINE_enum(
    "micro_sizes", "issue", ("issue", "tiny"), "micro: the issue's sizes or tiny ones."
)
_ONLY = flags.DEFINE_list(
    "only",
    None,
    "micro: figure keys (agan_jax.perf.FIGURES); cpu_targets: target keys "
    "(singan_64, consingan_64, singan_128, consingan_128). Default: all.",
)
_TARGET_ITERS = flags.DEFINE_integer(
    "target_iters",
    None,
    "cpu_targets: iterations per stage instead of 200 (smoke runs; not comparable).",
)
_OVERRIDES = flags.DEFINE_multi_string(
    "target_flag",
    [],
    "cpu_targets: a further launch.train flag, repeatable "
    "(--target_flag=--config.train.compile_unit=iteration).",
)
_ROUNDS = flags.DEFINE_integer(
    "rounds", 6, "levers: timed turns per variant (compile_rounds: 2)."
)
_LEVERS = flags.DEFINE_list(
    "levers",
    ["xnnpack", "compile_unit", "opt_level"],
    "levers: which ones (xnnpack, xnnpack_child, compile_unit, opt_level).",
)


def _log(msg: str) -> None:
    print(msg, flush=True)


def suite_train() -> dict:
    """The per-stage table of agan_jax.benchmark."""
    from agan_jax import benchmark

    config = _CONFIG.value
    config.unlock()
    config.train.stage_samples = 0
    result = benchmark.run_benchmark(
        config, [int(b) for b in _BATCHES.value], _WORKDIR.value
    )
    print(benchmark.format_tables(result))
    return result


def suite_micro() -> dict:
    """Issue 6's measured facts, one row each."""
    from agan_jax import perf

    sizes = perf.TINY if _MICRO_SIZES.value == "tiny" else perf.MicroSizes()
    header = perf.environment()
    measured = perf.run_micro(sizes, _ONLY.value, log=_log)
    note = "" if _MICRO_SIZES.value == "issue" else " (TINY sizes: rows not comparable)"
    print(perf.format_micro(measured, header + note, comparable=not note))
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")
    return {"env": header, "sizes": _MICRO_SIZES.value, "measured": measured}


def suite_cpu_targets() -> dict:
    """Whole-process wall times of the CPU targets; the GPU rows."""
    from agan_jax import perf

    header = perf.environment()
    results = {}
    for t in perf.CPU_TARGETS:
        if _ONLY.value and t.key not in _ONLY.value:
            continue
        _log(f"{t.key}: training {t.config} at max_size {t.max_size} ...")
        results[t.key] = perf.run_target(
            t, iters=_TARGET_ITERS.value, overrides=_OVERRIDES.value
        )
        _log(f"{t.key}: {json.dumps(results[t.key], default=str)}")
    print(header + f"; load average at the end {os.getloadavg()[0]:.1f}")
    print()
    print(perf.format_targets(results))
    return {"env": header, "results": results}


def suite_levers() -> dict:
    """Speed levers, each compared in turns against the plain variant."""
    from agan_jax import perf

    print(perf.environment(), flush=True)
    rounds, out = _ROUNDS.value, {}
    update = {"compile_unit": "update"}
    iteration = {"compile_unit": "iteration"}
    if "xnnpack" in _LEVERS.value:
        # Per-compile options: the variants run in turns in one process.
        variants = [
            perf.Variant("default", update),
            perf.Variant("xla_cpu_use_xnnpack", update, {"xla_cpu_use_xnnpack": True}),
            perf.Variant("xla_cpu_use_onednn", update, {"xla_cpu_use_onednn": True}),
        ]
        agree = _agreement(variants)
        for hw in ((49, 64), (97, 128)):
            res = perf.compare_in_process(hw, 64, 1, variants, rounds)
            out[f"xnnpack_{hw[0]}x{hw[1]}"] = {"timings": res, "max_diff": agree}
            title = (
                f"Conv libraries as compile options, {hw[0]}x{hw[1]}, 64 ch, unit update"
                " (param diff: 3 iterations at 25x33 vs plain)"
            )
            print(perf.format_lever(title, res, agreement=agree), "\n", flush=True)
    if "xnnpack_child" in _LEVERS.value:
        for hw in ((49, 64), (97, 128)):
            variants = [
                perf.Variant("default flags", iteration),
                perf.Variant(
                    f"XLA_FLAGS={perf.XNNPACK}", iteration, None, perf.XNNPACK
                ),
            ]
            res = perf.compare_children(hw, 64, 1, variants, rounds=2)
            out[f"xnnpack_child_{hw[0]}x{hw[1]}"] = res
            title = f"XNNPACK, {hw[0]}x{hw[1]}, 64 ch, unit iteration (child processes)"
            print(perf.format_lever(title, res), "\n", flush=True)
    if "compile_unit" in _LEVERS.value:
        for hw, width, lower in (
            ((25, 33), 32, 0),
            ((49, 64), 64, 1),
            ((62, 82), 64, 1),
            ((77, 103), 64, 1),
            ((97, 128), 64, 1),
        ):
            variants = [
                perf.Variant("update", update),
                perf.Variant("iteration", iteration),
            ]
            res = perf.compare_in_process(hw, width, lower, variants, rounds)
            out[f"compile_unit_{hw[0]}x{hw[1]}"] = res
            title = f"compile_unit, {hw[0]}x{hw[1]}, {width} ch, {lower} stage(s) below"
            print(perf.format_lever(title, res), "\n", flush=True)
    if "opt_level" in _LEVERS.value:
        o2 = {**update, "xla_opt_level": 2}  # XLA's own default, the plain step
        variants = [
            perf.Variant("XLA default (O2)", o2),
            perf.Variant(
                "few optimisations (O0, cheap LLVM)", o2, perf.FEW_OPTIMIZATIONS
            ),
            perf.Variant(
                "cheap LLVM passes only",
                o2,
                {"xla_llvm_disable_expensive_passes": True},
            ),
            perf.Variant("backend O1 (CPU default)", update, perf.BACKEND_O1),
        ]
        agree = _agreement(variants)
        for hw, width, lower in (((25, 33), 32, 0), ((35, 47), 32, 2)):
            res = perf.compare_in_process(
                hw, width, lower, variants, rounds, compile_rounds=2
            )
            out[f"opt_level_{hw[0]}x{hw[1]}"] = {"timings": res, "max_diff": agree}
            title = (
                f"XLA optimisation level, {hw[0]}x{hw[1]}, {width} ch, {lower} stage(s) "
                "below, unit update (param diff: 3 iterations at 25x33 vs plain)"
            )
            print(perf.format_lever(title, res, agreement=agree), "\n", flush=True)
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    return out


def _agreement(variants) -> dict[str, float]:
    """Max parameter difference to the plain step after 3 iterations at 25x33."""
    from agan_jax import perf

    return {
        v.name: perf.runner_agreement(
            (25, 33), 32, v.settings, lower=0, compiler_options=v.options
        )
        for v in variants[1:]
    }


def suite_issue6() -> dict:
    """Everything issue 6 lists, in one command: micro, then cpu_targets."""
    out = {"micro": suite_micro()}
    print()
    out["cpu_targets"] = suite_cpu_targets()
    return out


def main(argv: list[str]) -> None:
    del argv
    suite = {
        "train": suite_train,
        "micro": suite_micro,
        "cpu_targets": suite_cpu_targets,
        "levers": suite_levers,
        "issue6": suite_issue6,
    }[_SUITE.value]
    result = suite()
    if _JSON.value:
        with open(_JSON.value, "w") as f:
            json.dump(result, f, indent=1, default=str)


if __name__ == "__main__":
    common.run(main)
