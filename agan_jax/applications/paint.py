"""Paint-to-image: a paint, optionally quantised to the training image's k-means
palette, injected at a stage."""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np

from agan_jax.applications import common
from agan_jax.applications.common import RunLike
from agan_jax.applications.injection import inject
from agan_jax.errors import UserError


def kmeans_palette(
    image: np.ndarray, k: int = 5, seed: int = 0, iters: int = 100
) -> np.ndarray:
    """k-means colours of an HWC image: (k, 3) float32, sorted by brightness.

    k-means++ seeding from `np.random.default_rng(seed)`, then Lloyd iterations
    until the assignment stops changing; deterministic for a fixed seed.
    """
    x = np.asarray(image, np.float64).reshape(-1, 3)
    if k < 1 or len(x) < 1:
        raise UserError(f"k-means needs k >= 1 and a non-empty image, got k={k}")
    rng = np.random.default_rng(seed)
    centers = [x[rng.integers(len(x))]]
    for _ in range(1, k):
        d2 = np.min(((x[:, None] - np.asarray(centers)[None]) ** 2).sum(-1), axis=1)
        total = d2.sum()
        i = rng.integers(len(x)) if total <= 0 else rng.choice(len(x), p=d2 / total)
        centers.append(x[i])
    c = np.asarray(centers)
    labels = None
    for _ in range(iters):
        new = np.argmin(((x[:, None] - c[None]) ** 2).sum(-1), axis=1)
        if labels is not None and np.array_equal(new, labels):
            break
        labels = new
        c = np.stack(
            [x[labels == j].mean(0) if np.any(labels == j) else c[j] for j in range(k)]
        )
    order = np.argsort(c.sum(-1), kind="stable")
    return c[order].astype(np.float32)


def quantize_to_palette(image: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Replaces every pixel of an HWC image by its nearest palette colour."""
    x = np.asarray(image, np.float32)
    p = np.asarray(palette, np.float32)
    d = ((x[..., None, :] - p) ** 2).sum(-1)
    return p[np.argmin(d, axis=-1)]


class Painted(NamedTuple):
    """The result of `paint_to_image`."""

    output: np.ndarray  # HWC at the training size
    paint: np.ndarray  # the paint as injected, at the training size
    palette: np.ndarray | None  # (k, 3) when quantised


def paint_to_image(
    run: RunLike,
    paint: np.ndarray,
    start_stage: int,
    key: jax.Array,
    quantize: bool = False,
    k: int = 5,
) -> Painted:
    """Paint-to-image: the paint, resized to the training size, injected at a stage.

    With `quantize`, every paint pixel is first replaced by the nearest of
    the training image's `k` k-means colours (`kmeans_palette`, seed 0).
    """
    sampler = common.sampler_of(run)
    real = common.training_image(sampler)
    x = common.resize(common.as_image(paint, "the paint"), real.shape[:2])
    palette = None
    if quantize:
        palette = kmeans_palette(real, k=k, seed=0)
        x = quantize_to_palette(x, palette)
    out = inject(sampler, x, start_stage, key, 1)[0]
    return Painted(out, x, palette)
