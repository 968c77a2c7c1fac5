"""Injection: an image takes the place of stage n-1's output; stages n..S-1 run.

Harmonization, editing, paint-to-image and the sweep build on `inject`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from agan_jax import forward, sampling
from agan_jax.applications import common
from agan_jax.applications.common import RunLike
from agan_jax.errors import UserError
from agan_jax.run import Size

logger = logging.getLogger(__name__)


def make_injector(spec, sizes: Sequence[Size], start: int, stop: int):
    """f(keys, variables, amps, base) -> (n, h, w, 3): stages [start, stop) per key."""

    def one(key, variables, amps, base):
        noises = forward.stage_noises(spec, key, sizes, start, stop)
        out, _ = forward.pyramid_forward(
            spec, variables, sizes, amps, noises, base, start, stop
        )
        return out

    return jax.vmap(one, in_axes=(0, None, None, None))


def _warn_aspect(image_hw: Size, train_hw: Size) -> None:
    ih, iw = image_hw
    th, tw = train_hw
    if abs(ih / iw - th / tw) > 0.02 * th / tw:
        logger.warning(
            "injected image is %dx%d, the training image %dx%d: the aspect "
            "ratio changes when it is resized",
            ih,
            iw,
            th,
            tw,
        )


def inject(
    run: RunLike, image: np.ndarray, start_stage: int, key: jax.Array, n: int = 1
) -> np.ndarray:
    """Injects `image` at `start_stage` and runs the rest of the pyramid.

    The image (any size; usually the training size) is resized to the size of stage
    start_stage-1 and takes the place of that stage's output; stage start_stage
    upsamples it once, and stages start_stage..S-1 run with fresh noise (sample i
    uses key `sampling.stream_key(key, i)`, stage s `fold_in` of it, as `sample`).

    Returns:
      (n, h, w, 3) float32 at the training size.
    """
    sampler = common.sampler_of(run)
    run = sampler.run
    common.check_complete(run)
    common.check_inject_stage(run, start_stage)
    if n < 1:
        raise UserError(f"number of outputs must be >= 1, got {n}")
    x = common.as_image(image, "the injected image")
    if x.shape[:2] != tuple(run.sizes[-1]):
        _warn_aspect(x.shape[:2], run.sizes[-1])
    base = common.resize(x, run.sizes[start_stage - 1])
    spec, sizes, stop = run.spec, list(run.sizes), run.num_stages
    fn = sampler.compiled(
        common.cache_key("inject", start_stage, n),
        lambda: make_injector(spec, sizes, start_stage, stop),
    )
    keys = sampling.stream_keys(key, np.arange(n))
    out = fn(keys, run.g_vars, jnp.asarray(run.noise_amps), base)
    return np.asarray(out)
