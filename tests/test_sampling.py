"""Sampling: vmap equals alone, sizes, start stage, determinism, attention maps."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agan_jax import forward, pyramid, sampling
from agan_jax.errors import UserError
from agan_jax.models import families, singan


def test_vmapped_sample_equals_sample_drawn_alone(tiny_agan_run):
    _, run = tiny_agan_run
    key = jax.random.key(3)
    batch = np.asarray(sampling.sample(run, key, 4))
    keys = sampling.stream_keys(key, np.arange(4))
    f = jax.jit(sampling.make_sampler(run.spec, run.sizes, 0, run.num_stages))
    base = jnp.zeros((1, 1, 3), jnp.float32)
    for i in range(4):
        alone = np.asarray(
            f(keys[i : i + 1], run.g_vars, jnp.asarray(run.noise_amps), base)
        )
        np.testing.assert_allclose(batch[i], alone[0], atol=1e-5)
    # The samples differ from each other.
    assert np.abs(batch[0] - batch[1]).mean() > 1e-3


def test_sample_i_has_the_key_fold_in_key_i(tiny_singan_run):
    """Sampler.sample derives keys as streamed sampling does: sample i of `key` is
    drawn from fold_in(key, i), so the first k of n samples are sample(key, k) and
    Sampler.draw of the same indices. Checked with non-partitionable threefry
    keys (the default before jax 0.5), under which split(key, n)[i] is not
    fold_in(key, i)."""
    _, run = tiny_singan_run
    key = jax.random.key(11)
    with jax.threefry_partitionable(False):
        sampler = sampling.Sampler(run)
        five = np.asarray(sampler.sample(key, 5, batch_size=5))
        np.testing.assert_allclose(five[:2], sampler.sample(key, 2), atol=1e-6)
        drawn = np.asarray(sampler.draw(key, [3, 1]))
        np.testing.assert_allclose(drawn, five[[3, 1]], atol=1e-6)
        f = jax.jit(sampling.make_sampler(run.spec, run.sizes, 0, run.num_stages))
        base = jnp.zeros((1, 1, 3), jnp.float32)
        amps = jnp.asarray(run.noise_amps)
        alone = f(jax.random.fold_in(key, 4)[None], run.g_vars, amps, base)
        np.testing.assert_allclose(five[4], np.asarray(alone)[0], atol=1e-5)


def test_batches_do_not_change_samples(tiny_singan_run):
    _, run = tiny_singan_run
    key = jax.random.key(0)
    a = sampling.sample(run, key, 5, batch_size=2)
    b = sampling.sample(run, key, 5, batch_size=8)
    np.testing.assert_allclose(a, b, atol=1e-5)
    c = sampling.sample(run, key, 5)  # default_batch_size(): 4 on CPU
    np.testing.assert_allclose(a, c, atol=1e-5)
    with pytest.raises(UserError, match="batch_size"):
        sampling.sample(run, key, 5, batch_size=-1)


def test_deterministic_for_a_key(tiny_singan_run):
    _, run = tiny_singan_run
    a = sampling.sample(run, jax.random.key(7), 3)
    b = sampling.sample(run, jax.random.key(7), 3)
    c = sampling.sample(run, jax.random.key(8), 3)
    np.testing.assert_array_equal(a, b)
    assert np.abs(np.asarray(a) - np.asarray(c)).mean() > 1e-3


def test_arbitrary_size(tiny_agan_run):
    _, run = tiny_agan_run
    h, w = run.sizes[-1]
    out = sampling.sample(run, jax.random.key(0), 2, scale=(1.5, 2.0))
    assert out.shape == (2, round(h * 1.5), round(w * 2.0), 3)
    assert np.isfinite(np.asarray(out)).all()


def test_start_stage_uses_reconstruction_below(tiny_agan_run):
    _, run = tiny_agan_run
    s = run.num_stages - 1
    key = jax.random.key(1)
    out = sampling.sample(run, key, 3, start_stage=s)
    # Independent recomputation: the reconstruction up to stage s-1, then stage s
    # with the noise of sample i's key.
    base = sampling.reconstruct(run, s)
    gen = families.of(run.spec).make_generator(run.spec, s)
    for i in range(3):
        k = jax.random.fold_in(key, i)
        z = forward.draw_noise(run.spec, jax.random.fold_in(k, s), run.sizes[s], s)
        prev = pyramid.resize(base, run.sizes[s])
        ref, _ = singan.apply_stage(gen, run.g_vars[s], prev, z, run.noise_amps[s])
        np.testing.assert_allclose(out[i], ref, atol=1e-5)
    # Fresh noise only at the finest stage varies less than fresh noise everywhere.
    spread = lambda x: float(np.asarray(x).std(axis=0).mean())  # noqa: E731
    assert spread(out) < spread(sampling.sample(run, key, 3))


def test_start_stage_bounds(tiny_agan_run):
    _, run = tiny_agan_run
    with pytest.raises(UserError, match="start_stage=3 is outside"):
        sampling.sample(run, jax.random.key(0), 1, start_stage=3)
    with pytest.raises(UserError, match="number of samples"):
        sampling.sample(run, jax.random.key(0), 0)


def test_attention_maps(tiny_agan_run, tiny_singan_run):
    _, run = tiny_agan_run
    images, attns = sampling.sample(run, jax.random.key(0), 2, with_attention=True)
    assert len(attns) == run.num_stages - 1  # every AGAN stage above 0
    for s, a in zip(range(1, run.num_stages), attns, strict=True):
        assert a.shape == (2, *run.sizes[s], 3)
        assert float(a.min()) > 0.0 and float(a.max()) < 1.0
    _, srun = tiny_singan_run
    _, attns = sampling.sample(srun, jax.random.key(0), 2, with_attention=True)
    assert attns == []


def _same_call_compiles_nothing(sampler, run, key) -> dict:
    """Samples twice with the same arguments: the second call adds nothing to
    the cache; the samples equal a fresh Sampler's (the module-level function,
    the backend's default programs). Returns the cache after the first call."""
    a = sampler.sample(key, 3, batch_size=2)
    entries = dict(sampler.cache)
    b = sampler.sample(key, 3, batch_size=2)
    assert sampler.cache.keys() == entries.keys()
    assert all(sampler.cache[k] is f for k, f in entries.items())
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, sampling.sample(run, key, 3, batch_size=2), atol=1e-6)
    assert sampling.as_sampler(sampler) is sampler
    return entries


