"""What a trained pyramid can do besides sampling (SPEC section 8).

Every function takes a fully trained `Run` and an explicit key and is a pure
function of its arguments: the same key gives the same result.

- `inject`: an image downsampled to stage n-1 enters stage n; stages n..S-1 run
  with fresh noise. Harmonization, editing, paint-to-image and `sweep` build on it.
- `harmonize` / `edit`: inject a naive composite, then blend the output into the
  training image through a dilated and blurred mask (`MaskRecipe`).
- `paint_to_image`: inject a paint, optionally quantised to the training image's
  k-means palette (`kmeans_palette`, `quantize_to_palette`).
- `super_resolve`: upsample by the finest stage's scale factor and apply the finest
  generator, repeatedly, until the factor is reached.
- `animate`: a second-order random walk of the noise around the reconstruction
  noise; all frames rendered in one vmap.
- `retarget_grid`: samples at several (height, width) scales in one image.
- `save_attention`: a sample and the AGAN attention map C of every stage as PNGs.

Compiled functions are cached on the run (`Run._cache`, as `sampling` does): one
compile per application, stage and shape.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image, ImageOps
from scipy import ndimage

from agan_jax import image_io, pyramid, sampling
from agan_jax.errors import UserError
from agan_jax.sampling import Run, Size

logger = logging.getLogger(__name__)


# -- checks and small helpers ---------------------------------------------------


def check_complete(run: Run) -> None:
    """UserError unless every stage of the run is trained and it holds its image."""
    total = len(run.sizes)
    if run.num_stages < total:
        raise UserError(
            f"{run.workdir or 'this run'} has {run.num_stages} of {total} stages "
            "trained; finish training first (re-run python -m launch.train with the "
            "same --workdir to resume)"
        )
    if run.real is None:
        raise UserError(
            f"{run.workdir or 'this run'} holds no training image (real.npy); "
            "train it again with python -m launch.train"
        )


def check_inject_stage(run: Run, stage: int) -> None:
    """UserError unless 1 <= stage <= S-1 (stage 0 has no previous stage to inject)."""
    last = run.num_stages - 1
    if isinstance(stage, bool) or not isinstance(stage, int | np.integer):
        raise UserError(f"start_stage must be an integer in [1, {last}], got {stage!r}")
    if not 1 <= stage <= last:
        raise UserError(
            f"start_stage={stage} is outside [1, {last}] for this run of "
            f"{run.num_stages} stages; an image is injected at a stage n >= 1 "
            f"(it replaces the output of stage n-1), so pick n in 1..{last}: "
            "low n changes more, high n only adds texture"
        )


def _as_image(image: Any, what: str) -> np.ndarray:
    """An HWC float32 RGB array or a UserError naming `what`."""
    x = np.asarray(image, dtype=np.float32)
    if x.ndim != 3 or x.shape[-1] != 3 or min(x.shape[:2]) < 1:
        raise UserError(
            f"{what} must be an RGB image (HxWx3), got shape {x.shape}; load it "
            "with image_io.load_image"
        )
    return x


def _real(run: Run) -> np.ndarray:
    check_complete(run)
    return np.asarray(run.real, dtype=np.float32)


def _cached(run: Run, key: tuple, make):
    """`run._cache[key]`, built by `make()` on first use."""
    key = ("applications",) + key
    if key not in run._cache:
        run._cache[key] = make()
    return run._cache[key]


def _resize_np(image: np.ndarray, hw: Size) -> np.ndarray:
    """Antialiased bicubic resize of an HWC numpy image (no-op at the same size)."""
    if tuple(image.shape[:2]) == tuple(hw):
        return np.asarray(image, np.float32)
    return np.asarray(pyramid.resize(jnp.asarray(image), hw), np.float32)


# -- injection ------------------------------------------------------------------


def _make_injector(spec, sizes: Sequence[Size], start: int, stop: int):
    """f(keys, variables, amps, base) -> (n, h, w, 3): stages [start, stop) per key."""

    def one(key, variables, amps, base):
        noises = sampling.stage_noises(key, sizes, start, stop, spec)
        out, _ = sampling.pyramid_forward(
            spec, variables, sizes, amps, noises, base, start, stop
        )
        return out

    return jax.vmap(one, in_axes=(0, None, None, None))


def inject(
    run: Run, image: np.ndarray, start_stage: int, key: jax.Array, n: int = 1
) -> np.ndarray:
    """Injects `image` at `start_stage` and runs the rest of the pyramid.

    The image (any size; usually the training size) is resized to the size of stage
    start_stage-1 and takes the place of that stage's output; stage start_stage
    upsamples it once, and stages start_stage..S-1 run with fresh noise (sample i
    uses key `jax.random.split(key, n)[i]`, stage s `fold_in` of it, as `sample`).

    Returns:
      (n, h, w, 3) float32 at the training size.
    """
    check_complete(run)
    check_inject_stage(run, start_stage)
    if n < 1:
        raise UserError(f"number of outputs must be >= 1, got {n}")
    x = _as_image(image, "the injected image")
    if x.shape[:2] != tuple(run.sizes[-1]):
        ih, iw = x.shape[:2]
        th, tw = run.sizes[-1]
        if abs(ih / iw - th / tw) > 0.02 * th / tw:
            logger.warning(
                "injected image is %dx%d, the training image %dx%d: the aspect "
                "ratio changes when it is resized",
                ih,
                iw,
                th,
                tw,
            )
    base = _resize_np(x, run.sizes[start_stage - 1])
    sizes, stop = list(run.sizes), run.num_stages
    fn = _cached(
        run,
        ("inject", start_stage, n),
        lambda: jax.jit(_make_injector(run.spec, sizes, start_stage, stop)),
    )
    out = fn(jax.random.split(key, n), run.g_vars, jnp.asarray(run.noise_amps), base)
    return np.asarray(out)


# -- masks: harmonization and editing -------------------------------------------


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
    to a disk of radius t = ceil(2 sigma) (ignoring float noise). The soft mask is therefore exactly 0
    outside the mask dilated by r + t (the "dilated mask", `support`) and exactly 1
    on the mask itself.
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
    run: Run, naive: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Checks a naive image and its mask and resizes both to the training size.

    They must have the same size as each other. The mask is resized bilinearly
    (antialiased) and thresholded at 0.5.

    Returns:
      (naive HWC, mask HxW float32 in {0, 1}, notes: what was changed).
    """
    x = _as_image(naive, "the naive image")
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
        x = _resize_np(x, (th, tw))
        m = _resize_np(m[..., None], (th, tw))[..., 0]
    m = (m >= 0.5).astype(np.float32)
    if not m.any():
        raise UserError(
            f"the mask has no pixels set at the training size {th}x{tw}; paint a "
            "larger region white"
        )
    return x, m, notes


