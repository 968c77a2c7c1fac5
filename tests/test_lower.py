"""The frozen stages as per-stage programs (agan_jax/train/lower.py): the samples
and grids they make are the whole-pyramid programs' own, each program compiles
once per stage and batch, and the keys sit where the updates read them."""

from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agan_jax import compiler, sampling
from agan_jax.models import families
from agan_jax.state import StageData
from agan_jax.train.group import Models
from agan_jax.train.log import make_reconstructor
from agan_jax.train.lower import LowerStages, call_keys
from agan_jax.train.programs import StagePlan, entering
from agan_jax.train.runner import make_runner
from agan_jax.train.updates import make_stage_fns, update_keys
from tests.conftest import loss_settings, tiny_config, train_settings


def _pyramid(run):
    variables = tuple(run.g_vars)
    amps = jnp.asarray(run.noise_amps, jnp.float32)
    return variables, amps


@pytest.mark.parametrize(
    "fixture, attention", [("tiny_agan_run", True), ("tiny_singan_run", False)]
)
def test_grid_sampler_and_reconstruction_equal_the_whole_pyramid(
    fixture, attention, request
):
    _, run = request.getfixturevalue(fixture)
    variables, amps = _pyramid(run)
    stop = run.num_stages
    lower = LowerStages(run.spec, run.sizes, Models())
    lower.prepare_grid(stop, 1, variables)
    whole = jax.jit(
        sampling.make_sampler(run.spec, run.sizes, 0, stop, with_attention=True)
    )
    got = []
    for i in range(2):  # two samples, one call each (the CPU's grid batch)
        keys = sampling.stream_keys(jax.random.key(3), np.arange(i, i + 1))
        x, attn = lower.sampler(stop, 1)(keys, variables, amps, None)
        want, want_attn = whole(keys, variables, amps, jnp.zeros((1, 1, 3)))
        np.testing.assert_allclose(x, want, atol=1e-5)
        assert len(attn) == len(want_attn) == (stop - 1 if attention else 0)
        for a, b in zip(attn, want_attn, strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5)
        got.append(x[0])
    z_rec = jnp.asarray(run.z_rec)
    rec = lower.reconstruct(stop)(variables, amps, z_rec)
    whole_rec = jax.jit(make_reconstructor(run.spec, run.sizes, stop))
    np.testing.assert_allclose(rec, whole_rec(variables, amps, z_rec), atol=1e-5)
    # Not vacuous: the samples differ from each other and from the reconstruction.
    assert np.abs(np.asarray(got[0] - got[1])).max() > 1e-2
    assert np.abs(np.asarray(got[0] - rec)).max() > 1e-2


@pytest.mark.parametrize("fixture", ["tiny_agan_run", "tiny_singan_run"])
def test_prepare_from_the_stage_programs_equals_the_whole_pyramid(fixture, request):
    # A stage's prepare (its reconstruction input and the RMSE that sets its
    # noise amplitude) made of the frozen stages' programs and the stage's
    # `enter`, against the family's prepare with the whole pyramid in one program.
    _, run = request.getfixturevalue(fixture)
    spec, sizes, s = run.spec, run.sizes, run.num_stages - 1
    ts, ls = train_settings(), loss_settings()
    fns = make_stage_fns(families.of(spec), spec, sizes, s, ts, ls)
    variables, amps = _pyramid(run)
    real = jax.random.uniform(jax.random.key(5), (*sizes[s], 3), minval=-1, maxval=1)
    args = (variables[s], variables[:s], amps[:s], jnp.asarray(run.z_rec), real)
    plan = StagePlan(fns, None, None, (), args)
    lower = LowerStages(spec, sizes, Models())
    prepare = entering(sizes, s, plan, lower, compiler.options())
    (rec, zeros), rmse = prepare(*args)
    (want, want_zeros), want_rmse = fns.prepare(*args)
    assert rec.shape == (*sizes[s], 3) and s >= 1
    np.testing.assert_allclose(rec, want, atol=1e-5)
    np.testing.assert_allclose(rmse, want_rmse, rtol=1e-5)
    np.testing.assert_array_equal(zeros, want_zeros)
    # Not vacuous: the reconstruction is an image, the RMSE that of its error.
    assert float(jnp.std(rec)) > 0.05 and float(rmse) > 0.01
    np.testing.assert_allclose(rmse, np.sqrt(np.mean((real - rec) ** 2)), rtol=1e-5)


