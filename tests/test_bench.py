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
    official,
    references,
    stage,
    targets,
    train_table,
)
from benchmarks import compile as compile_bench
from tests import conftest
from tests.conftest import ROOT

HW, WIDTH = (10, 12), 8


@pytest.fixture(scope="module", autouse=True)
def quick_compiles():
    """Unoptimised XLA here and in the suites' child processes (the variable is
    inherited): shorter compiles; children share the block's own cache."""
    with conftest.quick_compiles(children=True):
        yield


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
    ] * 2
    half = len(plan.batches)
    assert all("per-stage programs" in r[1] for r in sampling[:half])
    assert all("whole-pyramid programs" in r[1] for r in sampling[half:])
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


FAKE_SINGAN_TRAIN = """
import argparse, os, sys
p = argparse.ArgumentParser()
for a in ("--max_size", "--niter", "--manualSeed", "--input_dir", "--input_name"):
    p.add_argument(a)
p.add_argument("--not_cuda", action="store_true")
o = p.parse_args()
assert os.path.exists(os.path.join(o.input_dir, o.input_name)), o
keep = bytearray(64 << 20)  # 64 MiB held: peak RSS of this process
os.makedirs("TrainedModels/" + o.input_name[:-4], exist_ok=True)
with open("calls.log", "a") as f:
    f.write("train %s %s\\n" % (o.max_size, o.niter))
"""
FAKE_SINGAN_SAMPLE = """
import argparse, os
p = argparse.ArgumentParser()
for a in ("--max_size", "--manualSeed", "--input_dir", "--input_name", "--mode",
          "--gen_start_scale"):
    p.add_argument(a)
p.add_argument("--not_cuda", action="store_true")
o = p.parse_args()
assert os.path.isdir("TrainedModels/" + o.input_name[:-4])  # same working dir
d = "Output/RandomSamples/%s/gen_start_scale=0" % o.input_name[:-4]
os.makedirs(d, exist_ok=True)
for i in range(3):
    open(os.path.join(d, "%d.png" % i), "wb").close()
"""


def _fake_singan(tmp_path) -> str:
    """A stand-in for a checkout of the official SinGAN: its two scripts' command
    lines, a known memory use and known outputs (none of its code)."""
    root = tmp_path / "fake_singan"
    root.mkdir()
    (root / "main_train.py").write_text(FAKE_SINGAN_TRAIN)
    (root / "random_samples.py").write_text(FAKE_SINGAN_SAMPLE)
    return str(root)


def test_cpu_targets_side_by_side_tiny(tmp_path):
    """One target, 2 rounds in turns with a stand-in official program: our two
    child processes (tiny overrides) and theirs, medians and ratios."""
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
        rounds=2,
        checkouts={"singan": _fake_singan(tmp_path)},
        python=sys.executable,
    )
    table, split = _tables(text)
    assert table[0] == list(targets.COLUMNS)
    runs = res["results"]["singan_64"]["runs"]
    assert [(r["round"], r["program"]) for r in runs] == [
        (0, "ours"),
        (0, "singan"),
        (1, "singan"),
        (1, "ours"),
    ]
    assert not [r for r in runs if "error" in r], runs
    theirs = [r for r in runs if r["program"] == "singan"]
    assert all(r["samples"] == 3 for r in theirs)
    assert all(r["train"]["rss_mib"] > 64 for r in theirs)  # its 64 MiB buffer
    ours = [r for r in runs if r["program"] == "ours"]
    assert all(r["stages"] == 2 and r["train"]["cpu_s"] > 0 for r in ours)
    rows = [r for r in table[1:] if r[0].startswith("configs/singan.py max_size 64")]
    assert [r[2] for r in rows] == ["ours", "official SinGAN"]
    assert [r[3] for r in rows] == ["2", "2"]
    wall = [float(r[4].replace(",", "")) for r in rows]
    rss = [float(r[6].replace(",", "")) for r in rows]
    assert float(rows[0][7]) == pytest.approx(wall[0] / wall[1], rel=0.02)
    assert float(rows[0][8]) == pytest.approx(rss[0] / rss[1], rel=0.02)
    assert rows[0][9] == "- (smoke run)"  # 2 iterations are not the target
    assert all(r[4] == "not measured" for r in table[1:] if r not in rows)
    assert "No comparison" not in text
    assert split[0] == list(targets.SPLIT_COLUMNS) and len(split) == 2
    s = ours[0]["split"]
    parts = s["outside_stages_s"] + s["compile_wait_s"] + s["loop_s"]
    assert parts + s["stage_rest_s"] == pytest.approx(ours[0]["train"]["wall_s"])
    assert min(s["outside_stages_s"], s["loop_s"], s["stage_rest_s"]) >= 0
    # Peak RSS at the end of each of the 2 stages, never falling, below the
    # process's peak.
    peaks = s["stage_peak_rss_mib"]
    assert len(peaks) == 2 and 0 < peaks[0] <= peaks[1] <= s["train_rss_mib"] + 1
    assert len(split[1][-1].split(" / ")) == 2
    # It ran in temporary working directories: the checkout is left as it was.
    assert sorted(os.listdir(_fake_singan_root(tmp_path))) == [
        "main_train.py",
        "random_samples.py",
    ]


