"""Training: compile-once, loss goes down, resume equals uninterrupted, modes agree."""

from __future__ import annotations

import dataclasses
import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agan_jax import checkpoint, compiler, pyramid, sampling, train
from agan_jax.errors import UserError
from agan_jax.models import families
from agan_jax.settings import ModelSpec, Settings, TrainSettings
from agan_jax.state import StageData
from agan_jax.train.loop import noise_amp, stage_key
from agan_jax.train.metrics import JsonlWriter
from agan_jax.train.runner import (
    StageLog,
    make_runner,
    resolve_compile_unit,
    run_stage,
)
from agan_jax.train.updates import make_stage_fns
from tests.conftest import loss_settings, model_spec, tiny_config, train_settings

SIZES = [(16, 22), (20, 27)]


def _stage0(spec: ModelSpec, ts: TrainSettings, seed: int = 0):
    """Stage-0 functions, a fresh state and constant data on a smooth image."""
    family = families.of(spec)
    fns = make_stage_fns(family, spec, SIZES, 0, ts, loss_settings(spec.kind))
    h, w = SIZES[0]
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    real = jnp.asarray(np.stack([xx, yy, xx * yy], -1).astype(np.float32) * 0.8)
    state = fns.init_state(stage_key(seed, 0))
    z_rec = family.stage0_rec(spec, seed, SIZES, state.g_vars, real)
    rec_inputs, rmse = fns.prepare(state.g_vars, (), jnp.zeros((0,)), z_rec, real)
    # Stage 0 reconstructs from zeros plus the fixed noise z*, at amplitude 1.
    np.testing.assert_array_equal(rec_inputs[0], np.zeros((h, w, 3)))
    np.testing.assert_array_equal(rec_inputs[1], z_rec)
    assert rmse is None and noise_amp(loss_settings(spec.kind), rmse) == 1.0
    data = StageData(
        real=real,
        amps=jnp.ones((1,), jnp.float32),
        rec_inputs=rec_inputs,
        lower_vars=(),
        source=real,
    )
    return fns, state, data


