"""Streaming sampling: `python -m launch.sample` as a fresh process for
N = 1e3, 1e4, 1e5 samples of one trained run; wall time, samples/s and peak RSS.

Each N runs once into a fresh temporary --out (removed afterwards). Wall time is
the whole process (start-up, loading, compiling, sampling, grid); "sampling s" is
what `launch.sample` reports for its drawing-and-writing loop (compilation of the
batch function included). Peak RSS is `os.wait4`'s maximum resident set size of
that child alone. The goal: 1e5 samples with peak RSS under 1 GiB, in
at most 1.2 x 100 x the time of 1e3.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks import common

_REPORTED = re.compile(r"in ([0-9.]+) s \(([0-9.]+) samples/s\)")
RSS_GOAL_MIB = 1024.0
TIME_GOAL = 1.2  # x the time of the smallest N scaled linearly


def train_tiny(workdir: str, log: Callable[[str], None] = print) -> None:
    """Trains configs/agan.py:tiny on the bundled image into `workdir`."""
    log(f"training configs/agan.py:tiny into {workdir}")
    args = common.python_module(
        "launch.train",
        "--config=configs/agan.py:tiny",
        f"--config.data.image={common.BUNDLED_IMAGE}",
        f"--workdir={workdir}",
        "--quiet",
    )
    _, p = common.run_command(args, common.child_env(cache=_cache()), timeout=3600)
    if p.returncode != 0:
        raise RuntimeError(f"training failed: {p.stderr.strip()[-800:]}")


def _cache() -> str:
    return os.environ.get("AGAN_JAX_CACHE", "off")


def measure(
    workdir: str,
    n: int,
    out: str,
    extra: Sequence[str] = (),
    timeout: float = 7200,
) -> dict[str, Any]:
    """One `python -m launch.sample` child: wall s, reported sampling s, peak RSS."""
    args = common.python_module(
        "launch.sample",
        f"--workdir={workdir}",
        f"--num_samples={n}",
        f"--out={out}",
        "--quiet",
        *extra,
    )
    m = common.run_measured(args, common.child_env(cache=_cache()), timeout=timeout)
    result: dict[str, Any] = {
        "n": n,
        "wall_s": m.wall_s,
        "rss_mib": m.rss_mib,
        "returncode": m.returncode,
    }
    if m.returncode != 0:
        result["error"] = m.stderr.strip()[-600:]
        return result
    stdout = m.stdout
    reported = _REPORTED.search(stdout)
    if reported:
        result["sampling_s"] = float(reported.group(1))
    result["files"] = len(os.listdir(out))
    return result


COLUMNS = (
    "N",
    "process wall s",
    "samples/s (process)",
    "sampling s",
    "samples/s (sampling)",
    "wall / linear from smallest N",
    "peak RSS",
)


def format_table(results: Sequence[dict[str, Any]]) -> str:
    """Markdown table, one row per N, and a line on the goal."""
    ok = [r for r in results if "error" not in r]
    base = ok[0] if ok else None
    rows = []
    for r in results:
        if "error" in r:
            rows.append([f"{r['n']:,}", r["error"][:120]] + ["-"] * 5)
            continue
        linear = base["wall_s"] * r["n"] / base["n"] if base else None
        sampling = r.get("sampling_s")
        rows.append(
            [
                f"{r['n']:,}",
                common.num(r["wall_s"]),
                common.num(r["n"] / r["wall_s"]),
                common.num(sampling),
                common.num(r["n"] / sampling if sampling else None),
                common.num(r["wall_s"] / linear if linear else None),
                common.human_bytes(r["rss_mib"] * 2**20),
            ]
        )
    lines = [common.table(COLUMNS, rows)]
    big = [r for r in ok if base is not None and r["n"] > base["n"]]
    if big:
        r = big[-1]
        limit = TIME_GOAL * base["wall_s"] * r["n"] / base["n"]
        meets = r["rss_mib"] < RSS_GOAL_MIB and r["wall_s"] <= limit
        lines.append(
            f"\nGoal for N={r['n']:,}: peak RSS under {RSS_GOAL_MIB:.0f} MiB (measured "
            f"{r['rss_mib']:.0f} MiB) and wall time at most {TIME_GOAL} x "
            f"{r['n'] // base['n']} x the N={base['n']:,} time = {limit:.0f} s "
            f"(measured {r['wall_s']:.0f} s): {'met' if meets else 'NOT met'}."
        )
    return "\n".join(lines)


def suite(
    counts: Sequence[int],
    workdir: str | None = None,
    log: Callable[[str], None] = print,
    extra: Sequence[str] = (),
) -> tuple[str, dict[str, Any]]:
    """Measures every N in `counts` (ascending) on the run in `workdir` (default:
    configs/agan.py:tiny trained into a temporary folder first)."""
    counts = sorted(int(c) for c in counts)
    if not counts or counts[0] < 1:
        raise ValueError(f"stream counts must be positive, got {counts}")
    scratch = tempfile.mkdtemp(prefix="agan_stream_bench_")
    try:
        if workdir is None:
            workdir = os.path.join(scratch, "run")
            train_tiny(workdir, log)
        results = []
        for n in counts:
            out = os.path.join(scratch, f"out_{n}")
            log(f"launch.sample --num_samples={n}")
            r = measure(workdir, n, out, extra)
            shutil.rmtree(out, ignore_errors=True)
            log(f"  {r}")
            results.append(r)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    header = common.environment() + f"; run {workdir}; AGAN_JAX_CACHE={_cache()}"
    text = "Streaming sampling\n" + header + "\n\n" + format_table(results)
    return text, {"workdir": workdir, "results": results}
