"""`--suite=gpu`: the GPU bounds of benchmarks/references.py, in one table.

Parts, in the order they run (`parts` picks some; the order puts the headline
figures first, and memory before anything that allocates more than training):
  train        configs/agan.py:gpu and configs/singan.py:gpu trained (250 px,
               2000 iterations per stage) by `agan_jax.train.train`, wall time,
               persistent cache as the process has it (launch.bench: off). With
               `iters` (--gpu_iters) each stage runs that many iterations and the
               wall time is extrapolated to 2000 per stage from each stage's
               s/iteration: an upper bound, as longer stages hide more of the
               next stage's compile.
  flops        per stage: the training loop's s/iteration (compile excluded: a
               stage compiles ahead), the FLOPs of one iteration by XLA's cost
               analysis of the compiled one-iteration program (on a GPU compiled
               without autotuning, which does not change the count; the
               pre-optimisation count is shown where it differs by over 10%),
               their quotient and its fraction of the conv peak.
  memory       peak device memory while one stage trains: the finest stage of
               configs/agan.py:gpu at max_size 250, 500 and 1000 (the bundled
               image upscaled, stages below initialised, not trained), compile
               unit 'iteration' as on a GPU; from `remat_from` px with
               train.remat=True (jax.checkpoint around the generator).
               `peak_bytes_in_use` is a process-wide high-water mark that cannot
               be reset: rows run in increasing size after training (which
               trains the 250 px stage itself), and a row that did not raise it
               says so. Beside it XLA's estimate of the compiled program
               (arguments + outputs + temporaries), which exists on CPU too.
  peak         a big batched 3x3 convolution timed on the same device: the
               FLOP/s that the achieved figures are compared with.
  sampling     samples/s of the trained AGAN run at 250 px, one vmap'd call per
               batch of 1, 4, ..., 4096 (out-of-memory batches say so), with
               the Sampler's per-stage programs and then its whole-pyramid
               program (`sampling.default_per_stage` picks one per backend).
  first_sample `python -m launch.sample --num_samples=1` on the AGAN run as a fresh
               process, wall time: with an empty persistent cache, then again
               with the cache the first run filled (the child does not
               preallocate device memory: this process holds the preallocation).
With a time budget, items that would start after it are skipped and say so.
`TINY` runs every part on CPU at 16-32 px, 2 iterations per stage (tests).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from agan_jax import train
from agan_jax.errors import UserError
from agan_jax.models import families
from agan_jax.settings import Settings
from agan_jax.train.programs import Stages, plan_stages
from benchmarks import common, references, stage, train_table

PARTS = ("train", "flops", "memory", "peak", "sampling", "first_sample")
SKIPPED = "skipped (time budget)"


@dataclasses.dataclass(frozen=True)
class GpuPlan:
    """What the GPU suite measures, and at which sizes.

    configs: trained in turn (the first one is sampled and measured for memory).
    iters: iterations per stage actually run (None: the config's own, 2000).
    values: config fields set on every config ({'data.max_size': 24}).
    batches: sampling batch sizes. memory_sizes: max_size of each memory row;
    remat_from: rows from this max_size train with train.remat=True.
    conv: (batch, side, channels) of the peak convolution. memory_calls: timed
    calls of each memory row's runner.
    """

    configs: tuple[str, ...] = ("configs/agan.py:gpu", "configs/singan.py:gpu")
    iters: int | None = None
    values: tuple[tuple[str, Any], ...] = ()
    batches: tuple[int, ...] = (1, 4, 16, 64, 256, 1024, 4096)
    memory_sizes: tuple[int, ...] = (250, 500, 1000)
    remat_from: int = 1000
    conv: tuple[int, int, int] = (64, 128, 256)
    memory_calls: int = 2
    label: str = "paper sizes"


PAPER = GpuPlan()
TINY = GpuPlan(
    iters=2,
    values=(
        ("data.max_size", 24),
        ("data.min_size", 16),
        ("pyramid.num_stages", 2),
        ("model.nfc", 8),
        ("model.max_nfc", 8),
        ("model.num_layers", 2),
        ("train.d_steps", 1),
        ("train.g_steps", 1),
        ("train.stage_samples", 0),
        ("train.compile_unit", "iteration"),
        ("train.xla_backend_opt_level", 0),  # as configs' tiny: compiles dominate
    ),
    batches=(1, 4),
    memory_sizes=(24, 32),
    remat_from=32,
    conv=(2, 16, 16),
    memory_calls=1,
    label="TINY sizes (CPU smoke run: figures not comparable)",
)


# ----------------------------------------------------------------------------
# Measurements.


def sampling_layouts(workdir: str, batches, attempt) -> list[dict]:
    """Samples/s of the run in `workdir` per batch size, through the Sampler's
    per-stage programs and then its whole-pyramid program (which one is the
    default on a backend is `sampling.default_per_stage`'s choice); `attempt`
    runs one measurement and reports a failure as a row."""
    from agan_jax import checkpoint

    run = checkpoint.load_run(workdir)
    rows = [
        attempt(
            lambda b=b, p=p: train_table.time_sampling(run, [b], per_stage=p)[0],
            batch=b,
            per_stage=p,
        )
        for p in (True, False)
        for b in batches
    ]
    return [{**r, "size": tuple(run.sizes[-1])} for r in rows]


def device_peak_bytes() -> int | None:
    """`peak_bytes_in_use` of the first device (None where it has no stats)."""
    stats = jax.devices()[0].memory_stats()
    return None if not stats else stats.get("peak_bytes_in_use")


def compiled_bytes(compiled) -> int | None:
    """XLA's estimate of a compiled program's footprint: arguments + outputs -
    aliased (donated) + temporaries; None where XLA gives no analysis."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - backends without the analysis
        return None
    if m is None:
        return None
    return int(
        m.argument_size_in_bytes
        + m.output_size_in_bytes
        - m.alias_size_in_bytes
        + m.temp_size_in_bytes
    )


def flops_of(stage_or_program) -> float | None:
    """FLOPs by XLA's cost analysis of a Compiled or Lowered (None if absent)."""
    try:
        cost = stage_or_program.cost_analysis()
    except Exception:  # noqa: BLE001 - backends without the analysis
        return None
    if isinstance(cost, list | tuple):
        cost = cost[0] if cost else None
    if not cost or "flops" not in cost:
        return None
    return float(cost["flops"])


def conv_peak(batch: int, side: int, channels: int, calls: int = 10) -> dict:
    """FLOP/s of one big batched 3x3 'SAME' convolution, float32 at JAX's default
    precision (as training's convolutions): the device's practical conv peak."""
    kx, kw = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, (batch, side, side, channels), jnp.float32)
    w = jax.random.normal(kw, (3, 3, channels, channels), jnp.float32)
    fn = jax.jit(
        lambda x, w: jax.lax.conv_general_dilated(
            x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
    )
    seconds = common.time_fn(lambda: fn(x, w), calls)
    flops = 2.0 * batch * side * side * channels * channels * 9
    return {
        "shape": (batch, side, channels),
        "s": seconds,
        "flops_per_s": flops / seconds,
    }


def upscaled_image(longer: int, directory: str) -> str:
    """The bundled image resized so its longer side is `longer` px (PNG path):
    the bundled images are 250 px, memory rows need 500 and 1000."""
    from PIL import Image

    img = Image.open(common.BUNDLED_IMAGE).convert("RGB")
    w, h = img.size
    scale = longer / max(w, h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    path = os.path.join(directory, f"bundled_{longer}px.png")
    img.resize(size, Image.BICUBIC).save(path)
    return path


def memory_row(config: str, max_size: int, plan: GpuPlan, scratch: str) -> dict:
    """Trains (a few calls of) the finest stage of `config` at `max_size`; peak
    device memory, XLA's estimate, s/iteration."""
    remat = max_size >= plan.remat_from
    values = {
        **dict(plan.values),
        **({"train.iters_per_stage": plan.iters} if plan.iters else {}),
        "data.image": upscaled_image(max_size, scratch),
        "data.max_size": max_size,
        "train.remat": remat,
        "train.compile_unit": "iteration",
    }
    setup = stage.config_stage(common.settings_of(config, values))
    before = device_peak_bytes()
    run, k, compile_s = stage.build_runner(setup)
    iter_s, _ = common.time_calls(
        run, setup.fresh_state(), setup.data, plan.memory_calls, per_call=k
    )
    peak = device_peak_bytes()
    return {
        "config": config,
        "max_size": max_size,
        "size": setup.sizes[setup.stage],
        "stage": setup.stage,
        "remat": remat,
        "peak_bytes": peak,
        "peak_unchanged": before is not None and peak == before,
        "xla_bytes": compiled_bytes(run),
        "compile_s": compile_s,
        "iter_s": iter_s,
    }


def train_config(config: str, plan: GpuPlan, workdir: str) -> dict:
    """Trains `config` (plan's values and iterations) in workdir; wall time and
    the per-stage records of its metrics.jsonl."""
    base = common.load_config(config)
    full_iters = int(base.train.iters_per_stage)
    values = dict(plan.values)
    if plan.iters is not None:
        values["train.iters_per_stage"] = plan.iters
    cfg = common.override(base, values)
    t0 = time.perf_counter()
    train.train(cfg, workdir, progress=False)
    wall = time.perf_counter() - t0
    records = train_table.stage_done_records(workdir)
    iters = int(cfg.train.iters_per_stage)
    for r in records:
        r["s_per_it"] = r["train_s"] / iters
    extra = sum((full_iters - iters) * r["s_per_it"] for r in records)
    return {
        "config": config,
        "settings": Settings.from_config(cfg),
        "workdir": workdir,
        "wall_s": wall,
        "iters": iters,
        "full_iters": full_iters,
        "extrapolated_s": wall + extra if iters != full_iters else None,
        "stages": records,
    }


def stage_flops(settings: Settings) -> list[dict]:
    """{'compiled', 'lowered'}: FLOPs of one training iteration of every stage,
    by XLA's cost analysis of the one-iteration program (compiled as training
    compiles it, from abstract shapes) and of its pre-optimisation HLO.

    On accelerators the programs compile without autotuning (the count does not
    depend on the algorithms picked), several at a time.
    """
    sizes, _ = stage.config_sizes(settings)
    stages = Stages(families.of(settings.model), settings, sizes)
    plan = plan_stages(stages, 0, len(sizes) - 1, None, None, [], None)
    opts = settings.train.compiler_options
    workers = 1
    if jax.default_backend() != "cpu":
        opts = {**(opts or {}), "xla_gpu_autotune_level": 0}
        workers = max(1, min(4, (os.cpu_count() or 1) // 4))

    def count(p) -> dict:
        # As train.runner.compile_chunk compiles a one-iteration runner (a
        # k-iteration lax.scan's analysis may count its body once).
        lowered = jax.jit(p.fns.iteration, donate_argnums=(0,)).lower(p.state, p.data)
        compiled = lowered.compile(compiler_options=opts)
        return {"compiled": flops_of(compiled), "lowered": flops_of(lowered)}

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return list(pool.map(count, [plan[s] for s in range(len(sizes))]))


def time_first_sample(workdir: str, scratch: str) -> dict:
    """Wall time of `python -m launch.sample --num_samples=1` on the run, as a
    fresh process: with an empty persistent cache, then with the filled one."""
    cache = tempfile.mkdtemp(prefix="first_sample_cache_", dir=scratch)
    # This process holds the device's preallocated memory: the child allocates
    # what it needs instead of preallocating a fraction of the whole device.
    env = {**common.child_env(cache=cache), "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    out: dict[str, Any] = {}
    for name in ("cold", "warm"):
        args = common.python_module(
            "launch.sample",
            f"--workdir={workdir}",
            "--num_samples=1",
            f"--out={os.path.join(scratch, 'first_sample_' + name)}",
        )
        seconds, p = common.run_command(args, env, 900)
        out[name] = seconds if p.returncode == 0 else None
        if p.returncode != 0:
            out[f"{name}_error"] = p.stderr.strip()[-400:]
    return out


def is_oom(e: BaseException) -> bool:
    """Whether an exception is XLA running out of device memory."""
    text = str(e)
    return "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower()


def _failure(e: BaseException) -> str:
    return "out of memory" if is_oom(e) else f"{type(e).__name__}: {str(e)[:300]}"


# ----------------------------------------------------------------------------
# The suite.


def measure(
    plan: GpuPlan = PAPER,
    parts: Sequence[str] = PARTS,
    workdir: str | None = None,
    budget_s: float | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Runs the parts of the suite; raw results.

    An item that fails records its error and the others still run; with
    `budget_s`, items that would start after that many seconds are skipped.
    `workdir`: keep the trained runs there (default: a temporary folder).
    """
    for p in parts:
        if p not in PARTS:
            raise UserError(f"unknown GPU suite part {p!r}; choose from {PARTS}")
    say = log or (lambda msg: None)
    t_start = time.perf_counter()
    own = workdir is None
    root = workdir or tempfile.mkdtemp(prefix="agan_gpu_bench_")
    os.makedirs(root, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix="scratch_", dir=root)
    res: dict[str, Any] = {"plan": dataclasses.asdict(plan), "seconds": {}}

    def late() -> bool:
        return budget_s is not None and time.perf_counter() - t_start > budget_s

    def attempt(fn: Callable[[], Any], **ident) -> dict:
        """fn()'s result, or ident with 'error' (or 'skipped' past the budget)."""
        if late():
            return {**ident, "skipped": True}
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - one failed item, reported
            say(traceback.format_exc())
            return {**ident, "error": _failure(e)}

    def part(name: str, fn: Callable[[], Any]) -> None:
        if name in parts:
            t0 = time.perf_counter()
            res[name] = fn()
            res["seconds"][name] = time.perf_counter() - t0
            # The raw result as it comes, for runs cut short by their time limit.
            raw = json.dumps(res[name], default=str)
            say(f"gpu suite: {name} done in {res['seconds'][name]:.1f} s: {raw[:3000]}")

    runs: dict[str, dict] = {}

    def train_all() -> list[dict]:
        for i, config in enumerate(plan.configs):
            workdir_i = os.path.join(root, f"run{i}")
            runs[config] = attempt(
                lambda c=config, w=workdir_i: train_config(c, plan, w), config=config
            )
        return [{k: v for k, v in r.items() if k != "settings"} for r in runs.values()]

    def flops_all() -> dict:
        return {
            c: attempt(lambda r=r: stage_flops(r["settings"]), config=c)
            for c, r in runs.items()
            if "settings" in r
        }

    first_run = os.path.join(root, "run0")

    def sampling_all() -> list[dict]:
        return sampling_layouts(first_run, plan.batches, attempt)

    try:
        part("train", train_all)
        part("flops", flops_all)
        part(
            "memory",
            lambda: [
                attempt(
                    lambda s=s: memory_row(plan.configs[0], s, plan, scratch),
                    config=plan.configs[0],
                    max_size=s,
                )
                for s in plan.memory_sizes
            ],
        )
        part("peak", lambda: attempt(lambda: conv_peak(*plan.conv)))
        part("sampling", lambda: attempt(sampling_all, rows=True))
        part(
            "first_sample",
            lambda: attempt(lambda: time_first_sample(first_run, scratch)),
        )
    finally:
        shutil.rmtree(root if own else scratch, ignore_errors=True)
    res["budget_s"] = budget_s
    res["total_s"] = time.perf_counter() - t_start
    return res


COLUMNS = ("measurement", "setting", "measured", "derived", "bound")


def _bound(key: str) -> str:
    return references.GPU_BOUNDS[key].bound


def _not_done(entry: dict) -> str | None:
    """'skipped (time budget)' / 'failed: ...' for an item that did not run."""
    if entry.get("skipped"):
        return SKIPPED
    if "error" in entry:
        return f"failed: {entry['error'][:160]}"
    return None


def _gflops(f: dict) -> tuple[float | None, str]:
    """(FLOPs used, text) from a stage's {'compiled', 'lowered'} counts."""
    compiled, lowered = f.get("compiled"), f.get("lowered")
    if compiled:
        text = f"{compiled / 1e9:.3g} GFLOP/it"
        if lowered and abs(lowered - compiled) > 0.1 * compiled:
            text += f" (pre-optimisation count {lowered / 1e9:.3g})"
        return compiled, text
    if lowered:
        return lowered, f"{lowered / 1e9:.3g} GFLOP/it (pre-optimisation count)"
    return None, "FLOPs not counted"


def _memory_rows(entries: list[dict]) -> list[tuple]:
    rows = []
    for r in entries:
        setting = f"{r['config']} max_size {r['max_size']}"
        why = _not_done(r)
        if why:
            rows.append(
                ("peak device memory, training one stage", setting, why, "-", "-")
            )
            continue
        h, w = r["size"]
        measured = common.human_bytes(r["peak_bytes"])
        if r["peak_unchanged"]:
            measured = f"<= {measured} (high-water mark of an earlier row)"
        setting += f": finest stage {r['stage']} ({h}x{w}), unit iteration"
        if r["remat"]:
            setting += ", train.remat=True (jax.checkpoint)"
        rows.append(
            (
                "peak device memory, training one stage",
                setting,
                measured,
                f"XLA estimate {common.human_bytes(r['xla_bytes'])}; "
                f"{common.num(r['iter_s'])} s/it; compile {r['compile_s']:.1f} s",
                _bound("memory_1000" if r["max_size"] == 1000 else "memory"),
            )
        )
    return rows


def _train_rows(entries: list[dict], flops: dict, peak_flops, label) -> list[tuple]:
    rows = []
    for r in entries:
        bound = references.training_bound(r["config"])
        why = _not_done(r)
        if why:
            rows.append(("training wall time", r["config"], why, "-", bound))
            continue
        n = len(r["stages"])
        measured = f"{r['wall_s']:.1f} s"
        if r["extrapolated_s"] is not None:
            measured = (
                f"{r['extrapolated_s']:.1f} s (extrapolated to {r['full_iters']} "
                f"it/stage from each stage's s/it, an upper bound; measured "
                f"{r['wall_s']:.1f} s at {r['iters']} it/stage)"
            )
        waited = sum(s.get("compile_wait_s") or 0 for s in r["stages"])
        rows.append(
            (
                "training wall time",
                f"{r['config']}, {n} stages, {r['full_iters']} it/stage"
                + (f"; {label}" if label else ""),
                measured,
                f"compile waited for: {waited:.1f} s",
                bound,
            )
        )
        counts = flops.get(r["config"])
        counts = counts if isinstance(counts, list) else None
        for i, s in enumerate(r["stages"]):
            h, w = s["size"]
            used, derived = _gflops(counts[i] if counts and i < len(counts) else {})
            if used is not None:
                achieved = used / s["s_per_it"]
                derived += f", {achieved / 1e12:.3g} TFLOP/s"
                if peak_flops:
                    derived += f" = {100 * achieved / peak_flops:.2g}% of conv peak"
            rows.append(
                (
                    "s/iteration (training loop, compile excluded)",
                    f"{r['config']} stage {s['stage']} ({h}x{w})",
                    f"{common.num(s['s_per_it'])} s/it",
                    derived,
                    _bound("flops") if i == n - 1 else "-",
                )
            )
        if isinstance(flops.get(r["config"]), dict):
            why = _not_done(flops[r["config"]])
            rows.append(("FLOPs per iteration", r["config"], why, "-", "-"))
    return rows


def _sampling_rows(entries: list[dict], config: str) -> list[tuple]:
    rows = []
    for r in entries:
        size = "x".join(map(str, r["size"])) if "size" in r else "-"
        programs = {True: "per-stage", False: "whole-pyramid"}.get(r.get("per_stage"))
        setting = (
            f"{config} run, {size}, {programs} programs, batch {r.get('batch', '-')}"
        )
        why = _not_done(r)
        if why:
            measured, derived = why, "-"
        else:
            measured = f"{common.num(r['samples_per_s'])} samples/s"
            derived = (
                f"{r['s'] * 1e3:.3g} ms per call; compile "
                f"{max(r['compile_s'], 0):.2f} s"
            )
        rows.append(
            (
                "sampling (one vmap'd call)",
                setting,
                measured,
                derived,
                _bound("sampling"),
            )
        )
    return rows


def _first_sample_rows(entry: dict, config: str) -> list[tuple]:
    what = "time to first sample, fresh process"
    setting = f"python -m launch.sample --num_samples=1 on the {config} run"
    why = _not_done(entry)
    if why:
        return [(what, setting, why, "-", _bound("first_sample"))]
    rows = []
    for name, cache in (
        ("cold", "empty persistent cache"),
        ("warm", "persistent cache filled by the run above"),
    ):
        s = entry.get(name)
        rows.append(
            (
                what,
                f"{setting}, {cache}",
                "failed" if s is None else f"{s:.2f} s",
                entry.get(
                    f"{name}_error", "whole process: start, load, compile, sample"
                )[:160],
                _bound("first_sample") if name == "warm" else "-",
            )
        )
    return rows


def format_gpu(res: dict, header: str = "") -> str:
    """The one markdown table of a `measure` result (after the header lines):
    training, the conv peak, memory, sampling, time to first sample."""
    plan = res["plan"]
    first = plan["configs"][0]
    peak_rows, peak_flops = [], None
    if "peak" in res:
        peak = res["peak"]
        why = _not_done(peak)
        setting = "3x3 conv, f32 at JAX's default precision (as training)"
        if why:
            peak_rows.append(("conv peak of this device", setting, why, "-", "-"))
        else:
            b, side, c = peak["shape"]
            peak_flops = peak["flops_per_s"]
            peak_rows.append(
                (
                    "conv peak of this device",
                    f"{setting}, batch {b}, {side}x{side}, {c}->{c} ch",
                    f"{peak_flops / 1e12:.3g} TFLOP/s",
                    f"{peak['s'] * 1e3:.3g} ms per call",
                    "-",
                )
            )
    rows: list[tuple] = []
    if "train" in res:
        label = plan["label"] if plan["values"] else ""
        rows += _train_rows(res["train"], res.get("flops") or {}, peak_flops, label)
    rows += peak_rows
    if "memory" in res:
        rows += _memory_rows(res["memory"])
    if "sampling" in res:
        samp = res["sampling"]
        rows += _sampling_rows(samp if isinstance(samp, list) else [samp], first)
    if "first_sample" in res:
        rows += _first_sample_rows(res["first_sample"], first)
    took = ", ".join(f"{k} {v:.0f} s" for k, v in res["seconds"].items())
    budget = res.get("budget_s")
    lines = [header] if header else []
    lines.append(
        f"GPU suite, {plan['label']}; parts took: {took or '-'}"
        + (f" (time budget {budget:.0f} s)" if budget is not None else "")
    )
    return "\n".join(lines) + "\n\n" + common.table(COLUMNS, rows)


def suite(
    plan: GpuPlan = PAPER,
    parts: Sequence[str] = PARTS,
    workdir: str | None = None,
    budget_s: float | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[str, dict]:
    """`--suite=gpu`: (header and the one table, raw results)."""
    header = common.environment()
    res = measure(plan, parts, workdir, budget_s, log)
    return format_gpu(res, header), {"env": header, **res}