def _file_hw(path: str) -> Size | None:
    """(h, w) of an image file as loaded (EXIF orientation applied), None if unreadable."""
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            return im.height, im.width
    except (OSError, ValueError, SyntaxError):
        return None


def load_naive_and_mask(
    run: Run, naive_path: str, mask_path: str
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Loads a naive image and its mask files at the training size.

    The files must have the same size (else a UserError); a non-binary mask is
    thresholded at 0.5 with a logged warning (`image_io.load_mask`), a mask with no
    pixel set is a UserError. See `fit_naive_and_mask` for the resize.
    """
    naive = image_io.load_image(naive_path)
    hw = naive.shape[:2]
    mask = image_io.load_mask(mask_path, hw)
    mask_hw = _file_hw(mask_path)
    if mask_hw is not None and tuple(mask_hw) != tuple(hw):
        raise UserError(
            f"mask {mask_path} is {mask_hw[0]}x{mask_hw[1]} but the image "
            f"{naive_path} is {hw[0]}x{hw[1]} (HxW); they must have the same size: "
            "save the mask at the image's size"
        )
    return fit_naive_and_mask(run, naive, mask)


def blend(
    run: Run,
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
    real = _real(run)
    x = _as_image(naive, "the naive image")
    if x.shape != real.shape:
        raise UserError(
            f"naive image is {x.shape[0]}x{x.shape[1]}, the training image "
            f"{real.shape[0]}x{real.shape[1]}; resize both with fit_naive_and_mask"
        )
    soft, support = soft_mask(mask, recipe)
    out = inject(run, x, start_stage, key, 1)[0]
    s = soft[..., None]
    mixed = s * out + (1.0 - s) * real
    blended = np.where(support[..., None], mixed, real).astype(np.float32)
    return Blend(start_stage, out, blended, soft, support, x)


def harmonize(
    run: Run,
    naive: np.ndarray,
    mask: np.ndarray,
    start_stage: int,
    key: jax.Array,
) -> Blend:
    """Harmonization: `blend` with the small dilation of `HARMONIZATION`."""
    return blend(run, naive, mask, start_stage, key, HARMONIZATION)


def edit(
    run: Run,
    edited: np.ndarray,
    mask: np.ndarray,
    start_stage: int,
    key: jax.Array,
) -> Blend:
    """Editing: `blend` with the larger dilation of `EDITING`."""
    return blend(run, edited, mask, start_stage, key, EDITING)


def sweep(
    run: Run,
    naive: np.ndarray,
    mask: np.ndarray,
    key: jax.Array,
    recipe: MaskRecipe = HARMONIZATION,
) -> tuple[list[Blend], np.ndarray]:
    """`blend` at every injection stage 1..S-1 with the same key.

    Returns:
      (one Blend per stage, a strip image: naive, then the blends by stage).
    """
    check_complete(run)
    results = [
        blend(run, naive, mask, s, key, recipe) for s in range(1, run.num_stages)
    ]
    strip = image_io.strip([results[0].naive] + [b.blended for b in results])
    return results, strip


# -- paint-to-image ----------------------------------------------------------------


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
    run: Run,
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
    real = _real(run)
    x = _resize_np(_as_image(paint, "the paint"), real.shape[:2])
    palette = None
    if quantize:
        palette = kmeans_palette(real, k=k, seed=0)
        x = quantize_to_palette(x, palette)
    out = inject(run, x, start_stage, key, 1)[0]
    return Painted(out, x, palette)


# -- super-resolution ---------------------------------------------------------------


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


def _apply_stage_at(spec, stage: int, variables, hw: Size, amp, z, x):
    """Generator `stage` on `x` (resized to hw) with noise z: one pyramid_forward step."""
    sizes = [hw] * (stage + 1)
    vs = [None] * stage + [variables]
    amps = [0.0] * stage + [amp]
    noises = [None] * stage + [z]
    out, _ = sampling.pyramid_forward(
        spec, vs, sizes, amps, noises, x, stage, stage + 1
    )
    return out


class SuperResolved(NamedTuple):
    """The result of `super_resolve`."""

    output: np.ndarray  # HWC, round(factor * input size)
    sizes: list[Size]  # the size after every step


def super_resolve(
    run: Run,
    factor: float,
    key: jax.Array,
    image: np.ndarray | None = None,
    noise_scale: float = 1.0,
) -> SuperResolved:
    """SinGAN super-resolution with the finest generator.

    Upsamples the image (default: the training image) by about r, the size ratio of
    the two finest stages, and applies the finest generator, repeatedly
    (`sr_sizes`); the steps are spaced so the last lands on round(factor * size).
    Each step draws fresh noise (step i from fold_in(key, i)) times the finest
    stage's amplitude times `noise_scale` (SinGAN: 1; 0 for no noise).
    """
    real = _real(run)
    if run.spec.kind == "consingan":
        raise UserError(
            "super-resolution applies the finest stage's generator to an image; a "
            "ConSinGAN generator is one network over all stages, with no such step. "
            "Use a SinGAN or AGAN run (configs/singan.py, configs/agan.py)"
        )
    x = real if image is None else _as_image(image, "the input image")
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
                z = sampling.draw_noise(jax.random.fold_in(key, i), hw, stage=1)
                x = _apply_stage_at(spec, last, variables, hw, amp, z, x)
            return x

        return jax.jit(fn)

    fn = _cached(run, ("sr", x.shape[:2], tuple(sizes)), make)
    amp = jnp.float32(run.noise_amps[last] * noise_scale)
    out = fn(key, run.g_vars[last], amp, jnp.asarray(x))
    return SuperResolved(np.asarray(out), sizes)


# -- animation -------------------------------------------------------------------


def noise_walk(
    key: jax.Array,
    z_star: jax.Array,
    frames: int,
    alpha: float,
    beta: float,
    stage: int,
    spec=None,
) -> jax.Array:
    """A second-order random walk around z* (SinGAN's animation), (frames, h, w, 3).

    z_0 = z_{-1} = z*; for t >= 1, with eps_t fresh noise (`draw_noise`, key
    fold_in(key, t)):
      d_t = beta * (z_{t-1} - z_{t-2}) + (1 - beta) * eps_t
      z_t = alpha * z* + (1 - alpha) * (z_{t-1} + d_t)
    beta keeps the velocity (smooth motion), alpha pulls back to z*.
    """
    ts = jnp.arange(1, frames)
    eps = jax.vmap(
        lambda t: sampling.draw_noise_like(
            jax.random.fold_in(key, t), z_star, stage, spec
        )
    )(ts)

    def step(carry, e):
        z1, z2 = carry
        d = beta * (z1 - z2) + (1.0 - beta) * e
        z = alpha * z_star + (1.0 - alpha) * (z1 + d)
        return (z, z1), z

    _, zs = jax.lax.scan(step, (z_star, z_star), eps)
    return jnp.concatenate([z_star[None], zs])


def animate(
    run: Run,
    key: jax.Array,
    frames: int = 100,
    alpha: float = 0.1,
    beta: float = 0.9,
    start_stage: int = 0,
) -> np.ndarray:
    """Animation frames (frames, h, w, 3) from `noise_walk` at every stage.

    Stages below `start_stage` keep the reconstruction noise (z_rec at stage 0,
    zero above); stage s >= start_stage walks around it with key fold_in(key, s).
    Frame 0 is the reconstruction exactly (up to float rounding). All frames go
    through the pyramid in one vmap.
    """
    check_complete(run)
    if not 0 <= start_stage < run.num_stages:
        raise UserError(
            f"start_stage={start_stage} is outside [0, {run.num_stages - 1}]; stages "
            "from start_stage on move, pick one in that range (0: everything moves)"
        )
    if not isinstance(frames, int | np.integer) or frames < 1:
        raise UserError(f"--frames must be a positive integer, got {frames!r}")
    if not (0.0 <= alpha <= 1.0 and 0.0 <= beta <= 1.0):
        raise UserError(
            f"alpha and beta must lie in [0, 1], got alpha={alpha}, beta={beta}; "
            "SinGAN uses alpha=0.1, beta in 0.8..0.95"
        )
    sizes, stop, spec = list(run.sizes), run.num_stages, run.spec
    n = int(frames)

    def make():
        def fn(key, variables, amps, z_rec, alpha, beta):
            stars = sampling.rec_noises(z_rec, sizes, stop, spec, variables)
            walks = [
                noise_walk(
                    jax.random.fold_in(key, s), stars[s], n, alpha, beta, s, spec
                )
                if s >= start_stage
                else jnp.broadcast_to(stars[s], (n, *stars[s].shape))
                for s in range(stop)
            ]

            def one(noises):
                out, _ = sampling.pyramid_forward(
                    spec, variables, sizes, amps, noises, None, 0, stop
                )
                return out

            return jax.vmap(one)(walks)

        return jax.jit(fn)

    fn = _cached(run, ("animate", n, start_stage), make)
    out = fn(
        key,
        run.g_vars,
        jnp.asarray(run.noise_amps),
        jnp.asarray(run.z_rec),
        jnp.float32(alpha),
        jnp.float32(beta),
    )
    return np.asarray(out)


# -- retargeting and attention -------------------------------------------------------


def retarget_grid(
    run: Run,
    key: jax.Array,
    scales_h: Sequence[float],
    scales_w: Sequence[float],
    pad: int = 2,
) -> tuple[np.ndarray, dict[tuple[float, float], np.ndarray]]:
    """One sample per (scale_h, scale_w), tiled: rows by scale_h, columns by scale_w.

    Every cell is `sampling.sample(run, key, 1, scale=(sh, sw))` (one compile per
    size), placed top-left in its cell on a white background.

    Returns:
      (grid HWC, {(sh, sw): sample HWC}).
    """
    if not scales_h or not scales_w:
        raise UserError("give at least one scale_h and one scale_w, e.g. 1,1.5")
    hs = [float(v) for v in scales_h]
    ws = [float(v) for v in scales_w]
    samples = {
        (sh, sw): np.asarray(sampling.sample(run, key, 1, scale=(sh, sw))[0])
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


def save_attention(run: Run, key: jax.Array, out_dir: str) -> list[str]:
    """Saves a sample and the attention map C of every AGAN stage next to it.

    Writes sample.png, attention_stage_SS.png (C in [0, 1] as grey levels, at the
    stage's size) and attention_strip.png (the sample, then every C upsampled to
    the sample's size). Returns the paths written.
    """
    check_complete(run)
    images, attns = sampling.sample(run, key, 1, with_attention=True)
    if not attns:
        raise UserError(
            f"this run's model ({run.spec.kind}) has no attention maps; use an AGAN "
            "run (configs/agan.py)"
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