def test_sampler_cache_compiles_once_per_shape(tiny_singan_run):
    _, run = tiny_singan_run
    sampler = sampling.Sampler(run)
    # On CPU one program for the whole pyramid per call (`default_per_stage`).
    assert sampler.cache == {} and not sampler.per_stage
    key = jax.random.key(4)
    entries = _same_call_compiles_nothing(sampler, run, key)
    assert len(entries) == 1
    # Another output size, or a start stage (which adds the reconstruction below
    # it), is one more entry each.
    sampler.sample(key, 3, batch_size=2, scale=(1.5, 1.0))
    assert len(sampler.cache) == 2
    sampler.sample(key, 3, batch_size=2, start_stage=1)
    assert len(sampler.cache) == 4
    np.testing.assert_allclose(
        sampler.reconstruct(), sampling.reconstruct(run), atol=1e-6
    )
    assert len(sampler.cache) == 5
    with pytest.raises(UserError, match="stop_stage=3 is outside"):
        sampler.check_stage(run.num_stages, "stop_stage")


def test_per_stage_programs_compile_once_per_stage_and_shape(tiny_singan_run):
    """A program per stage, batch size, output size and input size, shared by
    every start stage and by the reconstruction."""
    _, run = tiny_singan_run
    sampler = sampling.Sampler(run, per_stage=True)
    assert sampler.cache == {} and sampler.per_stage
    n = run.num_stages
    sizes = [tuple(s) for s in run.sizes]
    key = jax.random.key(4)
    entries = _same_call_compiles_nothing(sampler, run, key)
    inputs = [None, *sizes[:-1]]
    assert set(entries) == {
        ("stage", j, 2, sizes[j], inputs[j], False) for j in range(n)
    }
    # Another output size: a program per stage at that size.
    sampler.sample(key, 3, batch_size=2, scale=(1.5, 1.0))
    assert len(sampler.cache) == 2 * n
    # A start stage adds the reconstruction below it (z* through stage 0);
    # the stages above run the programs compiled already.
    before = set(sampler.cache)
    sampler.sample(key, 3, batch_size=2, start_stage=1)
    assert set(sampler.cache) - before == {("rec0",)}
    # The finest reconstruction: stages 1.. on one sample.
    before = set(sampler.cache)
    np.testing.assert_allclose(
        sampler.reconstruct(), sampling.reconstruct(run), atol=1e-6
    )
    assert set(sampler.cache) - before == {
        ("stage", j, 1, sizes[j], sizes[j - 1], False) for j in range(1, n)
    }


