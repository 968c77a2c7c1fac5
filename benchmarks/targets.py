"""Whole-process CPU targets, side by side with the official programs
(benchmarks/references.py).

Ours: `python -m launch.train --config=C --config.data.max_size=N --workdir=W
--quiet`, then `python -m launch.sample --workdir=W --num_samples=50`, each a fresh
process with the persistent cache off (AGAN_JAX_CACHE=off), so compilation is
counted. Theirs: the official program's training and sampling commands
(benchmarks/official.py) from a checkout the user names. Per target the two run
in turns, A B A B ... (the order reversed every other round, so load drift hits
both alike), `rounds` times each; the table gives the medians of wall time,
user+sys CPU time and peak RSS of each, and our/their ratios. Without a checkout
no comparison is made and the table says so, with our figures alone.

A second table splits our wall time: imports, setup and exit of the training
process (outside the stages), compile waited for, the training loop (the first
call included), the rest of each stage (init, warm start, Orbax save, grids),
and the sampling process; beside it peak RSS per process.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks import common, official, references
from benchmarks.references import AIM, Target

OURS = "ours"


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
        "stage_s": [r.get("stage_s") for r in stages],
        "stage_peak_rss_mib": [r.get("peak_rss_mib") for r in stages],
    }


def _measured(m: common.Measured) -> dict:
    return {"wall_s": m.wall_s, "cpu_s": m.cpu_s, "rss_mib": m.rss_mib}


def _two_commands(commands, env, timeout) -> dict:
    """Runs (name, Command-or-argv, or a function making one once the commands
    before it ran) pairs in order; the totals, or an error."""
    out: dict[str, Any] = {}
    for name, cmd in commands:
        cmd = cmd() if callable(cmd) else cmd
        argv, cwd = (cmd.argv, cmd.cwd) if hasattr(cmd, "argv") else (cmd, None)
        m = common.run_measured(argv, env, cwd=cwd, timeout=timeout)
        out[name] = _measured(m)
        if m.returncode != 0:
            out["error"] = f"{name}: rc {m.returncode}: {m.stderr.strip()[-600:]}"
            return out
    parts = [out[name] for name, _ in commands]
    out.update(
        wall_s=sum(p["wall_s"] for p in parts),
        cpu_s=sum(p["cpu_s"] for p in parts),
        rss_mib=max(p["rss_mib"] for p in parts),
    )
    return out


def run_target(
    target: Target,
    iters: int | None = None,
    num_samples: int = 50,
    workdir: str | None = None,
    timeout: float = 7200,
    overrides: Sequence[str] = (),
    cache: str = "off",
    image: str | None = None,
) -> dict:
    """Trains and samples `target` with our launchers as two processes: wall,
    CPU and peak RSS of each, and the split of the training's wall time.

    `iters` overrides the iterations per stage (smoke runs; such rows are not
    comparable to the target); `overrides` are further launch.train flags, given
    after the target's own. XLA_FLAGS of this process pass on to both commands;
    `cache`: their AGAN_JAX_CACHE ('off': compilation is counted)."""
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
    if image:
        train_args.append(f"--config.data.image={os.path.abspath(image)}")
    iters = target.iters if iters is None else iters
    train_args.append(f"--config.train.iters_per_stage={iters}")
    train_args += list(overrides)
    commands = (
        ("train", common.python_module("launch.train", *train_args)),
        (
            "sample",
            common.python_module(
                "launch.sample",
                f"--workdir={workdir}",
                f"--num_samples={num_samples}",
                f"--out={os.path.join(workdir, 'bench_samples')}",
            ),
        ),
    )
    env = common.child_env(cache=cache)
    result: dict[str, Any] = {"key": target.key, "program": OURS}
    try:
        result.update(_two_commands(commands, env, timeout))
        result.update(stage_records(workdir))
        if "error" not in result:
            result["split"] = time_split(result)
    finally:
        if own:
            shutil.rmtree(workdir, ignore_errors=True)
    return result


def run_official(
    target: Target,
    root: str,
    python: str,
    iters: int,
    num_samples: int = 50,
    timeout: float = 7200,
    image: str | None = None,
    seed: int = 1,
) -> dict:
    """Trains and samples `target`'s image with the official program in `root`
    (a fresh temporary working directory); the same measurements as ours."""
    image = image or common.BUNDLED_IMAGE
    cwd = tempfile.mkdtemp(prefix=f"official_{target.official}_")
    result: dict[str, Any] = {"key": target.key, "program": target.official}
    try:
        train = official.train_command(
            target.official, root, python, image, target.max_size, iters, seed, cwd
        )

        def sample():  # ConSinGAN's names the folder its training made
            return official.sample_command(
                target.official,
                root,
                python,
                image,
                target.max_size,
                seed,
                num_samples,
                cwd,
            )

        result.update(
            _two_commands(
                [("train", train), ("sample", sample)], os.environ.copy(), timeout
            )
        )
        if "error" not in result:
            result["samples"] = len(official.sample_files(target.official, cwd))
    finally:
        official.cleanup(cwd)
    return result


def time_split(r: dict) -> dict:
    """Where our wall time went (seconds), from the process times and the
    per-stage records of metrics.jsonl."""
    stage_s = sum(x or 0.0 for x in r.get("stage_s", []))
    wait = sum(x or 0.0 for x in r.get("compile_wait_s", []))
    loop = sum(x or 0.0 for x in r.get("train_stage_s", []))
    return {
        "outside_stages_s": r["train"]["wall_s"] - stage_s,
        "compile_wait_s": wait,
        "loop_s": loop,
        "stage_rest_s": stage_s - wait - loop,
        "sample_s": r["sample"]["wall_s"],
        "train_rss_mib": r["train"]["rss_mib"],
        "sample_rss_mib": r["sample"]["rss_mib"],
        "stage_peak_rss_mib": r.get("stage_peak_rss_mib", []),
    }


def compare(
    target: Target,
    rounds: int,
    checkout: str | None,
    python: str,
    iters: int | None = None,
    num_samples: int = 50,
    overrides: Sequence[str] = (),
    cache: str = "off",
    image: str | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """`rounds` runs of ours and, with a checkout, of the official program, in
    turns (ours first in even rounds, theirs first in odd ones)."""
    iters = iters or target.iters
    runs: list[dict] = []
    for r in range(rounds):
        order = [OURS, target.official] if r % 2 == 0 else [target.official, OURS]
        for program in order:
            if program == OURS:
                res = run_target(
                    target, iters, num_samples, None, 7200, overrides, cache, image
                )
            elif checkout is None:
                continue
            else:
                res = run_official(
                    target, checkout, python, iters, num_samples, image=image
                )
            res["round"] = r
            runs.append(res)
            if log:
                log(f"{target.key} round {r} {program}: {json.dumps(res, default=str)}")
    return {
        "key": target.key,
        "iters": iters,
        "overrides": list(overrides),
        "official": target.official,
        "checkout": checkout,
        "runs": runs,
    }


def _median(runs: Sequence[dict], field: str) -> float | None:
    values = [r[field] for r in runs if field in r and "error" not in r]
    return statistics.median(values) if values else None


COLUMNS = (
    "target",
    "iters/stage",
    "program",
    "rounds",
    "wall s (median)",
    "CPU s",
    "peak RSS MiB",
    "wall ours/theirs",
    "RSS ours/theirs",
    f"meets (wall <= {AIM}x, RSS <= 1x)",
)


def format_targets(results: dict[str, dict]) -> str:
    """Markdown table: per target our medians, the official program's, ratios."""
    rows = []
    for t in references.CPU_TARGETS:
        c = results.get(t.key)
        name = f"{t.config} max_size {t.max_size}"
        if c is None and not t.time_target:
            continue  # a memory target, run only when named
        if c is None:
            rows.append((name, "-", OURS, 0, "not measured", *["-"] * 5))
            continue
        extra = " ".join(c.get("overrides", [])).strip()
        if extra:
            name += f" with {extra}"
        by = {OURS: [], t.official: []}
        for r in c["runs"]:
            by[r["program"]].append(r)
        mine, theirs = by[OURS], by[t.official]
        errors = [r["error"] for r in c["runs"] if "error" in r]
        comparable = c.get("iters", 200) == t.iters and not c.get("overrides")
        w_ours, w_theirs = _median(mine, "wall_s"), _median(theirs, "wall_s")
        m_ours, m_theirs = _median(mine, "rss_mib"), _median(theirs, "rss_mib")
        if w_ours is not None and w_theirs is not None:
            wr, mr = w_ours / w_theirs, m_ours / m_theirs
            ratio = (f"{wr:.2f}", f"{mr:.2f}")
            meets = "yes" if wr <= AIM and mr <= 1.0 else "no"
            if not t.time_target:
                meets = f"{'yes' if mr <= 1.0 else 'no'} (memory target)"
            if not comparable:
                meets = "- (smoke run)"
        else:
            ratio = ("-", "-")
            meets = "no comparison" if c.get("checkout") is None else "-"
        for program, runs in ((OURS, mine), (official.NAMES[t.official], theirs)):
            if program != OURS and c.get("checkout") is None:
                continue
            if errors and not any("error" not in r for r in runs):
                why = f"failed: {errors[0][:120]}"
                rows.append((name, c["iters"], program, len(runs), why, *["-"] * 5))
                continue
            rows.append(
                (
                    name,
                    c["iters"],
                    program,
                    len(runs),
                    common.num(_median(runs, "wall_s")),
                    common.num(_median(runs, "cpu_s")),
                    common.num(_median(runs, "rss_mib")),
                    *(ratio if program == OURS else ("", "")),
                    meets if program == OURS else "",
                )
            )
    return common.table(COLUMNS, rows)