def _fake_singan_root(tmp_path) -> str:
    return str(tmp_path / "fake_singan")


def test_official_checkout_and_commands(tmp_path, monkeypatch):
    monkeypatch.delenv(official.ENV["singan"], raising=False)
    assert official.checkout("singan", None) is None
    with pytest.raises(FileNotFoundError, match="no main_train.py, random_samples.py"):
        official.checkout("singan", str(tmp_path))
    monkeypatch.setenv(official.ENV["singan"], _fake_singan(tmp_path))
    assert official.checkout("singan", None) == _fake_singan_root(tmp_path)
    image = os.path.join(ROOT, "data", "colusseum.png")
    cmd = official.train_command("consingan", "/c", "py", image, 64, 200, 1, "/w")
    assert cmd.argv[:2] == ("py", "/c/main_train.py") and cmd.cwd == "/w"
    assert cmd.argv[cmd.argv.index("--input_name") + 1] == image
    assert "generation" in cmd.argv and "--not_cuda" in cmd.argv
    run = tmp_path / "w" / "TrainedModels" / "colusseum" / "2026_generation"
    run.mkdir(parents=True)
    cmd = official.sample_command(
        "consingan", "/c", "py", image, 64, 1, 50, str(tmp_path / "w")
    )
    assert cmd.argv[cmd.argv.index("--model_dir") + 1] == str(run)
    assert cmd.argv[cmd.argv.index("--num_samples") + 1] == "50"
    # ConSinGAN's evaluate_model.py writes its samples as JPEGs.
    samples = run / "Evaluation" / "random_samples"
    samples.mkdir(parents=True)
    for name in ("gen_sample_0.jpg", "gen_sample_1.jpg", "notes.txt"):
        (samples / name).write_bytes(b"")
    found = official.sample_files("consingan", str(tmp_path / "w"))
    assert [os.path.basename(f) for f in found] == [
        "gen_sample_0.jpg",
        "gen_sample_1.jpg",
    ]


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
    assert table[0][:5] == ["key", "figure", "unit", "measured", "compared with"]
    assert len(table) == 1 + len(references.FIGURES)
    measured = dict(zip([f.key for f in references.FIGURES], table[1:], strict=True))
    for key, row in measured.items():
        assert (row[3] == "not measured") == (key not in keys), row
    assert all(row[7] == "-" for row in table[1:])  # tiny: nothing compared
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