def _run(fns, ts, state, data, iters):
    runner = make_runner(fns, ts, state, data)
    k = max(runner)
    metrics = []
    for _ in range(iters // k):
        state, m = runner[k](state, data)
        metrics.append(jax.device_get(m))
    return state, metrics


SPEC = model_spec("singan", nfc=8, max_nfc=8)


def test_stage0_reconstruction_noise_is_fixed_by_the_seed():
    """z* of stage 0: one noise channel shared by RGB, drawn from the run's seed."""
    family = families.get("singan")
    a = family.stage0_rec(SPEC, 0, SIZES, None, None)
    assert a.shape == (*SIZES[0], 3)
    np.testing.assert_array_equal(a[..., 0], a[..., 1])
    np.testing.assert_array_equal(a[..., 0], a[..., 2])
    np.testing.assert_array_equal(a, family.stage0_rec(SPEC, 0, SIZES, None, None))
    other = family.stage0_rec(SPEC, 1, SIZES, None, None)
    assert np.abs(np.asarray(a - other)).max() > 1e-3


@pytest.mark.parametrize("unit", ["update", "iteration", "rolled"])
def test_step_traces_once_per_stage(unit):
    # One critic and one generator update per iteration keeps the fused program small.
    ts = train_settings(
        iters=4, compile_unit=unit, steps_per_call=2, d_steps=1, g_steps=1
    )
    fns, state, data = _stage0(SPEC, ts)
    fns = fns._replace(
        iteration=chex.assert_max_traces(fns.iteration, n=1),
        d_step=chex.assert_max_traces(fns.d_step, n=1),
        g_step=chex.assert_max_traces(fns.g_step, n=1),
        rolled=chex.assert_max_traces(fns.rolled, n=1),
    )
    state, metrics = _run(fns, ts, state, data, 4)
    assert int(state.step) == 4 * (ts.d_steps + ts.g_steps)
    assert all(np.isfinite(v).all() for m in metrics for v in m.values())


@pytest.mark.parametrize("fused", ["iteration", "rolled"])
def test_update_and_iteration_units_agree(fused):
    """The split (per-update), fused (per-iteration) and rolled (updates in
    lax.scan loops) programs give one result."""
    # Adam's first steps are ~lr * sign(grad): float noise in near-zero gradients
    # flips signs. A large epsilon makes the update linear in the gradient, so the
    # comparison measures the programs, not Adam's amplification of rounding.
    ts_u = train_settings(
        iters=3, compile_unit="update", adam_eps=1.0, d_steps=2, g_steps=1
    )
    ts_i = dataclasses.replace(ts_u, compile_unit=fused, steps_per_call=1)
    fns, state, data = _stage0(SPEC, ts_u)
    a, _ = _run(fns, ts_u, state, data, 3)
    fns, state, data = _stage0(SPEC, ts_i)
    b, _ = _run(fns, ts_i, state, data, 3)
    chex.assert_trees_all_close(a.g_vars, b.g_vars, atol=1e-5, rtol=1e-5)
    chex.assert_trees_all_close(a.d_vars, b.d_vars, atol=1e-5, rtol=1e-5)


def test_auto_compile_unit_by_backend_stage_and_size():
    big, small = 62 * 82, 62 * 82 - 1
    # SinGAN/AGAN fuse an iteration on CPU from 62x82 px up; ConSinGAN always.
    singan = compiler.fuse_min_pixels("singan")
    assert singan == compiler.fuse_min_pixels("agan") == big
    assert compiler.fuse_min_pixels("consingan") == 0
    assert resolve_compile_unit("update", 3, big, singan) == "update"
    assert resolve_compile_unit("iteration", 0, small, singan) == "iteration"
    if jax.default_backend() == "cpu":
        assert resolve_compile_unit("auto", 0, big, singan) == "update"
        assert resolve_compile_unit("auto", None, big, singan) == "update"
        assert resolve_compile_unit("auto", 1, small, singan) == "update"
        assert resolve_compile_unit("auto", 1, big, singan) == "iteration"
        assert resolve_compile_unit("auto", 1, 100, min_pixels=0) == "iteration"
        assert resolve_compile_unit("auto", 1, small) == "iteration"  # default 0
    else:
        assert resolve_compile_unit("auto", 0, small, singan) == "rolled"
    with pytest.raises(ValueError, match="compile unit must be one of"):
        resolve_compile_unit("stage", 0)


def test_jvp_penalty_matches_double_grad_in_training():
    """The cheap penalty gradient trains exactly like the grad-of-grad reference."""
    ts_j = train_settings(iters=2, compile_unit="update", gp_mode="jvp", adam_eps=1.0)
    ts_d = dataclasses.replace(ts_j, gp_mode="double_grad")
    runs = []
    for ts in (ts_j, ts_d):
        fns, state, data = _stage0(SPEC, ts)
        runs.append(_run(fns, ts, state, data, 2))
    (a, ma), (b, mb) = runs
    chex.assert_trees_all_close(a.d_vars, b.d_vars, atol=1e-5, rtol=1e-4)
    chex.assert_trees_all_close(a.g_vars, b.g_vars, atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(ma[-1]["gp"], mb[-1]["gp"], rtol=1e-4)


def test_cpu_compile_level_trains_like_xla_default():
    """LLVM O1 (the CPU default, agan_jax.compiler) gives O2's result."""
    from agan_jax import compiler

    ts_auto = train_settings(
        iters=2,
        compile_unit="update",
        adam_eps=1.0,
        d_steps=2,
        g_steps=1,
        xla_opt_level=-1,
    )
    ts_o2 = dataclasses.replace(ts_auto, xla_opt_level=2)
    if jax.default_backend() == "cpu":
        assert ts_auto.compiler_options == {"xla_backend_optimization_level": 1}
    assert ts_o2.compiler_options == {"xla_backend_optimization_level": 2}
    runs = []
    for ts in (ts_auto, ts_o2):
        fns, state, data = _stage0(SPEC, ts)
        runs.append(_run(fns, ts, state, data, 2)[0])
    chex.assert_trees_all_close(runs[0].g_vars, runs[1].g_vars, atol=1e-5, rtol=1e-5)
    chex.assert_trees_all_close(runs[0].d_vars, runs[1].d_vars, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="-1..3"):
        compiler.options(7)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("xla_backend_opt_level", 5, "xla_backend_opt_level = 5: must be -1"),
        ("update_rule", "stale", "update_rule = 'stale': must be one of"),
        ("gp_mode", "hessian", "gp_mode = 'hessian': must be one of"),
        ("compile_unit", "stage", "train.compile_unit = 'stage': must be one of"),
        ("adam_eps", -1.0, "train.adam_eps = -1.0: must be a finite number > 0"),
    ],
)
def test_bad_train_settings_are_named(key, value, message):
    cfg = tiny_config("singan")
    cfg.train[key] = value
    with pytest.raises(UserError, match=message):
        Settings.from_config(cfg)