SPLIT_COLUMNS = (
    "target",
    "outside stages s (imports, load, exit)",
    "compile waited s",
    "training loop s",
    "rest of stages s (init, save, grids)",
    "sampling process s",
    "train RSS MiB",
    "sample RSS MiB",
    "train peak RSS MiB at each stage's end",
)


def format_split(results: dict[str, dict]) -> str:
    """Markdown table: medians of where our wall time and memory went."""
    rows = []
    for t in references.CPU_TARGETS:
        c = results.get(t.key)
        splits = [
            r["split"]
            for r in (c or {}).get("runs", [])
            if r["program"] == OURS and "split" in r
        ]
        if not splits:
            continue
        keys = (
            "outside_stages_s",
            "compile_wait_s",
            "loop_s",
            "stage_rest_s",
            "sample_s",
            "train_rss_mib",
            "sample_rss_mib",
        )
        med = [common.num(statistics.median(s[k] for s in splits)) for k in keys]
        per_stage = [s.get("stage_peak_rss_mib") or [] for s in splits]
        at = [
            [p[i] for p in per_stage if i < len(p) and p[i] is not None]
            for i in range(max(map(len, per_stage)))
        ]
        stage_peaks = " / ".join(
            common.num(statistics.median(v)) if v else "-" for v in at
        )
        rows.append((f"{t.config} max_size {t.max_size}", *med, stage_peaks or "-"))
    return common.table(SPLIT_COLUMNS, rows)


