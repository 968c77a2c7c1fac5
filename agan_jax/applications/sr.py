"""Super-resolution (SinGAN's): upsample by the finest stage's scale factor and
apply the finest generator, repeatedly, until the factor is reached."""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from agan_jax import forward, pyramid
from agan_jax.applications import common
from agan_jax.applications.common import RunLike
from agan_jax.errors import UserError
from agan_jax.models import families
from agan_jax.run import Size


def sr_sizes(hw: Size, factor: float, r: float) -> list[Size]:
    """Sizes of the k = ceil(log factor / log r) SR steps, each about r times larger.

    Step i is round(hw * factor**(i/k)); the last is round(factor * hw) exactly.
    """
    k = max(1, math.ceil(math.log(factor) / math.log(r) - 1e-9))
    h, w = hw
    return [
        (max(1, round(h * factor ** (i / k))), max(1, round(w * factor ** (i / k))))
        for i in range(1, k + 1)
    ]


class SuperResolved(NamedTuple):
    """The result of `super_resolve`."""

    output: np.ndarray  # HWC, round(factor * input size)
    sizes: list[Size]  # the size after every step


def check_stage_generators(run: RunLike) -> None:
    """UserError unless the run's family has a per-stage image generator."""
    r = common.run_of(run)
    name = families.of(r.spec).display_name(r.schedule)
    common.require_capability(
        run,
        "stage_generators",
        "super-resolution applies the finest stage's generator to an image; a "
        f"{name} generator is one network over all stages, with no such step",
    )


def super_resolve(
    run: RunLike,
    factor: float,
    key: jax.Array,
    image: np.ndarray | None = None,
    noise_scale: float = 1.0,
) -> SuperResolved:
    """SinGAN super-resolution with the finest generator.

    Upsamples the image (default: the training image) by about r, the size ratio of
    the two finest stages, and applies the finest generator, repeatedly
    (`sr_sizes`); the steps are spaced so the last lands on round(factor * size).
    Each step draws fresh noise (step i from fold_in(key, i), drawn as stage 1's)
    times the finest stage's amplitude times `noise_scale` (SinGAN: 1; 0 for no
    noise). Families without per-stage generators (ConSinGAN) are refused.
    """
    sampler = common.sampler_of(run)
    run = sampler.run
    real = common.training_image(run)
    check_stage_generators(run)
    x = real if image is None else common.as_image(image, "the input image")
    if not 1.0 < factor <= 16.0:
        raise UserError(f"--factor must be in (1, 16], got {factor}; e.g. --factor=4")
    if noise_scale < 0:
        raise UserError(f"noise_scale must be >= 0, got {noise_scale}")
    last = run.num_stages - 1
    r = pyramid.scale_factor_between(run.sizes, last)
    if r <= 1.0 + 1e-6:
        raise UserError(
            f"the two finest stages have the same size (ratio {r:.4f}); this run "
            "cannot be used for super-resolution"
        )
    sizes = sr_sizes(x.shape[:2], float(factor), r)
    spec = run.spec

    def make():
        def fn(key, variables, amp, x):
            for i, hw in enumerate(sizes, start=1):
                z = forward.draw_noise(spec, jax.random.fold_in(key, i), hw, stage=1)
                x = forward.apply_stage_at(spec, last, variables, hw, amp, z, x)
            return x

        return fn

    fn = sampler.compiled(common.cache_key("sr", x.shape[:2], tuple(sizes)), make)
    amp = jnp.float32(run.noise_amps[last] * noise_scale)
    out = fn(key, run.g_vars[last], amp, jnp.asarray(x))
    return SuperResolved(np.asarray(out), sizes)