def test_each_stage_program_compiles_once_per_batch(tiny_agan_run):
    _, run = tiny_agan_run
    variables, _ = _pyramid(run)
    lower = LowerStages(run.spec, run.sizes, Models())
    for stop in range(1, run.num_stages + 1):  # the grids of every stage
        lower.prepare_grid(stop, 1, variables[:stop])
    lower.prepare(run.num_stages - 1, 3, variables, 3, 6)  # a training call
    names = sorted(lower.programs, key=str)
    stages = run.num_stages
    assert [n for n in names if n[0] == "stage" and n[2] == 1] == [
        ("stage", j, 1) for j in range(stages)
    ]
    assert [n for n in names if n[0] == "stage" and n[2] == 3] == [
        ("stage", j, 3) for j in range(stages - 1)
    ]
    assert ("rec0",) in names and ("keys", 1, 3, 6) in names


@pytest.mark.parametrize("step", [6, 30])
def test_call_keys_sit_where_the_updates_read_them(step):
    """A call of k iterations from update `step`: iteration i's keys at
    (i mod k) x slots (`updates.fed_lower`), each update_keys(key, i, slot)."""
    key, k, slots, per_iter = jax.random.key(5), 4, 3, 6
    keys = call_keys(key, jnp.int32(step), k, slots, per_iter)
    i0 = step // per_iter
    for i in range(i0, i0 + k):
        for t in range(slots):
            want = jax.random.key_data(update_keys(key, i, t)[0])
            got = jax.random.key_data(keys[(i % k) * slots + t])
            np.testing.assert_array_equal(got, want)


def test_compile_workers_auto_and_setting(monkeypatch):
    assert compiler.compile_workers(3, 6) == 3
    assert compiler.compile_workers(0, 6) == 1  # CPU: one stage ahead
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert compiler.compile_workers(0, 6) == 4
    assert compiler.compile_workers(0, 2) == 2


def test_compile_workers_must_be_a_count():
    from agan_jax.errors import UserError
    from agan_jax.settings import Settings

    config = tiny_config("agan")
    config.train.compile_workers = -1
    with pytest.raises(UserError, match="train.compile_workers"):
        Settings.from_config(config)


def test_calls_of_k_iterations_read_the_samples_of_each(tiny_singan_run):
    """Stage 1 fed its lower-stage samples: two calls of 2 iterations (a scan of
    rolled iterations, the accelerators' default) train as four calls of one
    (each iteration reads its own samples at (i mod k) x slots; reading the
    first iteration's twice fails this test)."""
    _, run = tiny_singan_run
    spec, sizes = run.spec, run.sizes[:2]
    # A large Adam epsilon keeps the steps linear in the gradient (see
    # tests/test_train.py), so the comparison sees the inputs, not rounding.
    ts = train_settings(iters=4, compile_unit="rolled", adam_eps=1.0)
    fns = make_stage_fns(families.of(spec), spec, sizes, 1, ts, loss_settings())
    g0, amp0 = run.g_vars[0], jnp.float32(run.noise_amps[0])
    state0 = fns.init_state(jax.random.key(1), g0, None)
    real = jax.random.uniform(jax.random.key(2), (*sizes[1], 3), minval=-1, maxval=1)
    z_rec = jnp.asarray(run.z_rec)
    rec_inputs, rmse = fns.prepare(state0.g_vars, (g0,), amp0[None], z_rec, real)
    data = StageData(
        real=real,
        amps=jnp.asarray([amp0, 0.1 * rmse]),
        rec_inputs=rec_inputs,
        lower_vars=(g0,),
        source=real,
    )
    slots, per_iter = fns.lower_slots, ts.d_steps + ts.g_steps
    lower = LowerStages(spec, sizes, Models())

    def train(k):
        def state_for(n):
            shape = jax.ShapeDtypeStruct((n * slots, *sizes[0], 3), jnp.float32)
            return state0.replace(lower=shape)

        tk = dataclasses.replace(ts, steps_per_call=k)
        run_k = make_runner(fns, tk, state_for, data, 1)[k]
        state = jax.tree.map(jnp.copy, state0)
        for _ in range(ts.iters // k):
            x = lower.draw(state, k, slots, per_iter, (g0,), [amp0])
            state, _ = run_k(state.replace(lower=x), data)
        return state

    one, two = train(1), train(2)
    assert int(two.step) == 4 * per_iter
    chex.assert_trees_all_close(one.g_vars, two.g_vars, atol=1e-5, rtol=1e-5)
    chex.assert_trees_all_close(one.d_vars, two.d_vars, atol=1e-5, rtol=1e-5)
