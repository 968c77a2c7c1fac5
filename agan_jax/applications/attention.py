"""The attention maps of a sample, saved as images (families with `attention`)."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from agan_jax import image_io
from agan_jax.applications import common
from agan_jax.applications.common import RunLike
from agan_jax.errors import UserError


def check_attention(run: RunLike) -> None:
    """UserError unless the run's family has attention maps."""
    kind = common.run_of(run).spec.kind
    common.require_capability(
        run, "attention", f"this run's model ({kind}) has no attention maps"
    )


def save_attention(run: RunLike, key: jax.Array, out_dir: str) -> list[str]:
    """Saves a sample and the attention map C of every attention stage next to it.

    Writes sample.png, attention_stage_SS.png (C in [0, 1] as grey levels, at the
    stage's size) and attention_strip.png (the sample, then every C upsampled to
    the sample's size). Returns the paths written.
    """
    sampler = common.sampler_of(run)
    run = sampler.run
    common.check_complete(run)
    check_attention(run)
    images, attns = sampler.sample(key, 1, with_attention=True)
    if not attns:
        raise UserError(
            f"this run ({run.num_stages} stages) has no stage with an attention map"
        )
    sample = np.asarray(images[0])
    first = run.num_stages - len(attns)
    paths = [os.path.join(out_dir, "sample.png")]
    image_io.save_image(paths[0], sample)
    strip = [sample]
    for s, a in zip(range(first, run.num_stages), attns, strict=True):
        c = np.asarray(a[0])
        path = os.path.join(out_dir, f"attention_stage_{s:02d}.png")
        image_io.save_image(path, c, value_range=(0.0, 1.0))
        paths.append(path)
        up = np.asarray(
            jax.image.resize(jnp.asarray(c), sample.shape, method="nearest")
        )
        strip.append(up * 2.0 - 1.0)
    path = os.path.join(out_dir, "attention_strip.png")
    image_io.save_image(path, image_io.strip(strip))
    paths.append(path)
    return paths
