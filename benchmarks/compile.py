"""`--suite=compile`: where one stage's compile time goes, program by program.

On an H100 (docs/performance.md, GPU) XLA compiled each stage of
configs/agan.py:gpu in 31-74 s (4-7 s on the 2-core CPU): 79% of the training
wall time at 200 iterations per stage. This suite builds a stage of a config as
training builds it (`benchmarks.stage.config_stage`) and, for each program that
training may compile, times tracing + lowering, XLA's compile, and the compiled
call:

  d_step      one critic update (compile unit 'update')
  g_step      one generator update call (compile unit 'update')
  iteration   d_steps + g_steps updates in one program (compile unit 'iteration')
  scan        a lax.scan of `steps_per_call` iterations (the accelerators' default)
  iteration_double_grad  `iteration` with train.gp_mode='double_grad'
  rolled      `iteration` with the updates in lax.scan loops (compile unit 'rolled')
  scan_rolled a lax.scan of `steps_per_call` rolled iterations

With `flag_sets`, each set of XLA_FLAGS runs the same measurements in a child
process (XLA reads its flags once per process), so one table compares e.g.
`--xla_gpu_autotune_level=0` with the default. The persistent compilation cache
is off throughout (launch.bench sets AGAN_JAX_CACHE=off; children likewise).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Callable, Sequence

import jax

from agan_jax.settings import default_steps_per_call
from agan_jax.train.runner import chunk_fn
from agan_jax.train.updates import make_stage_fns
from benchmarks import common, stage

PROGRAMS = (
    "d_step",
    "g_step",
    "iteration",
    "scan",
    "iteration_double_grad",
    "rolled",
    "scan_rolled",
)
RESULT_TAG = "COMPILE_RESULT "


def _program(setup: stage.StepSetup, name: str) -> tuple[Callable, int]:
    """(function of (state, data), iterations or updates per call)."""
    s = setup.settings
    if name == "iteration_double_grad":
        ts = dataclasses.replace(s.train, gp_mode="double_grad")
        fns = make_stage_fns(
            setup.family, s.model, setup.sizes, setup.stage, ts, s.loss, s.augment
        )
        return fns.iteration, 1
    fns = setup.make_fns()  # never traced: the trace is timed too
    if name == "d_step":
        return fns.d_step, 1
    if name == "g_step":
        return fns.g_step, 1
    if name == "iteration":
        return fns.iteration, 1
    if name == "rolled":
        return fns.rolled, 1
    if name in ("scan", "scan_rolled"):
        k = s.train.steps_per_call or default_steps_per_call()
        return chunk_fn(fns.rolled if name == "scan_rolled" else fns.iteration, k), k
    raise ValueError(f"unknown program {name!r}; choose from {PROGRAMS}")


def measure_stage(
    config: str,
    overrides: dict | None,
    stage_index: int,
    programs: Sequence[str],
    calls: int = 3,
    log: Callable[[str], None] | None = None,
) -> list[dict]:
    """One row per program of stage `stage_index` (negative: from the finest)."""
    say = log or (lambda msg: None)
    settings = common.settings_of(config, overrides)
    setup = stage.config_stage(settings, stage_index)
    opts = settings.train.compiler_options
    size = tuple(setup.sizes[setup.stage])
    rows = []
    for name in programs:
        fn, per_call = _program(setup, name)
        state = setup.fed_state(per_call)
        t0 = time.perf_counter()
        lowered = jax.jit(fn, donate_argnums=(0,)).lower(state, setup.data)
        t1 = time.perf_counter()
        compiled = lowered.compile(compiler_options=opts)
        t2 = time.perf_counter()
        per_it, _ = common.time_calls(compiled, state, setup.data, calls, per_call)
        row = {
            "stage": setup.stage,
            "size": size,
            "program": name,
            "lower_s": t1 - t0,
            "compile_s": t2 - t1,
            "call_s": per_it * per_call,
            "per_call": per_call,
        }
        say(f"compile suite: {json.dumps(row)}")
        rows.append(row)
    return rows


def measure(
    config: str,
    overrides: dict | None = None,
    stages: Sequence[int] = (0, -1),
    programs: Sequence[str] = PROGRAMS,
    calls: int = 3,
    log: Callable[[str], None] | None = None,
) -> list[dict]:
    for p in programs:
        if p not in PROGRAMS:
            raise ValueError(f"unknown program {p!r}; choose from {PROGRAMS}")
    with common.no_persistent_cache():
        return [
            row
            for s in stages
            for row in measure_stage(config, overrides, s, programs, calls, log)
        ]


def in_child(xla_flags: str, timeout: float = 1800, **kw) -> list[dict]:
    """`measure(**kw)` in a fresh process started with these XLA_FLAGS."""
    return common.child_result("benchmarks.compile", kw, RESULT_TAG, xla_flags, timeout)


def format_rows(rows: Sequence[dict], header: str = "") -> str:
    cols = ("XLA flags", "stage", "size", "program", "trace+lower s", "compile s")
    cols += ("s/call", "per call")
    body = [
        (
            r.get("flags") or "(default)",
            r["stage"],
            "x".join(map(str, r["size"])),
            r["program"],
            common.num(r["lower_s"]),
            common.num(r["compile_s"]),
            common.num(r["call_s"]),
            r["per_call"],
        )
        for r in rows
    ]
    return header + common.table(cols, body)


def suite(
    config: str,
    overrides: dict | None = None,
    stages: Sequence[int] = (0, -1),
    programs: Sequence[str] = PROGRAMS,
    flag_sets: Sequence[str] = (),
    log: Callable[[str], None] | None = None,
) -> tuple[str, dict]:
    """In-process rows (this process's XLA_FLAGS), then one child per flag set."""
    kw = dict(
        config=config, overrides=overrides, stages=list(stages), programs=list(programs)
    )
    rows = measure(**kw, log=log)
    for flags in flag_sets:
        try:
            rows += [{**r, "flags": flags} for r in in_child(flags, **kw)]
        except Exception as e:  # noqa: BLE001 - one failed variant, reported
            rows.append({"flags": flags, "error": str(e)[-500:]})
            if log:
                log(f"compile suite: {flags}: {e}")
    ok = [r for r in rows if "error" not in r]
    failed = "".join(
        f"\nfailed: {r['flags']}: {r['error']}" for r in rows if "error" in r
    )
    header = f"{common.environment()}\nconfig {config} {overrides or ''}\n\n"
    return format_rows(ok, header) + failed, {"config": config, "rows": rows}


def _child_main(args: list[str]) -> None:
    kw = json.loads(args[0])
    rows = measure(**kw)
    print(RESULT_TAG + json.dumps(rows), flush=True)


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "child":
        _child_main(sys.argv[2:])
    else:
        print("usage: python -m benchmarks.compile child JSON  (use launch.bench)")
        sys.exit(2)