def test_micro_table_compares_rows_of_the_same_run():
    """No stored figure: each row's ratio is to the row of the same run it is
    compared with, and 'meets' says whether it is at most that row's figure."""
    keys = [f.key for f in references.FIGURES]
    measured = {k: 0.01 * (i + 1) for i, k in enumerate(keys)}
    measured["gp_jvp_49x64"] = 0.5 * measured["gp_double_grad_49x64"]
    measured["d_update_jvp_49x64"] = 3.0 * measured["d_update_double_grad_49x64"]
    del measured["iter_scan_49x64"]
    text = micro.format_micro(measured, "header")
    assert text.splitlines()[0] == "header"
    (table,) = _tables(text)
    assert table[0] == list(micro.COLUMNS) and "compared with" in table[0]
    assert "PyTorch" not in text
    row = {r[0]: r[1:] for r in table[1:]}
    assert list(row) == keys
    assert row["iter_scan_49x64"][2] == "not measured"
    assert row["iter_scan_49x64"][3:5] == ["iter_jit_49x64", "-"]
    assert row["gp_jvp_49x64"][4:] == ["0.50", "<= grad-of-grad", "yes"]
    assert row["d_update_jvp_49x64"][4:] == ["3.00", "<= double_grad", "no"]
    ratio = measured["compile_update_49x64"] / measured["compile_iteration_49x64"]
    assert row["compile_update_49x64"][4] == f"{ratio:.2f}"
    assert row["compile_update_49x64"][6] == "-"  # a reference, no bound
    assert row["iter_jit_49x64"][3:5] == ["-", "-"]
    for fig in references.FIGURES:  # every comparison names a row of the table
        assert fig.against is None or fig.against in references.FIGURE_KEYS
        assert not fig.at_most or fig.against


def _run(program, wall, rss, r=0, **kw):
    return {
        "program": program,
        "round": r,
        "wall_s": wall,
        "cpu_s": wall * 1.5,
        "rss_mib": rss,
        **kw,
    }


def test_target_table_medians_ratios_and_failures():
    results = {
        "singan_64": {
            "key": "singan_64",
            "iters": 200,
            "checkout": "/x",
            "runs": [
                _run("ours", 100.0, 900.0),
                _run("singan", 200.0, 1000.0),
                _run("singan", 180.0, 1100.0, 1),
                _run("ours", 120.0, 950.0, 1),
                _run("ours", 110.0, 1000.0, 2),
            ],
        },
        "consingan_64": {
            "key": "consingan_64",
            "iters": 200,
            "checkout": None,
            "runs": [_run("ours", 100.0, 900.0)],
        },
        "agan_64": {
            "key": "agan_64",
            "iters": 200,
            "checkout": "/x",
            "runs": [
                _run("ours", 1, 1, error="train: rc 1: boom"),
                _run("singan", 1, 1),
            ],
        },
        "singan_250": {  # a memory target: time is printed, RSS is the target
            "key": "singan_250",
            "iters": 20,
            "checkout": "/x",
            "runs": [_run("ours", 300.0, 900.0), _run("singan", 100.0, 1000.0)],
        },
    }
    (table,) = _tables(targets.format_targets(results))
    (big,) = [r for r in table[1:] if "max_size 250" in r[0] and r[2] == "ours"]
    assert big[0] == "configs/singan.py max_size 250" and big[1] == "20"
    assert big[7:] == ["3.00", "0.90", "yes (memory target)"]
    assert not [r for r in table[1:] if "consingan.py max_size 250" in r[0]]
    rows = {(r[0].split()[0], r[2]): r for r in table[1:] if "max_size 64" in r[0]}
    ours = rows[("configs/singan.py", "ours")]
    # medians 110 s / 950 MiB against 190 s / 1050 MiB
    assert ours[3:] == ["3", "110", "165", "950", "0.58", "0.90", "yes"]
    assert rows[("configs/singan.py", "official SinGAN")][3:7] == [
        "2",
        "190",
        "285",
        "1,050",
    ]
    alone = rows[("configs/consingan.py", "ours")]
    assert alone[-1] == "no comparison" and alone[7] == "-"
    assert ("configs/consingan.py", "official ConSinGAN") not in rows
    assert rows[("configs/agan.py", "ours")][4].startswith("failed: train: rc 1")
    assert sum(r[4] == "not measured" for r in table[1:]) == 2  # the 128 px rows


