"""Whole-process CPU targets: a config trained and sampled as two shell commands.

`python -m launch.train --config=C --config.data.max_size=N --workdir=W --quiet`
then `python -m launch.sample --workdir=W --num_samples=50`, each a fresh
process with the persistent cache off (AGAN_JAX_CACHE=off), so compilation is
counted; the wall time of both beside PyTorch's (references.CPU_TARGETS).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks import common, references
from benchmarks.references import Target


def run_target(
    target: Target,
    iters: int | None = None,
    num_samples: int = 50,
    workdir: str | None = None,
    timeout: float = 7200,
    overrides: Sequence[str] = (),
    cache: str = "off",
) -> dict:
    """Trains and samples `target` as two shell commands; their wall times.

    `iters` overrides the iterations per stage (smoke runs; such rows are not
    comparable to the target); `overrides` are further launch.train flags
    (`--config.train.compile_unit=...`), given after the target's own. XLA_FLAGS
    of this process pass on to both commands; `cache`: their AGAN_JAX_CACHE
    ('off': compilation is counted, as the targets are defined).
    """
    if not os.path.exists(os.path.join(common.ROOT, target.config)):
        return {"key": target.key, "error": f"{target.config} does not exist"}
    own = workdir is None
    workdir = workdir or tempfile.mkdtemp(prefix=f"agan_target_{target.key}_")
    train_args = [
        f"--config={target.config}",
        f"--config.data.max_size={target.max_size}",
        f"--workdir={workdir}",
        "--quiet",
    ]
    if iters is not None:
        train_args.append(f"--config.train.iters_per_stage={iters}")
    train_args += list(overrides)
    commands = (
        common.python_module("launch.train", *train_args),
        common.python_module(
            "launch.sample", f"--workdir={workdir}", f"--num_samples={num_samples}"
        ),
    )
    env = common.child_env(cache=cache)
    result: dict[str, Any] = {
        "key": target.key,
        "iters": iters or 200,
        "overrides": list(overrides),
        "xla_flags": env["XLA_FLAGS"],
    }
    try:
        seconds = []
        for cmd in commands:
            s, p = common.run_command(cmd, env, timeout)
            seconds.append(s)
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


COLUMNS = (
    "config (bundled colusseum, 3+3 updates)",
    "iters/stage",
    "stages",
    "measured s (train + samples)",
    "PyTorch s",
    "target s (1.0x)",
    "aim s (0.7x)",
    "x PyTorch",
    "finest s/it",
    "PyTorch finest s/it",
    "meets",
)


def format_targets(results: dict[str, dict]) -> str:
    """Markdown table: one row per CPU target, measured or why not."""
    rows = []
    for t in references.CPU_TARGETS:
        r = results.get(t.key)
        name = f"{t.config} max_size {t.max_size}"
        ref = (f"{t.pytorch_s:.0f}", f"{t.pytorch_s:.0f}", f"{t.aim_s:.0f}")
        if r is None or "error" in r:
            why = "not measured" if r is None else f"failed: {r['error'][:120]}"
            rows.append((name, "-", "-", why, *ref, "-", "-", t.pytorch_finest_s, "-"))
            continue
        extra = " ".join([*r.get("overrides", []), r.get("xla_flags", "")]).strip()
        if extra:
            name += f" with {extra}"
        comparable = r.get("iters", 200) == 200 and not r.get("overrides")
        meets = ("yes" if r["total_s"] <= t.pytorch_s else "no") if comparable else "-"
        rows.append(
            (
                name,
                r.get("iters", 200),
                r.get("stages", "-"),
                f"{r['total_s']:.0f} ({r['train_s']:.0f} + {r['sample_s']:.0f})",
                *ref,
                f"{r['total_s'] / t.pytorch_s:.2f}",
                f"{r.get('finest_s_per_it', math.nan):.3f}",
                t.pytorch_finest_s,
                meets,
            )
        )
    return common.table(COLUMNS, rows)


def suite(
    only: Sequence[str] | None = None,
    iters: int | None = None,
    overrides: Sequence[str] = (),
    num_samples: int = 50,
    log: Callable[[str], None] | None = None,
    cache: str = "off",
) -> tuple[str, dict]:
    """`--suite=cpu_targets`: (header and table, raw results). The GPU bounds
    are measured by the GPU suite (benchmarks/gpu.py)."""
    header = common.environment()
    results = {}
    for t in references.CPU_TARGETS:
        if only and t.key not in only:
            continue
        if log:
            log(f"{t.key}: training {t.config} at max_size {t.max_size} ...")
        results[t.key] = run_target(
            t, iters=iters, num_samples=num_samples, overrides=overrides, cache=cache
        )
        if log:
            log(f"{t.key}: {json.dumps(results[t.key], default=str)}")
    text = (
        f"{header}; load average at the end {common.load_average():.1f}\n\n"
        f"{format_targets(results)}\n\n"
        "GPU targets: python -m launch.bench --suite=gpu (docs/performance.md)."
    )
    return text, {"env": header, "results": results}