def test_reconstruction_matches_pyramid_forward(tiny_agan_run):
    """reconstruct(run, stop): z* at stage 0, zero noise above, through
    forward.pyramid_forward."""
    _, run = tiny_agan_run
    for stop in range(1, run.num_stages + 1):
        noises = forward.rec_noises(run.spec, run.z_rec, run.sizes, stop)
        assert len(noises) == stop
        for s in range(1, stop):
            np.testing.assert_array_equal(noises[s], np.zeros((*run.sizes[s], 3)))
        ref, attns = forward.pyramid_forward(
            run.spec, run.g_vars, run.sizes, run.noise_amps, noises, None, 0, stop
        )
        assert len(attns) == stop - 1  # AGAN: one attention map per stage above 0
        out = sampling.reconstruct(run, stop)
        assert out.shape == (*run.sizes[stop - 1], 3)
        np.testing.assert_allclose(out, ref, atol=1e-5)


def test_per_stage_programs_equal_the_whole_pyramid(tiny_agan_run):
    """Samples, attention maps, streamed batches and reconstructions from the
    per-stage programs equal those of one whole-pyramid program, from a start
    stage and at another size (from stage 0 at the training size:
    test_per_stage_programs_compile_once_per_stage_and_shape)."""
    _, run = tiny_agan_run
    start_stage, scale = 1, (1.5, 0.75)
    staged = sampling.Sampler(run, per_stage=True)
    whole = sampling.Sampler(run, per_stage=False)
    key = jax.random.key(7)
    kw = dict(start_stage=start_stage, scale=scale, with_attention=True)
    (a, attn_a), (b, attn_b) = (
        s.sample(key, 3, batch_size=2, **kw) for s in (staged, whole)
    )
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert len(attn_a) == len(attn_b) == run.num_stages - max(start_stage, 1)
    for x, y in zip(attn_a, attn_b, strict=True):
        np.testing.assert_allclose(x, y, atol=1e-5)
    da, db = (
        s.draw(key, [2, 0], start_stage=start_stage, scale=scale)
        for s in (staged, whole)
    )
    np.testing.assert_allclose(da, db, atol=1e-5)
    np.testing.assert_allclose(da, np.asarray(a)[[2, 0]], atol=1e-5)
    (sa,), (sb,) = (
        list(s.stream(key, range(2), start_stage=start_stage, scale=scale))
        for s in (staged, whole)
    )
    np.testing.assert_allclose(sa.images, sb.images, atol=1e-5)
    # The reconstructions below start_stage: the finest one, and one below it.
    for stop in (run.num_stages, max(start_stage, 1)):
        np.testing.assert_allclose(
            staged.reconstruct(stop), whole.reconstruct(stop), atol=1e-5
        )
    assert any(k[0] == "stage" for k in staged.cache)
    assert not any(k[0] == "stage" for k in whole.cache)