def test_run_target_without_config_and_stage_records(tmp_path):
    missing = references.Target("x", "configs/does_not_exist.py", 64, "singan")
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


def test_cache_check_table():
    check = {
        "key": "singan_64",
        "steps": [
            {
                "step": "a",
                "wall_s": 80.0,
                "compile_wait_s": 35.0,
                "new_entries": 2,
                "new_names": ["jit_fn", "jit_iteration"],
                "error": None,
            },
            {
                "step": "b",
                "wall_s": 40.0,
                "compile_wait_s": 5.0,
                "new_entries": 0,
                "new_names": [],
                "error": None,
            },
            {
                "step": "c",
                "wall_s": 1.0,
                "compile_wait_s": None,
                "new_entries": 0,
                "new_names": [],
                "error": "rc 2: no run",
            },
        ],
    }
    (table,) = _tables(targets.format_cache_check(check))
    assert table[1] == ["a", "80", "35", "2 (jit_fn, jit_iteration)"]
    assert table[2][3] == "0" and table[3][1].startswith("failed: rc 2")


def test_compile_suite_rows_and_table():
    """--suite=compile: a row per program with its trace, compile and call
    seconds, in a markdown table; an unknown program is refused."""
    rows = compile_bench.measure(
        "configs/singan.py:tiny", {"train.d_steps": 2}, [0], ["g_step"]
    )
    assert [r["program"] for r in rows] == ["g_step"]
    for r in rows:
        assert r["stage"] == 0 and len(r["size"]) == 2
        assert r["compile_s"] > 0 and r["lower_s"] > 0 and r["call_s"] > 0
    text = compile_bench.format_rows(rows)
    assert "| (default) | 0 |" in text and "| g_step |" in text
    with pytest.raises(ValueError, match="unknown program 'nope'"):
        compile_bench.measure("configs/singan.py:tiny", None, [0], ["nope"])


def test_stage_compile_medians_ratio_and_failures(monkeypatch):
    """`--suite=stage_compile`: per checkout and case the median over rounds
    of each stage's compile seconds, their total and the finest over stage 1;
    a failed training is reported in its row. The trainings are stubbed (one
    real one is in test_launch_bench_entry_point's reach, minutes on CI)."""
    from benchmarks import stage_compile

    runs = {
        "a": [[4.0, 6.0, 9.0], [2.0, 4.0, 5.0], [3.0, 5.0, 6.0]],
        "b": [[1.0, 2.0, 2.0]] * 3,
    }
    calls = []

    def fake_train(checkout, config, size, iters, extra, env):
        calls.append(checkout)
        if config == "broken":
            return {"error": "rc 1: no such config"}
        c = runs[checkout].pop(0)
        return {
            "compile_s": c,
            "wait_s": [1.0] * 3,
            "sizes": [[8, 8]] * 3,
            "wall_s": 10.0,
            "cpu_s": 12.0,
            "rss_mib": 100.0,
        }

    monkeypatch.setattr(stage_compile, "_train", fake_train)
    text, res = stage_compile.suite(
        {"a": "a", "b": "b"}, [("cfg", 32), ("broken", 32)], rounds=3, log=lambda m: 0
    )
    assert calls[:6] == ["a", "b", "b", "a", "a", "b"]  # in turns, reversed
    a, b, broken_a, _ = res["rows"]
    assert a["compile_s"] == [3.0, 5.0, 6.0] and a["rounds"] == 3
    assert b["compile_s"] == [1.0, 2.0, 2.0]
    assert "error" in broken_a
    assert "| cfg 32 px | a | 3.0 / 5.0 / 6.0 | 14.0 | 1.2 | 3.0 |" in text
    assert "| cfg 32 px | b | 1.0 / 2.0 / 2.0 | 5.0 | 1 |" in text
    assert "rc 1: no such config" in text
