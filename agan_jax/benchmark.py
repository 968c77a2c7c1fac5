"""Benchmarks: training speed and compile time per stage, sampling throughput.

Used by `python -m launch.bench`; prints markdown tables.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time

import jax
import numpy as np

from agan_jax import sampling, train
from agan_jax.models import make_discriminator


def count_params(tree) -> int:
    """Number of scalars in a params pytree."""
    return int(sum(np.size(x) for x in jax.tree.leaves(tree)))


def stage_param_counts(run: sampling.Run) -> list[tuple[int, int, int]]:
    """(stage, generator params, critic params) of every stage of a run.

    ConSinGAN's generator grows: its row s counts what stage s adds (block s; the
    head and tail at stage 0), so the rows sum to the size of the final network.
    """
    rows = []
    for s in range(run.num_stages):
        h, w = run.sizes[s]
        x = jax.ShapeDtypeStruct((1, h, w, 3), np.float32)
        d = make_discriminator(run.spec, s)
        d_shapes = jax.eval_shape(
            lambda x, d=d: d.init(jax.random.key(0), x, train=False), x
        )
        params = run.g_vars[s]["params"]
        if run.spec.kind == "consingan":
            names = [f"block_{s}"] + (["head", "tail"] if s == 0 else [])
            params = {name: params[name] for name in names}
        g = count_params(params)
        rows.append((s, g, count_params(d_shapes["params"])))
    return rows


def time_sampling(run: sampling.Run, batch_sizes, repeats: int = 3) -> list[dict]:
    """Samples/s and compile time for each batch size (one vmap'd call each)."""
    rows = []
    for b in batch_sizes:
        key = jax.random.key(0)
        t0 = time.perf_counter()
        jax.block_until_ready(sampling.sample(run, key, b, batch_size=b))
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        for r in range(repeats):
            jax.block_until_ready(
                sampling.sample(run, jax.random.fold_in(key, r), b, batch_size=b)
            )
        dt = (time.perf_counter() - t0) / repeats
        rows.append(
            {"batch": b, "compile_s": first - dt, "s": dt, "samples_per_s": b / dt}
        )
    return rows


def environment() -> str:
    """Device, versions and date, for the header of a results table."""
    import flax

    dev = jax.devices()[0]
    return (
        f"device: {dev.platform} ({getattr(dev, 'device_kind', '')}), "
        f"{os.cpu_count()} host cores, jax {jax.__version__}, flax {flax.__version__}, "
        f"python {platform.python_version()}, {time.strftime('%Y-%m-%d')}"
    )


def run_benchmark(config, batch_sizes, workdir: str | None = None) -> dict:
    """Trains `config` (all stages) in a scratch run dir, then times sampling.

    Returns a dict with per-stage training rows, sampling rows, parameter counts
    and the wall time of the whole run.
    """
    own = workdir is None
    workdir = workdir or tempfile.mkdtemp(prefix="agan_bench_")
    t0 = time.perf_counter()
    run = train.train(config, workdir, progress=False)
    train_wall = time.perf_counter() - t0
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        stages = [r for r in map(json.loads, f) if r.get("event") == "stage_done"]
    sample_rows = time_sampling(run, batch_sizes)
    params = stage_param_counts(run)
    if own:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "env": environment(),
        "kind": run.spec.kind,
        "schedule": run.meta.get("schedule"),
        "stages": stages,
        "sampling": sample_rows,
        "params": params,
        "train_wall_s": train_wall,
        "sizes": run.sizes,
    }


def format_tables(result: dict) -> str:
    """Markdown tables of a `run_benchmark` result."""
    lines = [
        f"{result['env']}",
        f"model {result['kind']} ({result['schedule']}), whole training "
        f"{result['train_wall_s']:.1f} s",
        "",
        "| stage | size | iters/s | s/iter | compile s | stage total s | G params | D params |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r, (_, g, d) in zip(result["stages"], result["params"], strict=True):
        h, w = r["size"]
        lines.append(
            f"| {r['stage']} | {h}x{w} | {r['iters_per_s']:.2f} | "
            f"{1 / r['iters_per_s']:.3f} | {r['compile_s']:.1f} | {r['stage_s']:.1f} | "
            f"{g:,} | {d:,} |"
        )
    g_total = sum(g for _, g, _ in result["params"])
    d_total = sum(d for _, _, d in result["params"])
    lines.append(f"| all | | | | | | {g_total:,} | {d_total:,} |")
    h, w = result["sizes"][-1]
    lines += [
        "",
        f"| batch | samples/s ({h}x{w}) | s per call | compile s |",
        "|---|---|---|---|",
    ]
    for r in result["sampling"]:
        lines.append(
            f"| {r['batch']} | {r['samples_per_s']:.1f} | {r['s']:.4f} | "
            f"{max(r['compile_s'], 0):.2f} |"
        )
    return "\n".join(lines)
