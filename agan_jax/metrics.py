"""Evaluation metrics: RMSE, SSIM, pixel diversity, contrast, saturation, patch SWD,
Frechet distance, SIFID.

Conventions. Images are float32 HWC (batches NHWC) in [-1, 1], as everywhere in
agan_jax. RMSE, SSIM and patch SWD first map them to [0, 1] with `(x + 1) / 2`, the
range of the AGAN paper's tables (RMSE of roughly 0.15-0.25 between a sample and the
training image). Pixel diversity and contrast are ratios of standard deviations and
do not depend on the range; saturation maps to [0, 1]. SIFID feeds [-1, 1] images to Inception as they are (see
`agan_jax.inception`).

Functions that compare a generated image with the training image take an HWC image
or an NHWC batch for either argument; a single image is broadcast against a batch
and the result is the mean over the batch of the per-image values.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np

from agan_jax import inception, pyramid
from agan_jax.errors import UserError

_GRAY = (0.299, 0.587, 0.114)
_HIGHEST = jax.lax.Precision.HIGHEST
_DIMS = ("NHWC", "HWIO", "NHWC")


def _to_unit(x: jax.Array) -> jax.Array:
    """Map [-1, 1] to [0, 1]."""
    return (x + 1.0) * 0.5


def _as_nhwc(x: Any, name: str) -> jax.Array:
    """An HWC image or NHWC batch as a float32 NHWC array; UserError otherwise."""
    arr = jnp.asarray(x, dtype=jnp.float32)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4:
        raise UserError(
            f"{name} must be an HWC image or an NHWC batch, got shape {tuple(arr.shape)};"
            " pass float32 images in [-1, 1] with channels last"
        )
    return arr


def _pair(a: Any, b: Any) -> tuple[jax.Array, jax.Array]:
    """Two images/batches of the same image size, broadcast to one batch size."""
    a, b = _as_nhwc(a, "a"), _as_nhwc(b, "b")
    if a.shape[1:] != b.shape[1:]:
        raise UserError(
            f"images differ in size: {tuple(a.shape[1:])} vs {tuple(b.shape[1:])}; "
            "compare images of the same height, width and channels (resize the "
            "samples or sample at the training size)"
        )
    na, nb = a.shape[0], b.shape[0]
    if na != nb and 1 not in (na, nb):
        raise UserError(
            f"batch sizes {na} and {nb} do not match; pass equal batches or one image"
        )
    n = max(na, nb)
    return jnp.broadcast_to(a, (n, *a.shape[1:])), jnp.broadcast_to(
        b, (n, *b.shape[1:])
    )


# ----------------------------------------------------------------------------- RMSE


@jax.jit
def _rmse_per_image(a: jax.Array, b: jax.Array) -> jax.Array:
    d = _to_unit(a) - _to_unit(b)
    return jnp.sqrt(jnp.mean(d * d, axis=(1, 2, 3)))


def rmse(a: Any, b: Any) -> float:
    """Root mean squared error on images mapped to [0, 1] (mean over a batch)."""
    a, b = _pair(a, b)
    return float(jnp.mean(_rmse_per_image(a, b)))


# ----------------------------------------------------------------------------- SSIM

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


@jax.jit
def _ssim_per_image(a: jax.Array, b: jax.Array, data_range: jax.Array) -> jax.Array:
    return dm_pix.ssim(
        _to_unit(a),
        _to_unit(b),
        max_val=data_range,
        filter_size=SSIM_WINDOW,
        filter_sigma=SSIM_SIGMA,
        k1=SSIM_K1,
        k2=SSIM_K2,
        precision=_HIGHEST,
    )


def ssim(a: Any, b: Any, data_range: float = 1.0) -> float:
    """Structural similarity (Wang et al. 2004) on images mapped to [0, 1].

    `dm_pix.ssim`: Gaussian window 11x11 with sigma 1.5, K1=0.01, K2=0.03,
    population (not sample) local covariances, computed per channel and averaged
    over the valid (unpadded) window positions and the channels; like skimage's
    `structural_similarity` with `gaussian_weights=True, use_sample_covariance=False,
    data_range=1` (dm-pix also clamps local variances at float32 eps**2 and the
    covariance at their geometric mean). For batches, the mean over images.
    `data_range` is the range of the mapped images (keep 1.0).
    """
    a, b = _pair(a, b)
    h, w = a.shape[1:3]
    if h < SSIM_WINDOW or w < SSIM_WINDOW:
        raise UserError(
            f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, got "
            f"{h}x{w}; compare larger images"
        )
    if not data_range > 0:
        raise UserError(f"data_range must be positive, got {data_range}")
    return float(jnp.mean(_ssim_per_image(a, b, jnp.float32(data_range))))


# ----------------------------------------------------------------- pixel diversity


def gray(x: np.ndarray) -> np.ndarray:
    """Grayscale of ...HWC pixels: 0.299 R + 0.587 G + 0.114 B (one channel: as is)."""
    return x[..., 0] if x.shape[-1] == 1 else x @ np.asarray(_GRAY)


def _one_image(real: Any) -> np.ndarray:
    """The real image as float64 HWC (a batch of one is unwrapped)."""
    r = np.asarray(real, dtype=np.float64)
    if r.ndim == 4 and r.shape[0] == 1:
        r = r[0]
    if r.ndim != 3:
        raise UserError(f"real must be one HWC image, got shape {r.shape}")
    return r


def pixel_diversity(samples: Any, real: Any) -> float:
    """SinGAN's diversity: per-pixel std over samples (grayscale), averaged, / std(real).

    Grayscale is 0.299 R + 0.587 G + 0.114 B; standard deviations are population
    ones (ddof=0). Samples must share one size; the real image may differ in size.
    """
    s = np.asarray(_as_nhwc(samples, "samples"), dtype=np.float64)
    r = _one_image(real)
    if s.shape[0] < 2:
        raise UserError(
            f"pixel diversity needs at least 2 samples, got {s.shape[0]}; draw more"
        )
    if s.shape[-1] != r.shape[-1] or r.shape[-1] not in (1, 3):
        raise UserError(
            f"samples ({s.shape[-1]} channels) and real ({r.shape[-1]} channels) "
            "must both be RGB (3 channels) or both grayscale (1 channel)"
        )

    real_std = float(np.std(gray(r)))
    if real_std <= 1e-12:
        raise UserError(
            "the training image is constant (zero std), so pixel diversity is "
            "undefined; evaluate on an image with content"
        )
    return float(np.mean(np.std(gray(s), axis=0)) / real_std)


# --------------------------------------------------------- contrast and saturation


def _samples_and_real(samples: Any, real: Any) -> tuple[np.ndarray, np.ndarray]:
    """Samples as float64 NHWC and the real image as float64 HWC (both RGB)."""
    s = np.asarray(_as_nhwc(samples, "samples"), dtype=np.float64)
    r = _one_image(real)
    if s.shape[-1] != 3 or r.shape[-1] != 3:
        raise UserError(
            f"samples ({s.shape[-1]} channels) and real ({r.shape[-1]} channels) "
            "must both be RGB (3 channels)"
        )
    return s, r


def hsv_saturation(x: Any) -> np.ndarray:
    """HSV saturation of ...HWC RGB pixels in [0, 1]: (max - min) / max over the
    channels, 0 where max = 0 (black). Returns the ...HW array."""
    x = np.asarray(x, dtype=np.float64)
    hi, lo = x.max(axis=-1), x.min(axis=-1)
    return np.where(hi > 0, (hi - lo) / np.where(hi > 0, hi, 1.0), 0.0)


def contrast(samples: Any, real: Any) -> float:
    """Grey-level contrast: the mean over samples of each sample's grayscale std
    (0.299 R + 0.587 G + 0.114 B, over its pixels, ddof=0) over the real image's.

    1.0 for the real image itself; below 1, flatter (paler or softer) samples.
    Samples and the real image may differ in size.
    """
    s, r = _samples_and_real(samples, real)
    real_std = float(np.std(gray(r)))
    if real_std <= 1e-12:
        raise UserError(
            "the training image is constant (zero std), so contrast is undefined; "
            "evaluate on an image with content"
        )
    per_sample = np.std(gray(s).reshape(s.shape[0], -1), axis=1)
    return float(np.mean(per_sample) / real_std)


def saturation(samples: Any, real: Any) -> float | None:
    """Colour saturation: the mean over samples of each sample's mean HSV
    saturation over the real image's, both mapped from [-1, 1] to [0, 1] and
    clipped to it (`hsv_saturation`).

    1.0 for the real image itself; below 1, greyer samples. None for a grey
    training image (mean saturation 0), where the ratio is undefined.
    """
    s, r = _samples_and_real(samples, real)
    real_sat = float(np.mean(hsv_saturation(np.clip(_to_unit(r), 0.0, 1.0))))
    if real_sat <= 1e-12:
        return None
    per_sample = np.mean(
        hsv_saturation(np.clip(_to_unit(s), 0.0, 1.0)).reshape(s.shape[0], -1), axis=1
    )
    return float(np.mean(per_sample) / real_sat)


# ----------------------------------------------------------------------- patch SWD


def _as_key(key_or_seed: Any) -> jax.Array:
    if isinstance(key_or_seed, int | np.integer):
        return jax.random.key(int(key_or_seed))
    return key_or_seed


def _level_size(h: int, w: int, level: int) -> tuple[int, int]:
    return h >> level, w >> level


@functools.partial(jax.jit, static_argnames=("max_patches",))
def _projections(
    image: jax.Array, dirs: jax.Array, key: jax.Array, max_patches: int | None
) -> jax.Array:
    """(P, M) projections of every (or a seeded subset of) patch of an HWC image."""
    x = _to_unit(image)[None]
    proj = jax.lax.conv_general_dilated(
        x, dirs, (1, 1), "VALID", dimension_numbers=_DIMS, precision=_HIGHEST
    )
    proj = proj.reshape(-1, dirs.shape[-1])
    m = proj.shape[0]
    if max_patches is not None and m > max_patches:
        # Depends only on (key, m): two images of one size get the same positions.
        idx = jax.random.permutation(key, m)[:max_patches]
        proj = proj[idx]
    return proj.T


def _sorted_projections(
    image: jax.Array, dirs: jax.Array, key: jax.Array, max_patches: int | None
) -> np.ndarray:
    # NumPy's sort is several times faster than XLA's on CPU.
    return np.sort(np.asarray(_projections(image, dirs, key, max_patches)), axis=1)


def _sliced_w1(sa: np.ndarray, sb: np.ndarray) -> float:
    """Mean over projections of the 1-D W1 distance between sorted (P, M) samples."""
    ma, mb = sa.shape[1], sb.shape[1]
    if ma != mb:
        k = max(ma, mb)
        q = np.arange(k, dtype=np.float64) + 0.5
        sa = sa[:, np.minimum((q * (ma / k)).astype(np.int64), ma - 1)]
        sb = sb[:, np.minimum((q * (mb / k)).astype(np.int64), mb - 1)]
    return float(np.mean(np.abs(sa - sb), dtype=np.float64))


def patch_swd(
    real: Any,
    fakes: Any,
    key_or_seed: Any = 0,
    patch: int = 7,
    num_projections: int = 128,
    levels: int = 3,
    max_patches: int | None = 65536,
) -> float:
    """Sliced Wasserstein-1 distance between patch distributions, over pyramid levels.

    At level l (0 = full size) each image is resized by `pyramid.resize` to
    (H >> l, W >> l). All `patch` x `patch` x C patches (stride 1; pixels mapped to
    [0, 1]) are projected on `num_projections` random unit directions drawn from the
    key (fixed per seed and level). Per direction the sorted projections of real and
    fake are matched at common quantiles ((k + 0.5) / K, K the larger count) and the
    mean absolute difference taken (1-D W1). The value is the mean over directions,
    then levels, then over the fakes (each fake is compared with the real image on
    its own). Images with more than `max_patches` patches at a level use a seeded
    subset of patch positions that depends only on the key and the count (None: all;
    the default keeps every patch of images up to about 250x250). 0 for identical
    images; symmetric for two single images. `key_or_seed` is an int or a JAX key.
    """
    r = _as_nhwc(real, "real")
    if r.shape[0] != 1:
        raise UserError(f"real must be one HWC image, got a batch of {r.shape[0]}")
    f = _as_nhwc(fakes, "fakes")
    if r.shape[-1] != f.shape[-1]:
        raise UserError(
            f"real has {r.shape[-1]} channels but fakes have {f.shape[-1]}; "
            "compare images with the same channels"
        )
    if patch < 1 or num_projections < 1 or levels < 1:
        raise UserError(
            f"patch ({patch}), num_projections ({num_projections}) and levels "
            f"({levels}) must all be at least 1"
        )
    if max_patches is not None and max_patches < 1:
        raise UserError(f"max_patches must be None or at least 1, got {max_patches}")
    for name, x in (("real", r), ("fakes", f)):
        h, w = _level_size(x.shape[1], x.shape[2], levels - 1)
        if min(h, w) < patch:
            raise UserError(
                f"{name} of size {x.shape[1]}x{x.shape[2]} is too small for "
                f"levels={levels} with patch={patch}: the coarsest level would be "
                f"{h}x{w}; pass fewer levels or a smaller patch"
            )
    key = _as_key(key_or_seed)
    c = r.shape[-1]
    per_image = np.zeros((f.shape[0],), dtype=np.float64)
    for level in range(levels):
        k_dir, k_sub = jax.random.split(jax.random.fold_in(key, level))
        dirs = jax.random.normal(k_dir, (num_projections, patch * patch * c))
        dirs = dirs / jnp.linalg.norm(dirs, axis=1, keepdims=True)
        dirs = dirs.reshape(num_projections, patch, patch, c).transpose(1, 2, 3, 0)
        rl = pyramid.resize(r, _level_size(r.shape[1], r.shape[2], level))
        fl = pyramid.resize(f, _level_size(f.shape[1], f.shape[2], level))
        sr = _sorted_projections(rl[0], dirs, k_sub, max_patches)
        for i in range(fl.shape[0]):
            sf = _sorted_projections(fl[i], dirs, k_sub, max_patches)
            per_image[i] += _sliced_w1(sr, sf)
    return float(np.mean(per_image / levels))


# ----------------------------------------------------------------- Frechet / SIFID


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any) -> float:
    """Frechet distance between two Gaussians.

    ||mu1 - mu2||^2 + tr(s1) + tr(s2) - 2 tr(sqrtm(s1 s2)), in float64. With
    s1 = V diag(w) V^T, tr(sqrtm(s1 s2)) is the sum of square roots of the
    eigenvalues of the symmetric PSD matrix diag(sqrt(w)) V^T s2 V diag(sqrt(w)),
    which has the spectrum of s1 s2 and stays real. Eigen-directions of s1 below
    its numerical rank (w <= max(w) * d * eps) are dropped, which keeps singular
    covariances (fewer positions than channels) stable: identical statistics give
    0 to about 1e-10 relative. Round-off below zero is clipped to 0.
    """
    mu1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    s1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    s2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    d = mu1.shape[0]
    if (
        mu1.ndim != 1
        or mu1.shape != mu2.shape
        or s1.shape != (d, d)
        or s2.shape != (d, d)
    ):
        raise UserError(
            f"Frechet distance needs means of shape (d,) and covariances (d, d), got "
            f"{mu1.shape}, {s1.shape}, {mu2.shape}, {s2.shape}; compute both "
            "statistics from features of the same layer"
        )
    if not all(np.all(np.isfinite(x)) for x in (mu1, mu2, s1, s2)):
        raise UserError("Frechet distance got non-finite statistics (NaN or inf)")
    s1 = 0.5 * (s1 + s1.T)
    s2 = 0.5 * (s2 + s2.T)
    w, v = np.linalg.eigh(s1)
    keep = w > max(float(w.max()), 0.0) * d * np.finfo(np.float64).eps
    tr_covmean = 0.0
    if keep.any():
        r = np.sqrt(w[keep])
        vk = v[:, keep]
        inner = r[:, None] * (vk.T @ s2 @ vk) * r[None, :]
        ev = np.linalg.eigvalsh(0.5 * (inner + inner.T))
        tr_covmean = float(np.sum(np.sqrt(np.clip(ev, 0.0, None))))
    diff = mu1 - mu2
    dist = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)
    return max(dist, 0.0)


def feature_stats(features: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (ddof=1, float64) of features (..., C); positions are samples."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim < 2:
        raise UserError(f"features must have shape (..., C), got {x.shape}")
    x = x.reshape(-1, x.shape[-1])
    if x.shape[0] < 2:
        raise UserError(
            f"feature statistics need at least 2 positions, got {x.shape[0]}; "
            "use a larger image or the earlier layer (64)"
        )
    return x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False))


def sifid(real: Any, fakes: Any, params: Any, layer: int = 64) -> np.ndarray:
    """Single-image FID of each fake against the real image; shape (N,), float64.

    `params` are the Inception variables from `inception.load_inception_weights`;
    `layer` is 64 (before the first max-pool) or 192 (before the second).
    """
    r = _as_nhwc(real, "real")
    if r.shape[0] != 1:
        raise UserError(f"real must be one HWC image, got a batch of {r.shape[0]}")
    f = _as_nhwc(fakes, "fakes")
    mu_r, s_r = feature_stats(inception.features(params, r, layer)[0])
    out = np.empty((f.shape[0],), dtype=np.float64)
    for i in range(f.shape[0]):
        mu_f, s_f = feature_stats(inception.features(params, f[i : i + 1], layer)[0])
        out[i] = frechet_distance(mu_r, s_r, mu_f, s_f)
    return out


def summarize(values: Sequence[float] | np.ndarray) -> dict[str, Any]:
    """Mean, median, std (ddof=0) and the values as a JSON-ready dict."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise UserError("summarize got no values; evaluate at least one sample")
    return {
        "mean": float(np.mean(v)),
        "median": float(np.median(v)),
        "std": float(np.std(v)),
        "values": [float(x) for x in v],
    }
