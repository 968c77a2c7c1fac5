"""Benchmarks on whatever device JAX sees; prints markdown tables (benchmarks/).

  python -m launch.bench                              # --suite=train, configs/agan.py
  python -m launch.bench --config=configs/singan.py --config.train.iters_per_stage=50 \\
      --batch_sizes=1,4,16,64,256,1024
  python -m launch.bench --suite=micro                # microbenchmarks
  python -m launch.bench --suite=cpu_targets --official_singan=PATH \\
      --official_consingan=PATH --official_python=PATH/TO/torch/python  # side by side
  python -m launch.bench --suite=levers               # speed levers, in turns
  python -m launch.bench --suite=cpu_all              # micro + cpu_targets (~45 min)
  python -m launch.bench --suite=gpu --gpu_iters=200 --gpu_budget_s=330  # one H100 loan
  python -m launch.bench --suite=gpu --gpu_sizes=tiny # the same on CPU, tiny sizes
  python -m launch.bench --suite=sampling_stream --stream_counts=1000,10000,100000
  python -m launch.bench --suite=many --many_k=1,2,4   # folder throughput
  python -m launch.bench --suite=compile --compile_config=configs/agan.py:gpu \\
      --compile_flag_set=--xla_gpu_autotune_level=0   # one stage's compile, by program

Suites (code and descriptions in benchmarks/, tables in docs/performance.md):
  train        benchmarks/train_table.py: --config trained once; per stage
               iterations/s, compile time, parameter counts; then samples/s.
  micro        benchmarks/micro.py: the microbenchmarks, each beside the row
               of the same run it is compared with (--micro_sizes=tiny: tiny sizes).
  cpu_targets  benchmarks/targets.py: `launch.train` + `launch.sample` as
               subprocesses for SinGAN and ConSinGAN at max_size 64 and 128 and
               AGAN at 64, in turns with the official programs (checkouts you
               provide; without them our figures alone), medians of
               --target_rounds rounds; memory targets at 250 px (20 it/stage)
               when named: --only=singan_250,consingan_250.
  levers       benchmarks/levers.py: XNNPACK, compile unit and optimisation
               level variants compared in turns (--lever_sizes=tiny: tiny sizes).
  cpu_all      micro, then cpu_targets.
  gpu          benchmarks/gpu.py: training wall time of configs/agan.py:gpu and
               configs/singan.py:gpu, s/iteration and FLOP/s per stage beside a
               conv peak, samples/s by batch, time to first sample, peak memory
               at 250/500/1000 px; one table.
  sampling_stream  benchmarks/streaming.py: `launch.sample` as a fresh process
               for each --stream_counts N on --workdir (default: configs/agan.py:tiny
               trained first): wall time, samples/s, peak RSS.
  stage_compile  benchmarks/stage_compile.py: compile seconds per stage of
               whole trainings (--stage_compile_cases), from each of --checkouts
               in turns (this commit beside an earlier one), cache off.
  compile      benchmarks/compile.py: one stage's programs (update, iteration,
               scan, double-grad penalty, rolled) traced, lowered, compiled and called,
               in this process and under each --compile_flag_set in a child.

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

SUITES = (
    "train",
    "micro",
    "cpu_targets",
    "levers",
    "cpu_all",
    "gpu",
    "sampling_stream",
    "compile",
    "stage_compile",
    "many",
)

_SUITE = flags.DEFINE_enum("suite", "train", SUITES, "What to measure.")
_CONFIG = config_flags.DEFINE_config_file(
    "config", "configs/agan.py", "Config to benchmark (suite train).", lock_config=True
)
_BATCHES = flags.DEFINE_list(
    "batch_sizes",
    ["1", "4", "16", "64", "256"],
    "train: sampling batch sizes (1024 takes minutes per call on a 2-core CPU).",
)
_WORKDIR = flags.DEFINE_string(
    "workdir",
    None,
    "train, gpu: keep the trained run(s) here (default: temp); sampling_stream: "
    "the trained run to sample (default: configs/agan.py:tiny trained in a temp).",
)
_STREAM_COUNTS = flags.DEFINE_list(
    "stream_counts",
    ["1000", "10000", "100000"],
    "sampling_stream: numbers of samples, one launch.sample process each.",
)
_MANY_CONFIG = flags.DEFINE_string(
    "many_config", "configs/agan.py", "many: the config every image trains with."
)
_MANY_K = flags.DEFINE_list("many_k", ["1", "2", "4"], "many: group sizes K.")
_MANY_FIT = flags.DEFINE_string(
    "many_fit", "48x64", "many: data.fit of every image (one group)."
)
_MANY_ITERS = flags.DEFINE_integer(
    "many_iters", None, "many: iterations per stage (default: the config's)."
)
_MANY_IMAGES = flags.DEFINE_string(
    "many_images",
    None,
    "many: a folder of images (default: variants of data/colusseum.png).",
)
_MANY_SINGLES = flags.DEFINE_integer(
    "many_singles",
    None,
    "many: images trained alone (default max K); larger K: K x their mean.",
)
_MANY_FLAGS = flags.DEFINE_multi_string(
    "many_flag", [], "many: a further flag of both launchers, repeatable."
)
_JSON = flags.DEFINE_string("json", None, "Also write the raw results to this file.")
_MICRO_SIZES = flags.DEFINE_enum(
    "micro_sizes", "full", ("full", "tiny"), "micro: full sizes or tiny ones."
)
_ONLY = flags.DEFINE_list(
    "only",
    None,
    "micro: figure keys (benchmarks.references.FIGURES); cpu_targets: target keys "
    "(singan_64, consingan_64, agan_64, singan_128, consingan_128; memory targets "
    "singan_250, consingan_250). Default: the micro figures, the five time targets.",
)
_TARGET_ITERS = flags.DEFINE_integer(
    "target_iters",
    None,
    "cpu_targets: iterations per stage instead of the target's (200; 20 for the "
    "250 px memory targets): smoke runs, not comparable.",
)
_TARGET_SAMPLES = flags.DEFINE_integer(
    "target_samples", 50, "cpu_targets: samples drawn by launch.sample."
)
_OVERRIDES = flags.DEFINE_multi_string(
    "target_flag",
    [],
    "cpu_targets: a further launch.train flag, repeatable "
    "(--target_flag=--config.train.compile_unit=iteration).",
)
_TARGET_ROUNDS = flags.DEFINE_integer(
    "target_rounds",
    2,
    "cpu_targets, stage_compile: rounds per target; each round runs ours and the "
    "official program (stage_compile: each checkout) in turns (A B, then B A).",
)
_TARGET_IMAGE = flags.DEFINE_string(
    "target_image", None, "cpu_targets: training image (default data/colusseum.png)."
)
_CACHE_CHECK = flags.DEFINE_string(
    "target_cache_check",
    None,
    "cpu_targets: a target key (e.g. singan_64): also train it with a fresh "
    "persistent cache on the image and on its mirror image, then sample again, and "
    "count the cache entries each step added (a second run should compile "
    "nothing).",
)
_OFFICIAL_SINGAN = flags.DEFINE_string(
    "official_singan",
    None,
    "cpu_targets: a local checkout of the official SinGAN that runs on your PyTorch "
    "(default $AGAN_OFFICIAL_SINGAN; none: no comparison).",
)
_OFFICIAL_CONSINGAN = flags.DEFINE_string(
    "official_consingan",
    None,
    "cpu_targets: a local checkout of the official ConSinGAN "
    "(default $AGAN_OFFICIAL_CONSINGAN; none: no comparison).",
)
_OFFICIAL_PYTHON = flags.DEFINE_string(
    "official_python",
    None,
    "cpu_targets: the interpreter with PyTorch that runs the official programs "
    "(default $AGAN_OFFICIAL_PYTHON, else this one).",
)
_ROUNDS = flags.DEFINE_integer(
    "rounds", 6, "levers: timed turns per variant (compile_rounds: 2)."
)
_LEVERS = flags.DEFINE_list(
    "levers",
    ["xnnpack", "compile_unit", "opt_level"],
    "levers: which ones (xnnpack, xnnpack_child, compile_unit, opt_level).",
)
_LEVER_SIZES = flags.DEFINE_enum(
    "lever_sizes", "full", ("full", "tiny"), "levers: full sizes or tiny."
)
_GPU_SIZES = flags.DEFINE_enum(
    "gpu_sizes",
    "paper",
    ("paper", "tiny"),
    "gpu: paper sizes (250 px training, 250/500/1000 px memory, batches to 4096) "
    "or tiny ones (16-48 px, CPU smoke run of about a minute).",
)
_GPU_ITERS = flags.DEFINE_integer(
    "gpu_iters",
    None,
    "gpu: iterations per stage actually trained; the wall time is extrapolated to "
    "2000 per stage from each stage's s/iteration (default: 2000, no extrapolation).",
)
_GPU_PARTS = flags.DEFINE_list(
    "gpu_parts",
    ["train", "flops", "memory", "peak", "sampling", "first_sample"],
    "gpu: which parts to run (flops, sampling and first_sample need train); "
    "they run in this order whatever the order given.",
)
_GPU_BUDGET = flags.DEFINE_float(
    "gpu_budget_s",
    None,
    "gpu: seconds after which no further item starts (skipped items say so), so "
    "the table prints within a short device loan.",
)
_GPU_BATCHES = flags.DEFINE_list(
    "gpu_batches", None, "gpu: sampling batch sizes (default 1, 4, ..., 4096)."
)
_GPU_MEMORY = flags.DEFINE_list(
    "gpu_memory_sizes", None, "gpu: max_size of each memory row (default 250,500,1000)."
)
_COMPILE_CONFIG = flags.DEFINE_string(
    "compile_config",
    None,
    "compile: config name (default configs/agan.py:gpu on an accelerator, "
    "configs/agan.py on CPU).",
)
_COMPILE_SET = flags.DEFINE_multi_string(
    "compile_set", [], "compile: a config field, repeatable (train.gp_mode=jvp)."
)
_COMPILE_STAGES = flags.DEFINE_list(
    "compile_stages", ["0", "-1"], "compile: stage indices (negative: from the finest)."
)
_COMPILE_PROGRAMS = flags.DEFINE_list(
    "compile_programs",
    None,
    "compile: which programs (default: all of benchmarks/compile.py's PROGRAMS).",
)
_COMPILE_FLAG_SETS = flags.DEFINE_multi_string(
    "compile_flag_set",
    [],
    "compile: XLA_FLAGS of a further child run, repeatable (one row set each).",
)
_CHECKOUTS = flags.DEFINE_list(
    "checkouts",
    ["this=."],
    "stage_compile: NAME=PATH checkouts of this project trained in turns "
    "(before=/tmp/before,after=.; `git worktree add /tmp/before COMMIT`).",
)
_STAGE_CASES = flags.DEFINE_list(
    "stage_compile_cases",
    ["configs/agan.py:64", "configs/singan.py:64"],
    "stage_compile: CONFIG:MAX_SIZE cases.",
)
_STAGE_ITERS = flags.DEFINE_integer(
    "stage_compile_iters", 2, "stage_compile: iterations per stage."
)
_STAGE_EXTRA = flags.DEFINE_multi_string(
    "stage_compile_flag",
    [],
    "stage_compile: a further launch.train flag, repeatable "
    "(--config.train.stage_samples=0).",
)
_STAGE_CACHE = flags.DEFINE_bool(
    "stage_compile_cache_check",
    False,
    "stage_compile: also train the first case twice with one fresh persistent "
    "cache (the first checkout).",
)


def _log(msg: str) -> None:
    print(msg, flush=True)


def suite_train():
    from benchmarks import train_table

    return train_table.suite(
        _CONFIG.value, [int(b) for b in _BATCHES.value], _WORKDIR.value
    )


def suite_micro():
    from benchmarks import micro

    return micro.suite(_MICRO_SIZES.value, _ONLY.value, _log)


def suite_cpu_targets():
    from benchmarks import targets

    return targets.suite(
        _ONLY.value,
        _TARGET_ITERS.value,
        _OVERRIDES.value,
        _TARGET_SAMPLES.value,
        _log,
        rounds=_TARGET_ROUNDS.value,
        checkouts={
            "singan": _OFFICIAL_SINGAN.value,
            "consingan": _OFFICIAL_CONSINGAN.value,
        },
        python=_OFFICIAL_PYTHON.value,
        image=_TARGET_IMAGE.value,
        cache_check_target=_CACHE_CHECK.value,
    )


def suite_levers():
    from benchmarks import levers

    return levers.suite(_LEVERS.value, _ROUNDS.value, _LEVER_SIZES.value, _log)


def suite_cpu_all():
    text_m, micro = suite_micro()
    print(text_m + "\n", flush=True)
    text_t, cpu = suite_cpu_targets()
    return text_t, {"micro": micro, "cpu_targets": cpu}


def suite_gpu():
    import dataclasses

    from benchmarks import gpu

    plan = gpu.TINY if _GPU_SIZES.value == "tiny" else gpu.PAPER
    changes = {}
    if _GPU_ITERS.value is not None:
        changes["iters"] = _GPU_ITERS.value
    if _GPU_BATCHES.value:
        changes["batches"] = tuple(int(b) for b in _GPU_BATCHES.value)
    if _GPU_MEMORY.value:
        changes["memory_sizes"] = tuple(int(s) for s in _GPU_MEMORY.value)
    plan = dataclasses.replace(plan, **changes)
    return gpu.suite(plan, _GPU_PARTS.value, _WORKDIR.value, _GPU_BUDGET.value, _log)


def suite_sampling_stream():
    from benchmarks import streaming

    counts = [int(c) for c in _STREAM_COUNTS.value]
    return streaming.suite(counts, _WORKDIR.value, _log)


def suite_compile():
    import ast

    import jax

    from benchmarks import compile as compile_bench

    config = _COMPILE_CONFIG.value or (
        "configs/agan.py" if jax.default_backend() == "cpu" else "configs/agan.py:gpu"
    )
    overrides = {}
    for item in _COMPILE_SET.value:
        key, _, text = item.partition("=")
        try:
            overrides[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            overrides[key] = text
    return compile_bench.suite(
        config,
        overrides,
        [int(s) for s in _COMPILE_STAGES.value],
        _COMPILE_PROGRAMS.value or compile_bench.PROGRAMS,
        _COMPILE_FLAG_SETS.value,
        _log,
    )


def suite_many():
    from benchmarks import many

    return many.suite(
        _MANY_CONFIG.value,
        [int(k) for k in _MANY_K.value],
        _MANY_FIT.value,
        _MANY_ITERS.value,
        _MANY_IMAGES.value,
        _log,
        _MANY_FLAGS.value,
        _MANY_SINGLES.value,
    )


def suite_stage_compile():
    from agan_jax.errors import UserError
    from benchmarks import stage_compile

    checkouts, cases = {}, []
    for item in _CHECKOUTS.value:
        name, sep, path = item.partition("=")
        if not sep or not os.path.isdir(path):
            raise UserError(f"--checkouts wants NAME=PATH of a directory, got {item!r}")
        checkouts[name] = os.path.abspath(path)
    for item in _STAGE_CASES.value:
        config, _, size = item.rpartition(":")
        if not config or not size.isdigit():
            raise UserError(
                f"--stage_compile_cases wants CONFIG:MAX_SIZE, got {item!r} "
                "(configs/agan.py:64)"
            )
        cases.append((config, int(size)))
    return stage_compile.suite(
        checkouts,
        cases,
        _STAGE_ITERS.value,
        _TARGET_ROUNDS.value,
        _STAGE_EXTRA.value,
        _STAGE_CACHE.value,
        _log,
    )


def main(argv: list[str]) -> None:
    del argv
    suite = {
        "train": suite_train,
        "micro": suite_micro,
        "cpu_targets": suite_cpu_targets,
        "levers": suite_levers,
        "cpu_all": suite_cpu_all,
        "gpu": suite_gpu,
        "sampling_stream": suite_sampling_stream,
        "compile": suite_compile,
        "stage_compile": suite_stage_compile,
        "many": suite_many,
    }[_SUITE.value]
    text, result = suite()
    print(text, flush=True)
    if _JSON.value:
        with open(_JSON.value, "w") as f:
            json.dump(result, f, indent=1, default=str)


if __name__ == "__main__":
    common.run(main)
