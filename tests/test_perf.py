"""Microbenchmarks (agan_jax.perf) on tiny sizes: positive finite seconds, tables
with a row per figure and target columns. No timing is asserted."""

from __future__ import annotations

import json
import math

import pytest

from agan_jax import perf

HW, WIDTH = (10, 12), 8
# One update each and 2 convolutions per network: small programs, fast compiles.
ONE = {"d_steps": 1, "g_steps": 1, "num_layers": 2}


def _ok(x: float) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


def test_iteration_timings_are_positive():
    assert _ok(perf.iteration_update_s(HW, WIDTH, calls=1, lower=0, **ONE))
    assert _ok(perf.iteration_jit_s(HW, WIDTH, calls=1, lower=0, **ONE))
    assert _ok(perf.iteration_scan_s(HW, WIDTH, k=2, calls=1, lower=0, **ONE))


@pytest.mark.parametrize("mode", ["jvp", "double_grad"])
def test_gp_grad_timing_is_positive(mode):
    assert _ok(perf.gp_grad_s(mode, HW, WIDTH, calls=1, num_layers=2))


def test_gp_modes_give_the_same_parameter_gradient():
    import jax
    import numpy as np

    grads = []
    for mode in ("jvp", "double_grad"):
        fn, params, x = perf.gp_param_grad_fn(mode, HW, WIDTH, num_layers=2)
        grads.append(fn(params, x))
    for a, b in zip(*map(jax.tree.leaves, grads), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_stage_compile_and_child_timings_are_positive():
    assert _ok(perf.stage_compile_s(HW, WIDTH, lower=0, **ONE))
    timing = perf.iteration_in_child(hw=HW, width=WIDTH, lower=0, calls=1, **ONE)
    assert _ok(timing.iter_s) and _ok(timing.compile_s)


def test_lever_variants_agree_with_the_plain_step():
    """The proposed lever (XLA backend O1 on CPU) keeps the plain step's result."""
    diff = perf.runner_agreement(
        HW,
        WIDTH,
        {"compile_unit": "update"},
        iters=2,
        lower=0,
        compiler_options=perf.BACKEND_O1,
        common=ONE,
    )
    assert diff < 1e-5


def test_micro_table_has_a_row_per_figure_with_targets():
    measured = {f.key: 0.01 * (i + 1) for i, f in enumerate(perf.FIGURES)}
    del measured["iter_scan_49x64"]
    table = perf.format_micro(measured, "header")
    lines = table.splitlines()
    assert lines[0] == "header"
    head = lines[2]
    for col in ("measured", "issue", "PyTorch", "target"):
        assert col in head
    rows = [ln for ln in lines[4:] if ln.startswith("|")]
    assert len(rows) == len(perf.FIGURES)
    assert all(ln.count("|") == head.count("|") for ln in rows)
    assert (
        "not measured" in rows[[f.key for f in perf.FIGURES].index("iter_scan_49x64")]
    )
    assert "0.610" in table and "2.08" in table and "183" in table


def test_target_table_marks_gpu_rows_and_failures():
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
    table = perf.format_targets(results, backend="cpu")
    assert "| 160 (150 + 10) | 265 | 265 | 185 | 0.60 | 0.400 | 0.61 | yes |" in table
    assert "failed: configs/x does not exist" in table
    assert table.count("not measured (no GPU: backend cpu)") == len(perf.GPU_ROWS)
    assert len(
        [ln for ln in table.splitlines() if "configs/" in ln and "max_size" in ln]
    ) == len(perf.CPU_TARGETS)


def test_run_target_without_config_and_stage_records(tmp_path):
    missing = perf.Target("x", "configs/does_not_exist.py", 64, 1.0, 1.0, 0.7)
    assert "error" in perf.run_target(missing)
    records = [
        {"stage": 0, "iter": 25, "d_loss": 0.1},
        {"event": "stage_done", "stage": 0, "size": [25, 34], "iters_per_s": 10.0},
        {"event": "stage_done", "stage": 1, "size": [30, 40], "iters_per_s": 4.0},
    ]
    (tmp_path / "metrics.jsonl").write_text("\n".join(map(json.dumps, records)))
    rec = perf.stage_records(str(tmp_path))
    assert rec["stages"] == 2 and rec["finest_s_per_it"] == 0.25


def test_pyramid_sizes():
    assert perf.pyramid_sizes((49, 64), 1) == [(37, 48), (49, 64)]
    assert perf.pyramid_sizes((25, 33), 0) == [(25, 33)]
