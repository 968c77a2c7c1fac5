"""The frozen stages as per-stage programs (agan_jax/train/lower.py): the samples
and grids they make are the whole-pyramid programs' own, each program compiles
once per stage and batch, and the keys sit where the updates read them."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agan_jax import compiler, sampling
from agan_jax.train.group import Models
from agan_jax.train.log import make_reconstructor
from agan_jax.train.lower import LowerStages, call_keys
from agan_jax.train.updates import update_keys
from tests.conftest import tiny_config


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


@pytest.mark.parametrize("step", [0, 6, 12, 30])
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
