"""The benchmark harness (benchmarks/, launch.bench) at tiny sizes.

Every suite runs through the function `launch.bench` calls and prints the rows
and columns it promises; one launch of `python -m launch.bench` checks the entry
point. No timing is asserted. The suites share programs through the session's
compilation cache: the GPU suite runs first and the train and cpu_targets
suites train the same tiny settings. Also here, as they belong to the harness's
functions: the microbenchmarks' penalty gradients agree, and the opt-level lever
keeps the plain step's weights (training's own checks are in test_train.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from benchmarks import (
    common,
    gpu,
    levers,
    micro,
    references,
    stage,
    targets,
    train_table,
)
from tests.conftest import ROOT

HW, WIDTH = (10, 12), 8
QUICK = "jax_disable_most_optimizations"


@pytest.fixture(scope="module", autouse=True)
def quick_compiles():
    """Unoptimised XLA here and in the suites' child processes (the variable is
    inherited): shorter compiles, and children share the session's cache."""
    old, old_env = jax.config.values[QUICK], os.environ.get(QUICK.upper())
    jax.config.update(QUICK, True)
    os.environ[QUICK.upper()] = "1"
    yield
    jax.config.update(QUICK, old)
    if old_env is None:
        os.environ.pop(QUICK.upper(), None)
    else:
        os.environ[QUICK.upper()] = old_env


def _tables(text: str) -> list[list[list[str]]]:
    """The markdown tables of a text: rows of cells, header row first."""
    tables, current = [], None
    for line in text.splitlines():
        if line.startswith("|"):
            if current is None:
                current = []
                tables.append(current)
            if not set(line) <= set("|-"):
                current.append([c.strip() for c in line.strip("|").split("|")])
        else:
            current = None
    for t in tables:
        assert all(len(row) == len(t[0]) for row in t), t
    return tables


def _column(table: list[list[str]], name: str) -> list[str]:
    i = table[0].index(name)
    return [row[i] for row in table[1:]]


# ----------------------------------------------------------------------------
# Every suite at tiny sizes.


def test_gpu_suite_tiny():
    """One table: memory (remat at the largest size), conv peak, wall times
    extrapolated to 2000 it/stage, s/it with FLOP/s per stage, samples/s per
    batch, time to first sample cold and warm (two launch.sample children)."""
    plan = gpu.TINY
    text, res = gpu.suite(plan)
    lines = text.splitlines()
    assert lines[0].startswith("device: cpu") and "TINY" in lines[1]
    (table,) = _tables(text)
    assert table[0] == list(gpu.COLUMNS)
    rows = table[1:]
    what = [r[0] for r in rows]

    memory = [r for r in rows if r[0].startswith("peak device memory")]
    assert len(memory) == len(plan.memory_sizes)
    assert all(r[2] == "n/a" and "XLA estimate" in r[3] for r in memory)  # CPU
    assert "train.remat=True" in memory[-1][1]
    assert "remat" not in memory[0][1]
    assert res["memory"][-1]["xla_bytes"] > res["memory"][0]["xla_bytes"] > 0

    assert what.count("conv peak of this device") == 1
    walls = [r for r in rows if r[0] == "training wall time"]
    assert [r[1].split(",")[0] for r in walls] == list(plan.configs)
    assert all("extrapolated to 2000 it/stage" in r[2] for r in walls)
    assert walls[0][4] == "<= 60 s" and walls[1][4] == "<= 120 s"
    per_stage = [r for r in rows if r[0].startswith("s/iteration")]
    assert len(per_stage) == sum(len(t["stages"]) for t in res["train"])
    assert all("GFLOP/it" in r[3] and "% of conv peak" in r[3] for r in per_stage)
    assert all(f["compiled"] > 0 for fs in res["flops"].values() for f in fs)

    sampling = [r for r in rows if r[0].startswith("sampling")]
    assert [r[1].rsplit("batch ", 1)[1] for r in sampling] == [
        str(b) for b in plan.batches
    ]
    assert all(r[2].endswith("samples/s") for r in sampling)
    first = [r for r in rows if r[0].startswith("time to first sample")]
    assert len(first) == 2 and all(r[2].endswith(" s") for r in first), first
    assert first[1][4] == "<= 5 s"
    assert not [r for r in rows if "failed" in r[2]]


def _tiny_overrides() -> dict:
    """The GPU suite's tiny settings, so the next suites reuse its programs."""
    return {**dict(gpu.TINY.values), "train.iters_per_stage": gpu.TINY.iters}


