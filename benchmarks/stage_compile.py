"""`--suite=stage_compile`: compile seconds per stage of whole trainings, side by
side with other checkouts of this project (an earlier commit: `git worktree add
PATH COMMIT`), in one benchmark run.

Each (config, max_size) trains as `python -m launch.train --config=C
--config.data.max_size=N --config.train.iters_per_stage=ITERS --quiet` in a fresh
process with the persistent cache off (AGAN_JAX_CACHE=off), from each checkout
in turns (A B A B ..., the order reversed every other round); per stage the
median over rounds of `compile_s` of metrics.jsonl (every program of the stage,
compiled in the worker thread; the grid's too unless stage_samples=0), and the
process's wall time, CPU time and peak RSS. `--stage_compile_cache_check`: then
the same training twice with one fresh persistent cache, the second run's
compile seconds (what a second run of the same shapes pays).
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
from collections.abc import Callable, Sequence

from benchmarks import common, train_table


def _train(checkout: str, config: str, size: int, iters: int, extra, env) -> dict:
    """One training from `checkout`; per-stage compile seconds and totals."""
    workdir = tempfile.mkdtemp(prefix="agan_stage_compile_")
    try:
        argv = common.python_module(
            "launch.train",
            f"--config={config}",
            f"--config.data.max_size={size}",
            f"--config.train.iters_per_stage={iters}",
            f"--workdir={workdir}",
            "--quiet",
            *extra,
        )
        m = common.run_measured(argv, env, cwd=checkout)
        if m.returncode != 0:
            return {"error": f"rc {m.returncode}: {m.stderr.strip()[-600:]}"}
        done = train_table.stage_done_records(workdir)
        return {
            "compile_s": [r["compile_s"] for r in done],
            "wait_s": [r["compile_wait_s"] for r in done],
            "sizes": [r["size"] for r in done],
            "wall_s": m.wall_s,
            "cpu_s": m.cpu_s,
            "rss_mib": m.rss_mib,
        }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _median_rows(runs: list[dict]) -> dict:
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return {"error": runs[0]["error"]}
    med = statistics.median
    return {
        "compile_s": [med(c) for c in zip(*(r["compile_s"] for r in ok), strict=True)],
        "wait_s": [med(c) for c in zip(*(r["wait_s"] for r in ok), strict=True)],
        "sizes": ok[0]["sizes"],
        "wall_s": med(r["wall_s"] for r in ok),
        "cpu_s": med(r["cpu_s"] for r in ok),
        "rss_mib": med(r["rss_mib"] for r in ok),
        "rounds": len(ok),
    }


def measure(
    checkouts: dict[str, str],
    cases: Sequence[tuple[str, int]],
    iters: int,
    rounds: int,
    extra: Sequence[str] = (),
    log: Callable[[str], None] = print,
) -> list[dict]:
    """For each (config, max_size) case, each checkout `rounds` times in turns."""
    env = common.child_env()
    out = []
    for config, size in cases:
        runs: dict[str, list] = {name: [] for name in checkouts}
        for r in range(rounds):
            order = list(checkouts) if r % 2 == 0 else list(reversed(checkouts))
            for name in order:
                res = _train(checkouts[name], config, size, iters, extra, env)
                log(f"stage_compile: {config} {size} px {name} round {r}: {res}")
                runs[name].append(res)
        for name in checkouts:
            out.append({"config": config, "max_size": size, "checkout": name})
            out[-1].update(_median_rows(runs[name]))
    return out


def cache_check(checkout: str, config: str, size: int, iters: int, extra) -> dict:
    """The same training twice with one fresh persistent cache directory."""
    cache = tempfile.mkdtemp(prefix="agan_stage_compile_cache_")
    try:
        env = common.child_env(cache=cache)
        first = _train(checkout, config, size, iters, extra, env)
        second = _train(checkout, config, size, iters, extra, env)
        entries = len(os.listdir(cache))
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return {"first": first, "second": second, "cache_entries": entries}


def format_rows(rows: Sequence[dict]) -> str:
    """One row per case and checkout: compile s per stage, total, finest over
    stage 1, compile waited for, wall, CPU and peak RSS."""
    table = []
    for r in rows:
        name = f"{r['config']} {r['max_size']} px"
        if "error" in r:
            table.append((name, r["checkout"], r["error"], "", "", "", "", "", ""))
            continue
        c = r["compile_s"]
        ratio = c[-1] / c[1] if len(c) > 1 and c[1] else None
        table.append(
            (
                name,
                r["checkout"],
                " / ".join(f"{x:.1f}" for x in c),
                f"{sum(c):.1f}",
                common.num(ratio, 2),
                f"{sum(r['wait_s']):.1f}",
                f"{r['wall_s']:.0f}",
                f"{r['cpu_s']:.0f}",
                f"{r['rss_mib']:,.0f}",
            )
        )
    return common.table(
        (
            "case",
            "checkout",
            "compile s per stage",
            "total",
            "finest / stage 1",
            "waited s",
            "wall s",
            "CPU s",
            "peak RSS MiB",
        ),
        table,
    )


def suite(
    checkouts: dict[str, str],
    cases: Sequence[tuple[str, int]],
    iters: int = 2,
    rounds: int = 1,
    extra: Sequence[str] = (),
    cache: bool = False,
    log: Callable[[str], None] = print,
) -> tuple[str, dict]:
    """The table and raw rows; with `cache`, the first case's second run with
    a warm persistent cache, from the first checkout."""
    rows = measure(checkouts, cases, iters, rounds, extra, log)
    text = "\n".join([common.environment(), "", format_rows(rows)])
    result = {"rows": rows}
    if cache:
        (name, path), (config, size) = next(iter(checkouts.items())), cases[0]
        check = cache_check(path, config, size, iters, extra)
        result["cache_check"] = check
        text += (
            f"\n\npersistent cache ({name}, {config} {size} px): first run "
            f"{sum(check['first'].get('compile_s', [0])):.1f} s compile, second "
            f"run {sum(check['second'].get('compile_s', [0])):.1f} s "
            f"({check['cache_entries']} cache entries)"
        )
    return text, result
