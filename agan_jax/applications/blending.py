"""Harmonization and editing: inject a naive image, blend the output through a mask.

The mask is dilated and blurred (`MaskRecipe`: `HARMONIZATION`, `EDITING`); outside
the dilated mask the result is the training image exactly.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import numpy as np
from scipy import ndimage

from agan_jax import image_io
from agan_jax.applications import common
from agan_jax.applications.common import RunLike
from agan_jax.applications.injection import inject
from agan_jax.errors import UserError
from agan_jax.run import Size


def disk(radius: int) -> np.ndarray:
    """Boolean (2r+1)^2 disk: offsets (dy, dx) with dy^2 + dx^2 <= r^2."""
    r = int(radius)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return yy * yy + xx * xx <= r * r


@dataclasses.dataclass(frozen=True)
class MaskRecipe:
    """Mask dilation and blur, as fractions of the training image's longer side.

    SinGAN dilates the mask with a disk of radius 7 px (harmonization) or 20 px
    (editing) and blurs it with a Gaussian of sigma 5 px, on images of at most
    250 px; the fractions below are those numbers / 250, so they scale to any
    training size. In pixels (`pixels`): the mask is dilated by a disk of radius
    `r` >= 1 and blurred with a Gaussian of std `sigma` >= 0.5 whose kernel is cut
    to a disk of radius t = ceil(2 sigma) (ignoring float noise). The soft mask is
    therefore exactly 0 outside the mask dilated by r + t (the "dilated mask",
    `support`) and exactly 1 on the mask itself.
    """

    dilation: float
    sigma: float

    def pixels(self, hw: Size) -> tuple[int, float, int]:
        """(dilation radius r, blur sigma, blur radius t) in pixels for image size hw."""
        long_side = max(int(hw[0]), int(hw[1]))
        r = max(1, round(self.dilation * long_side))
        sigma = max(0.5, self.sigma * long_side)
        return r, sigma, math.ceil(2.0 * sigma - 1e-6)


HARMONIZATION = MaskRecipe(dilation=7 / 250, sigma=5 / 250)
EDITING = MaskRecipe(dilation=20 / 250, sigma=5 / 250)


def soft_mask(mask: np.ndarray, recipe: MaskRecipe) -> tuple[np.ndarray, np.ndarray]:
    """Dilates and blurs a binary HxW mask (see `MaskRecipe`).

    Returns:
      (soft mask float32 HxW in [0, 1], support bool HxW): the soft mask is 1 on
      the mask and 0 outside the support, the mask dilated by a disk of r + t.
    """
    m = np.asarray(mask) > 0
    if m.ndim != 2 or not m.any():
        raise UserError("the mask must be HxW with at least one pixel set")
    r, sigma, t = recipe.pixels(m.shape)
    core = ndimage.binary_dilation(m, structure=disk(r))
    yy, xx = np.mgrid[-t : t + 1, -t : t + 1]
    kernel = np.exp(-(yy * yy + xx * xx) / (2.0 * sigma * sigma)) * disk(t)
    kernel /= kernel.sum()
    # Every offset of the kernel lies in disk(t), so a non-zero output lies within
    # r + t of the mask (the triangle inequality; 'nearest' padding only repeats
    # pixels that are no farther away).
    soft = ndimage.convolve(core.astype(np.float64), kernel, mode="nearest")
    support = ndimage.binary_dilation(m, structure=disk(r + t))
    soft = np.where(support, np.clip(soft, 0.0, 1.0), 0.0)
    soft[m] = 1.0
    return soft.astype(np.float32), support


class Blend(NamedTuple):
    """The result of `harmonize` / `edit` at one injection stage."""

    stage: int
    output: np.ndarray  # the pyramid's raw output, HWC
    blended: np.ndarray  # soft * output + (1 - soft) * training image
    soft_mask: np.ndarray  # HxW in [0, 1]
    support: np.ndarray  # HxW bool: where blended may differ from the image
    naive: np.ndarray  # the injected image at the training size


def fit_naive_and_mask(
    run: RunLike, naive: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Checks a naive image and its mask and resizes both to the training size.

    They must have the same size as each other. The mask is resized bilinearly
    (antialiased) and thresholded at 0.5.

    Returns:
      (naive HWC, mask HxW float32 in {0, 1}, notes: what was changed).
    """
    run = common.run_of(run)
    x = common.as_image(naive, "the naive image")
    m = np.asarray(mask, dtype=np.float32)
    if m.ndim == 3 and m.shape[-1] == 1:
        m = m[..., 0]
    if m.ndim != 2:
        raise UserError(f"the mask must be HxW, got shape {m.shape}")
    if m.shape != x.shape[:2]:
        raise UserError(
            f"the mask is {m.shape[0]}x{m.shape[1]} but the naive image is "
            f"{x.shape[0]}x{x.shape[1]} (HxW); they must have the same size: "
            "save the mask at the naive image's size"
        )
    notes = []
    th, tw = run.sizes[-1]
    if m.shape != (th, tw):
        notes.append(
            f"naive image and mask resized from {m.shape[0]}x{m.shape[1]} to the "
            f"training size {th}x{tw}"
        )
        x = common.resize(x, (th, tw))
        m = common.resize(m[..., None], (th, tw))[..., 0]
    m = (m >= 0.5).astype(np.float32)
    if not m.any():
        raise UserError(
            f"the mask has no pixels set at the training size {th}x{tw}; paint a "
            "larger region white"
        )
    return x, m, notes


