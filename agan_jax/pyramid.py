"""Stage sizes for every schedule, antialiased bicubic resize, real-image pyramid."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def resize(image: jax.Array, hw: tuple[int, int]) -> jax.Array:
    """Bicubic resize of an HWC or NHWC image to `hw`, antialiased when shrinking."""
    h, w = int(hw[0]), int(hw[1])
    if image.ndim == 3:
        shape = (h, w, image.shape[-1])
    elif image.ndim == 4:
        shape = (image.shape[0], h, w, image.shape[-1])
    else:
        raise ValueError(f"resize expects HWC or NHWC, got shape {image.shape}")
    if tuple(image.shape) == shape:
        return image
    return jax.image.resize(image, shape, method="cubic", antialias=True)