def _cache_entries(path: str) -> set[str]:
    return {f for _, _, files in os.walk(path) for f in files}


def cache_check(
    target: Target,
    iters: int | None = None,
    overrides: Sequence[str] = (),
    num_samples: int = 50,
    image: str | None = None,
) -> dict:
    """The target 'a second run is free of compilation': with a fresh persistent
    cache, `target` trains and samples on the image, then on its mirror image
    (another image, the same stage shapes), then samples that run again. Per
    step: wall, compile waited for, and the cache entries it added (0: every
    program it compiled long enough to be cached came from the cache)."""
    from PIL import Image

    tmp = tempfile.mkdtemp(prefix="agan_cache_check_")
    cache = os.path.join(tmp, "xla")
    os.makedirs(cache)
    src = image or common.BUNDLED_IMAGE
    mirror = os.path.join(tmp, "mirror.png")
    with Image.open(src) as im:
        im.convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(mirror)
    steps = []
    try:
        before: set[str] = set()
        for name, img in (("first image", src), ("mirror image", mirror)):
            r = run_target(
                target, iters, num_samples, None, 7200, overrides, cache, img
            )
            after = _cache_entries(cache)
            steps.append(
                {
                    "step": f"train + sample, {name}",
                    "wall_s": r.get("wall_s"),
                    "compile_wait_s": sum(
                        x or 0.0 for x in r.get("compile_wait_s", [])
                    ),
                    "new_entries": len(after - before),
                    "new_names": sorted(n.split("-")[0] for n in after - before),
                    "error": r.get("error"),
                }
            )
            before = after
        workdir = os.path.join(tmp, "run")
        r = run_target(target, iters, 2, workdir, 7200, overrides, cache, mirror)
        before = _cache_entries(cache)
        m = common.run_measured(
            common.python_module(
                "launch.sample",
                f"--workdir={workdir}",
                f"--num_samples={num_samples}",
                f"--out={os.path.join(tmp, 'again')}",
            ),
            common.child_env(cache=cache),
        )
        steps.append(
            {
                "step": "launch.sample again on a trained run",
                "wall_s": m.wall_s,
                "compile_wait_s": None,
                "new_entries": len(_cache_entries(cache) - before),
                "new_names": sorted(
                    n.split("-")[0] for n in _cache_entries(cache) - before
                ),
                "error": m.stderr[-300:] if m.returncode else None,
            }
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"key": target.key, "steps": steps}