def test_reconstruction_loss_falls():
    ts = train_settings(iters=60, compile_unit="update")
    fns, state, data = _stage0(SPEC, ts)
    _, metrics = _run(fns, ts, state, data, 60)
    rec = [float(m["rec"]) for m in metrics]
    assert np.mean(rec[-5:]) < 0.5 * np.mean(rec[:5]), rec


def test_nonfinite_loss_stops_with_stage_and_iteration(tmp_path):
    ts = train_settings(iters=4, compile_unit="update", log_every=2)
    fns, state, data = _stage0(SPEC, ts)
    data = data.replace(real=data.real.at[0, 0, 0].set(jnp.nan))
    with pytest.raises(train.TrainingDiverged, match=r"stage 0, iteration 2"):
        runners = make_runner(fns, ts, state, data)
        log = StageLog(0, 1, SIZES[0], [JsonlWriter(str(tmp_path / "m.jsonl"))], [None])
        run_stage(state, data, runners, ts, log, False)


def test_resume_equals_uninterrupted(tiny_agan_run, tmp_path):
    """Resuming gives the uninterrupted run; so does compiling each stage only
    when it starts (train.compile_ahead=False, which a resume may change)."""
    workdir, full = tiny_agan_run
    config = tiny_config("agan")
    part = str(tmp_path / "run")
    train.train(config, part, stop_after=0, progress=False)
    assert checkpoint.RunStore(part).finished_stages() == [0]
    config.train.compile_ahead = False
    resumed = train.train(config, part, progress=False)  # resumes at stage 1
    assert resumed.num_stages == full.num_stages == 3
    chex.assert_trees_all_close(resumed.g_vars, full.g_vars, atol=1e-6, rtol=1e-6)
    np.testing.assert_allclose(resumed.noise_amps, full.noise_amps, rtol=1e-6)
    with open(os.path.join(part, "metrics.jsonl")) as f:
        done = [json.loads(line) for line in f if '"stage_done"' in line]
    # Not compiled ahead: each stage waited for its whole compile.
    assert [r["stage"] for r in done] == [0, 1, 2]
    for r in done[1:]:
        assert r["compile_wait_s"] + 0.002 >= r["compile_s"] > 0, r
    # Re-running a finished run trains nothing and changes nothing.
    again = train.train(config, part, progress=False)
    chex.assert_trees_all_close(again.g_vars, full.g_vars, atol=0, rtol=0)


def test_run_outputs(tiny_agan_run):
    """Noise amplitudes: 1 at stage 0 (SinGAN), noise_amp_base x RMSE above;
    metrics.jsonl has every stage."""
    workdir, run = tiny_agan_run
    assert run.noise_amps[0] == 1.0
    reals = run.reals()
    for s in range(1, run.num_stages):
        rec = pyramid.resize(sampling.reconstruct(run, s), run.sizes[s])
        rmse = float(jnp.sqrt(jnp.mean((reals[s] - rec) ** 2)))
        np.testing.assert_allclose(run.noise_amps[s], 0.1 * rmse, rtol=1e-4)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    done = [r for r in records if r.get("event") == "stage_done"]
    assert [r["stage"] for r in done] == [0, 1, 2]
    assert all(r["compile_s"] > 0 and r["iters_per_s"] > 0 for r in done)
    losses = [r for r in records if "rec" in r]
    assert {r["stage"] for r in losses} == {0, 1, 2}
    meta = json.load(open(os.path.join(workdir, "run.json")))
    assert meta["kind"] == "agan" and meta["schedule"] == "circ"
    assert meta["sizes"] == [list(s) for s in run.sizes]


def test_noise_amp_is_one_at_stage0_else_base_times_rmse():
    ls = loss_settings("singan", noise_amp_base=0.1)
    assert noise_amp(ls, None) == 1.0
    amp = noise_amp(ls, jnp.float32(0.25))
    assert isinstance(amp, float) and amp == 0.1 * 0.25