def test_train_suite_tiny():
    config = common.override(common.load_config(gpu.TINY.configs[0]), _tiny_overrides())
    text, res = train_table.suite(config, [1, 4])
    stages_t, sampling_t = _tables(text)
    assert stages_t[0] == list(train_table.STAGE_COLUMNS)
    assert _column(stages_t, "stage") == ["0", "1", "all"]
    g = [int(x.replace(",", "")) for x in _column(stages_t, "G params")]
    assert g[-1] == sum(g[:-1]) > 0
    assert _column(sampling_t, "batch") == ["1", "4"]
    assert "model AGAN(3)" in text


def test_cpu_targets_suite_tiny():
    """One target trained and sampled as two child processes (tiny overrides)."""
    flags = [
        f"--config.{k}={v}"
        for k, v in _tiny_overrides().items()
        if k != "train.iters_per_stage"
    ]
    text, res = targets.suite(
        ["singan_64"],
        iters=gpu.TINY.iters,
        overrides=flags,
        num_samples=4,
        cache=os.environ.get("AGAN_JAX_CACHE", "off"),
    )
    (table,) = _tables(text)
    assert table[0] == list(targets.COLUMNS)
    assert len(table) == 1 + len(references.CPU_TARGETS)
    row = table[1]
    assert "error" not in res["results"]["singan_64"], res
    assert row[1] == str(gpu.TINY.iters) and row[2] == "2"
    assert row[-1] == "-"  # smoke runs are not comparable with the target
    assert all(r[3] == "not measured" for r in table[2:])
    assert "--suite=gpu" in text


# One figure per code path: a runner of unit update, a critic update, the penalty
# gradient, one stage's compile from abstract shapes, a child process.
MICRO_KEYS = (
    "iter_update_49x64",
    "gp_jvp_49x64",
    "d_update_jvp_49x64",
    "compile_update_49x64",
    "iter_97x128",
)


def test_micro_suite_tiny():
    """A figure per code path; the others say 'not measured'."""
    keys = MICRO_KEYS
    text, res = micro.suite("tiny", keys)
    assert "TINY sizes" in text
    (table,) = _tables(text)
    assert table[0][:4] == ["figure", "unit", "measured", "issue (jax 0.10.2)"]
    assert len(table) == 1 + len(references.FIGURES)
    measured = dict(zip([f.key for f in references.FIGURES], table[1:], strict=True))
    for key, row in measured.items():
        assert (row[2] == "not measured") == (key not in keys), row
    assert all(row[6] == "-" for row in table[1:])  # tiny: nothing compared
    assert set(res["measured"]) == set(keys)


def test_levers_suite_tiny():
    """The compile-unit lever's table; backend O1 (the opt-level lever that
    became the CPU default) keeps the plain step's weights."""
    text, res = levers.suite(["compile_unit"], rounds=1, sizes="tiny")
    (table,) = _tables(text)
    assert table[0][0] == "variant" and "max param diff" in table[0]
    assert [r[0] for r in table[1:]] == ["update", "iteration"]
    assert _column(table, "iteration ratio")[0] == "1.00"
    hw, width, lower = levers.TINY.agreement
    diff = levers.runner_agreement(
        hw,
        width,
        {"compile_unit": "update"},
        iters=2,
        lower=lower,
        compiler_options=levers.BACKEND_O1,
        common_settings=dict(levers.TINY.values),
    )
    assert diff < 1e-5


