"""Retargeting: samples at several (height, width) scales tiled in one image."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np

from agan_jax.applications import common
from agan_jax.applications.common import RunLike
from agan_jax.errors import UserError


def retarget_grid(
    run: RunLike,
    key: jax.Array,
    scales_h: Sequence[float],
    scales_w: Sequence[float],
    pad: int = 2,
) -> tuple[np.ndarray, dict[tuple[float, float], np.ndarray]]:
    """One sample per (scale_h, scale_w), tiled: rows by scale_h, columns by scale_w.

    Every cell is `Sampler.sample(key, 1, scale=(sh, sw))` (one compile per size,
    kept in the sampler's cache), placed top-left in its cell on a white background.

    Returns:
      (grid HWC, {(sh, sw): sample HWC}).
    """
    sampler = common.sampler_of(run)
    if not scales_h or not scales_w:
        raise UserError("give at least one scale_h and one scale_w, e.g. 1,1.5")
    hs = [float(v) for v in scales_h]
    ws = [float(v) for v in scales_w]
    samples = {
        (sh, sw): np.asarray(sampler.sample(key, 1, scale=(sh, sw))[0])
        for sh in hs
        for sw in ws
    }
    row_h = [max(samples[(sh, sw)].shape[0] for sw in ws) for sh in hs]
    col_w = [max(samples[(sh, sw)].shape[1] for sh in hs) for sw in ws]
    grid = np.ones(
        (sum(row_h) + pad * (len(hs) + 1), sum(col_w) + pad * (len(ws) + 1), 3),
        np.float32,
    )
    y = pad
    for i, sh in enumerate(hs):
        x = pad
        for j, sw in enumerate(ws):
            img = samples[(sh, sw)]
            grid[y : y + img.shape[0], x : x + img.shape[1]] = img
            x += col_w[j] + pad
        y += row_h[i] + pad
    return grid, samples