def load_naive_and_mask(
    run: RunLike,
    naive_path: str,
    mask_path: str,
    *,
    naive_flag: str = "--naive",
    mask_flag: str = "--mask",
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Loads a naive image and its mask files at the training size.

    The files must have the same size (else a UserError); a non-binary mask is
    thresholded at 0.5 with a logged warning (`image_io.load_mask`), a mask with no
    pixel set is a UserError. See `fit_naive_and_mask` for the resize. Errors
    name the flags that gave the files (`naive_flag`, `mask_flag`).
    """
    naive = image_io.load_image(naive_path, flag=naive_flag)
    hw = naive.shape[:2]
    mask = image_io.load_mask(mask_path, hw, flag=mask_flag)
    mask_hw = image_io.file_size(mask_path)
    if mask_hw is not None and tuple(mask_hw) != tuple(hw):
        raise UserError(
            f"mask {mask_path} is {mask_hw[0]}x{mask_hw[1]} but the image "
            f"{naive_path} is {hw[0]}x{hw[1]} (HxW); they must have the same size: "
            "save the mask at the image's size"
        )
    return fit_naive_and_mask(run, naive, mask)


def blend(
    run: RunLike,
    naive: np.ndarray,
    mask: np.ndarray,
    start_stage: int,
    key: jax.Array,
    recipe: MaskRecipe,
) -> Blend:
    """Injects `naive` at `start_stage` and blends the output into the training image.

    `naive` and `mask` are at the training size (see `fit_naive_and_mask`). Outside
    the dilated mask (`Blend.support`) the result equals the training image exactly.
    """
    sampler = common.sampler_of(run)
    real = common.training_image(sampler)
    x = common.as_image(naive, "the naive image")
    if x.shape != real.shape:
        raise UserError(
            f"naive image is {x.shape[0]}x{x.shape[1]}, the training image "
            f"{real.shape[0]}x{real.shape[1]}; resize both with fit_naive_and_mask"
        )
    soft, support = soft_mask(mask, recipe)
    out = inject(sampler, x, start_stage, key, 1)[0]
    s = soft[..., None]
    mixed = s * out + (1.0 - s) * real
    blended = np.where(support[..., None], mixed, real).astype(np.float32)
    return Blend(start_stage, out, blended, soft, support, x)


def harmonize(
    run: RunLike,
    naive: np.ndarray,
    mask: np.ndarray,
    start_stage: int,
    key: jax.Array,
) -> Blend:
    """Harmonization: `blend` with the small dilation of `HARMONIZATION`."""
    return blend(run, naive, mask, start_stage, key, HARMONIZATION)


def edit(
    run: RunLike,
    edited: np.ndarray,
    mask: np.ndarray,
    start_stage: int,
    key: jax.Array,
) -> Blend:
    """Editing: `blend` with the larger dilation of `EDITING`."""
    return blend(run, edited, mask, start_stage, key, EDITING)


def sweep(
    run: RunLike,
    naive: np.ndarray,
    mask: np.ndarray,
    key: jax.Array,
    recipe: MaskRecipe = HARMONIZATION,
) -> tuple[list[Blend], np.ndarray]:
    """`blend` at every injection stage 1..S-1 with the same key.

    Returns:
      (one Blend per stage, a strip image: naive, then the blends by stage).
    """
    sampler = common.sampler_of(run)
    common.check_complete(sampler)
    results = [
        blend(sampler, naive, mask, s, key, recipe)
        for s in range(1, sampler.run.num_stages)
    ]
    strip = image_io.strip([results[0].naive] + [b.blended for b in results])
    return results, strip