def test_launch_bench_entry_point():
    """`python -m launch.bench` (the one launch of the entry point): the GPU
    suite's conv peak alone, tiny."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "launch.bench", "--suite=gpu", "--gpu_sizes=tiny"]
    p = subprocess.run(
        [*cmd, "--gpu_parts=peak"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert p.returncode == 0, p.stderr[-2000:]
    (table,) = _tables(p.stdout)
    assert [r[0] for r in table[1:]] == ["conv peak of this device"]
    assert "TFLOP/s" in table[1][2]


# ----------------------------------------------------------------------------
# Tables, records and the microbenchmarks' functions.


def test_micro_table_has_a_row_per_figure_with_targets():
    measured = {f.key: 0.01 * (i + 1) for i, f in enumerate(references.FIGURES)}
    del measured["iter_scan_49x64"]
    text = micro.format_micro(measured, "header")
    assert text.splitlines()[0] == "header"
    (table,) = _tables(text)
    for col in ("measured", "issue (jax 0.10.2)", "PyTorch", "target", "meets"):
        assert col in table[0]
    keys = [f.key for f in references.FIGURES]
    assert len(table) == 1 + len(keys)
    assert table[1 + keys.index("iter_scan_49x64")][2] == "not measured"
    assert "0.610" in text and "2.08" in text and "183" in text
    assert _column(table, "meets")[0] == "yes"  # 0.01 s <= PyTorch's 0.61 s


def test_target_table_marks_failures_and_rows_per_target():
    results = {
        "singan_64": {
            "key": "singan_64",
            "iters": 200,
            "train_s": 150.0,
            "sample_s": 10.0,
            "total_s": 160.0,
            "stages": 5,
            "finest_s_per_it": 0.4,
        },
        "consingan_64": {"key": "consingan_64", "error": "configs/x does not exist"},
    }
    text = targets.format_targets(results)
    assert "| 160 (150 + 10) | 265 | 265 | 185 | 0.60 | 0.400 | 0.61 | yes |" in text
    assert "failed: configs/x does not exist" in text
    (table,) = _tables(text)
    assert len(table) == 1 + len(references.CPU_TARGETS)


def test_run_target_without_config_and_stage_records(tmp_path):
    missing = references.Target("x", "configs/does_not_exist.py", 64, 1.0, 1.0, 0.7)
    assert "error" in targets.run_target(missing)
    records = [
        {"stage": 0, "iter": 25, "d_loss": 0.1},
        {"event": "stage_done", "stage": 0, "size": [25, 34], "iters_per_s": 10.0},
        {"event": "stage_done", "stage": 1, "size": [30, 40], "iters_per_s": 4.0},
    ]
    (tmp_path / "metrics.jsonl").write_text("\n".join(map(json.dumps, records)))
    rec = targets.stage_records(str(tmp_path))
    assert rec["stages"] == 2 and rec["finest_s_per_it"] == 0.25


def test_gpu_table_reports_failed_parts_and_extrapolation():
    res = {
        "plan": {"label": "paper sizes", "values": (), "configs": ("configs/a.py",)},
        "seconds": {"memory": 1.0},
        "memory": [
            {"config": "configs/a.py", "max_size": 250, "error": "out of memory"},
            {"config": "configs/a.py", "max_size": 500, "skipped": True},
        ],
        "train": [
            {
                "config": "configs/agan.py:gpu",
                "wall_s": 30.0,
                "iters": 200,
                "full_iters": 2000,
                "extrapolated_s": 120.0,
                "stages": [
                    {"stage": 0, "size": [25, 34], "s_per_it": 0.01},
                    {"stage": 1, "size": [30, 40], "s_per_it": 0.02},
                ],
            }
        ],
    }
    (table,) = _tables(gpu.format_gpu(res))
    assert table[1][2].startswith("120.0 s (extrapolated to 2000 it/stage")
    assert table[1][4] == "<= 60 s"
    assert [r[3] for r in table[2:4]] == ["FLOPs not counted"] * 2
    assert [r[2] for r in table[4:]] == ["failed: out of memory", gpu.SKIPPED]


def test_gpu_suite_time_budget_skips_items():
    text, res = gpu.suite(gpu.TINY, ["peak", "first_sample"], budget_s=0.0)
    (table,) = _tables(text)
    assert [r[2] for r in table[1:]] == [gpu.SKIPPED, gpu.SKIPPED]
    assert "time budget 0 s" in text


def test_pyramid_sizes_and_settings_by_name():
    assert stage.pyramid_sizes((49, 64), 1) == [(37, 48), (49, 64)]
    assert stage.pyramid_sizes((25, 33), 0) == [(25, 33)]
    base = common.settings_of("configs/singan.py")
    s = stage.with_fields(base, d_steps=1, num_layers=2, lambda_gp=0.5)
    assert (s.train.d_steps, s.model.num_layers, s.loss.lambda_gp) == (1, 2, 0.5)
    with pytest.raises(TypeError, match="no train, model or loss setting"):
        stage.with_fields(base, steps=1)
    with pytest.raises(KeyError, match="no field data.size"):
        common.override(common.load_config("configs/agan.py:tiny"), {"data.size": 1})


def test_gp_modes_give_the_same_parameter_gradient():
    grads = []
    for mode in ("jvp", "double_grad"):
        fn, params, x = micro.gp_param_grad_fn(mode, HW, WIDTH, num_layers=2)
        grads.append(fn(params, x))
    for a, b in zip(*map(jax.tree.leaves, grads), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