def format_cache_check(check: dict) -> str:
    """Markdown table of cache_check's steps."""
    rows = [
        (
            s["step"],
            common.num(s["wall_s"]) if not s["error"] else f"failed: {s['error'][:80]}",
            common.num(s["compile_wait_s"]),
            f"{s['new_entries']} ({', '.join(s['new_names'])})"
            if s["new_entries"]
            else "0",
        )
        for s in check["steps"]
    ]
    return common.table(
        (
            "step (persistent cache on, empty at first)",
            "wall s",
            "compile waited s",
            "new cache entries",
        ),
        rows,
    )


def suite(
    only: Sequence[str] | None = None,
    iters: int | None = None,
    overrides: Sequence[str] = (),
    num_samples: int = 50,
    log: Callable[[str], None] | None = None,
    cache: str = "off",
    rounds: int = 2,
    checkouts: dict[str, str | None] | None = None,
    python: str | None = None,
    image: str | None = None,
    cache_check_target: str | None = None,
) -> tuple[str, dict]:
    """`--suite=cpu_targets`: (header and tables, raw results). With
    `cache_check_target` (a target key) also the second-run table."""
    header = common.environment()
    checkouts = {
        p: official.checkout(p, (checkouts or {}).get(p)) for p in official.NAMES
    }
    py = official.python(python)
    results = {}
    for t in references.CPU_TARGETS:
        if (only and t.key not in only) or (not only and not t.time_target):
            continue
        if log:
            log(f"{t.key}: {t.config} at max_size {t.max_size}, {rounds} rounds ...")
        results[t.key] = compare(
            t,
            rounds,
            checkouts[t.official],
            py,
            iters,
            num_samples,
            overrides,
            cache,
            image,
            log,
        )
    missing = sorted(
        {official.NAMES[t.official] for t in references.CPU_TARGETS if t.key in results}
        - {official.NAMES[p] for p, c in checkouts.items() if c}
    )
    note = ""
    if missing:
        note = (
            f"No comparison was made with {' and '.join(missing)}: no checkout was "
            "given (--official_singan=DIR / --official_consingan=DIR, or "
            "$AGAN_OFFICIAL_SINGAN / $AGAN_OFFICIAL_CONSINGAN; their interpreter "
            "--official_python). Our figures alone.\n\n"
        )
    used = ", ".join(f"{official.NAMES[p]}: {c}" for p, c in checkouts.items() if c)
    text = (
        f"{header}; load average at the end {common.load_average():.1f}; "
        f"{rounds} rounds, in turns; image "
        f"{os.path.basename(image or common.BUNDLED_IMAGE)}"
        + (f"; {used} run by {py}" if used else "")
        + f"\n\n{note}{format_targets(results)}\n\n"
        f"Where our time went (medians):\n\n{format_split(results)}\n\n"
        "GPU targets: python -m launch.bench --suite=gpu (docs/performance.md)."
    )
    raw = {"env": header, "checkouts": checkouts, "results": results}
    if cache_check_target:
        t = next(t for t in references.CPU_TARGETS if t.key == cache_check_target)
        if log:
            log(f"cache check: {t.key} ...")
        raw["cache_check"] = cache_check(t, iters, overrides, num_samples, image)
        text += (
            f"\n\nA second run with the persistent cache ({t.key}):\n\n"
            + format_cache_check(raw["cache_check"])
        )
    return text, raw
