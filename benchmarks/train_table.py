"""`--suite=train`: one config trained once; per stage iterations/s, compile time
and parameter counts; then sampling throughput of the trained run.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence

import jax
import numpy as np

from agan_jax import sampling, train
from agan_jax.models import consingan, families
from agan_jax.models.family import Family
from agan_jax.run import Run
from benchmarks import common


def count_params(tree) -> int:
    """Number of scalars in a params pytree."""
    return int(sum(np.size(x) for x in jax.tree.leaves(tree)))


def stage_params(family: Family, params: dict, stage: int) -> dict:
    """The generator parameters stage `stage` adds: all of them for a family with
    a generator per stage; ConSinGAN's block `stage` (`consingan.stage_params`)."""
    if family.stage_generators:
        return params
    if family.kind == "consingan":
        return consingan.stage_params(params, stage)
    raise ValueError(f"no per-stage parameter split for the {family.kind} family")


def stage_param_counts(run: Run) -> list[tuple[int, int, int]]:
    """(stage, generator params, critic params) of every trained stage of a run.

    The generator count is what the stage adds (`stage_params`: a whole
    per-stage generator for SinGAN/AGAN; ConSinGAN's block s, with the head and
    tail at stage 0), so for a growing generator the rows sum to the final one.
    """
    family = families.of(run.spec)
    rows = []
    for s in range(run.num_stages):
        h, w = run.sizes[s]
        x = jax.ShapeDtypeStruct((1, h, w, 3), np.float32)
        d = family.make_discriminator(run.spec, s)
        d_shapes = jax.eval_shape(
            lambda x, d=d: d.init(jax.random.key(0), x, train=False), x
        )
        g = count_params(stage_params(family, run.g_vars[s]["params"], s))
        rows.append((s, g, count_params(d_shapes["params"])))
    return rows


def time_sampling(
    run: Run, batch_sizes: Sequence[int], repeats: int = 3, per_stage=None
) -> list[dict]:
    """Samples/s and compile seconds for each batch size (one vmap'd call each,
    one `Sampler`, so each batch size compiles once); `per_stage` as
    `sampling.Sampler`'s (None: the backend's default)."""
    sampler = sampling.Sampler(run, per_stage)
    rows = []
    for b in batch_sizes:
        key = jax.random.key(0)
        t0 = time.perf_counter()
        jax.block_until_ready(sampler.sample(key, b, batch_size=b))
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        for r in range(repeats):
            jax.block_until_ready(
                sampler.sample(jax.random.fold_in(key, r), b, batch_size=b)
            )
        dt = (time.perf_counter() - t0) / repeats
        rows.append(
            {
                "batch": b,
                "compile_s": first - dt,
                "s": dt,
                "samples_per_s": b / dt,
                "per_stage": sampler.per_stage,
            }
        )
    return rows


def stage_done_records(workdir: str) -> list[dict]:
    """The `stage_done` records of a run's metrics.jsonl."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r.get("event") == "stage_done"]


def run_benchmark(
    config, batch_sizes: Sequence[int], workdir: str | None = None
) -> dict:
    """Trains `config` (all stages) in a scratch run dir, then times sampling.

    Returns per-stage training rows, sampling rows, parameter counts and the
    wall time of the whole training.
    """
    own = workdir is None
    workdir = workdir or tempfile.mkdtemp(prefix="agan_bench_")
    try:
        t0 = time.perf_counter()
        run = train.train(config, workdir, progress=False)
        train_wall = time.perf_counter() - t0
        stages = stage_done_records(workdir)
        sample_rows = time_sampling(run, batch_sizes)
        params = stage_param_counts(run)
    finally:
        if own:
            shutil.rmtree(workdir, ignore_errors=True)
    return {
        "env": common.environment(),
        "model": families.of(run.spec).display_name(run.schedule),
        "kind": run.spec.kind,
        "schedule": run.schedule,
        "stages": stages,
        "sampling": sample_rows,
        "params": params,
        "train_wall_s": train_wall,
        "sizes": run.sizes,
    }


STAGE_COLUMNS = (
    "stage",
    "size",
    "iters/s",
    "s/iter",
    "compile s",
    "stage total s",
    "G params",
    "D params",
)


def format_tables(result: dict) -> str:
    """Markdown tables of a `run_benchmark` result."""
    rows = []
    for r, (_, g, d) in zip(result["stages"], result["params"], strict=True):
        h, w = r["size"]
        rows.append(
            (
                r["stage"],
                f"{h}x{w}",
                f"{r['iters_per_s']:.2f}",
                f"{1 / r['iters_per_s']:.3f}",
                f"{r['compile_s']:.1f}",
                f"{r['stage_s']:.1f}",
                f"{g:,}",
                f"{d:,}",
            )
        )
    g_total = sum(g for _, g, _ in result["params"])
    d_total = sum(d for _, _, d in result["params"])
    rows.append(("all", "", "", "", "", "", f"{g_total:,}", f"{d_total:,}"))
    h, w = result["sizes"][-1]
    sample_rows = [
        (
            r["batch"],
            f"{r['samples_per_s']:.1f}",
            f"{r['s']:.4f}",
            f"{max(r['compile_s'], 0):.2f}",
        )
        for r in result["sampling"]
    ]
    return "\n".join(
        [
            result["env"],
            f"model {result['model']} ({result['kind']}, {result['schedule']}), "
            f"whole training {result['train_wall_s']:.1f} s",
            "",
            common.table(STAGE_COLUMNS, rows),
            "",
            common.table(
                ("batch", f"samples/s ({h}x{w})", "s per call", "compile s"),
                sample_rows,
            ),
        ]
    )


def suite(
    config, batch_sizes: Sequence[int], workdir: str | None = None
) -> tuple[str, dict]:
    """`--suite=train`: (tables, raw result) of `config` without stage grids."""
    config = common.override(config, {"train.stage_samples": 0})
    result = run_benchmark(config, batch_sizes, workdir)
    return format_tables(result), result
