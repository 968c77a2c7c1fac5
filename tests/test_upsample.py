"""model.upsample reaches sampling: the official step between stages is used."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from agan_jax import pyramid, sampling
from agan_jax.forward import stage_noises
from agan_jax.models import singan


def test_official_upsampling_is_what_sampling_runs(tiny_singan_run):
    _, run = tiny_singan_run
    official = dataclasses.replace(
        run, spec=dataclasses.replace(run.spec, upsample="official")
    )
    key = jax.random.key(4)
    got = np.asarray(sampling.sample(official, key, 2))
    plain = np.asarray(sampling.sample(run, key, 2))
    n = len(run.sizes)
    gens = [singan.make_generator(run.spec, s) for s in range(n)]
    amps = jnp.asarray(run.noise_amps)
    for i, k in enumerate(jax.random.split(key, 2)):
        noises = stage_noises(run.spec, k, run.sizes, 0, n)
        for mode, samples in (("official", got), ("resize", plain)):
            up = pyramid.upsampler(mode, run.sizes)
            want, _ = singan.run_stages(
                gens, run.g_vars, run.sizes, amps, noises, None, 0, n, up
            )
            np.testing.assert_allclose(samples[i], np.asarray(want), atol=1e-5)
    assert np.abs(got - plain).max() > 1e-3  # the two steps differ
