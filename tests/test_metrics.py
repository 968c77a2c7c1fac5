"""Tests for agan_jax.metrics against plain NumPy/SciPy references."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from scipy import linalg, ndimage

from agan_jax import inception, metrics
from agan_jax.errors import UserError


def smooth_image(seed: int, h: int = 40, w: int = 48) -> np.ndarray:
    """A structured HWC image in [-1, 1]: sinusoids plus a little noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    chans = []
    for _ in range(3):
        fy, fx, ph = rng.uniform(0.05, 0.4, 2).tolist() + [rng.uniform(0, 6)]
        chans.append(np.sin(fy * y + ph) * np.cos(fx * x))
    img = 0.7 * np.stack(chans, -1) + 0.1 * rng.normal(size=(h, w, 3))
    return np.clip(img, -1, 1).astype(np.float32)


# ------------------------------------------------------------------------------ RMSE


def test_rmse_values_and_broadcast():
    a = np.full((16, 16, 3), -1.0, np.float32)
    b = np.full((16, 16, 3), 1.0, np.float32)
    assert metrics.rmse(a, a) == 0.0
    assert metrics.rmse(a, b) == pytest.approx(1.0)  # [0, 1] range: 0 vs 1
    assert metrics.rmse(np.zeros_like(a), b) == pytest.approx(0.5)
    x, y = smooth_image(0), smooth_image(1)
    want = np.sqrt(np.mean(((x - y) / 2.0) ** 2))
    assert metrics.rmse(x, y) == pytest.approx(want, rel=1e-5)
    batch = np.stack([x, y])
    assert metrics.rmse(batch, x) == pytest.approx(want / 2, rel=1e-5)
    with pytest.raises(UserError, match="differ in size"):
        metrics.rmse(x, x[:-1])


# ------------------------------------------------------------------------------ SSIM


def ssim_reference(a: np.ndarray, b: np.ndarray) -> float:
    """Wang et al. SSIM with SciPy's Gaussian filter (11 taps), valid region only."""
    a = (a.astype(np.float64) + 1) / 2
    b = (b.astype(np.float64) + 1) / 2
    c1, c2 = (0.01 * 1.0) ** 2, (0.03 * 1.0) ** 2
    vals = []
    for ch in range(a.shape[-1]):
        x, y = a[..., ch], b[..., ch]

        def f(z):
            # sigma 1.5, truncate 3.5 -> radius 5 -> an 11-tap window; crop the border
            return ndimage.gaussian_filter(z, 1.5, truncate=3.5)[5:-5, 5:-5]

        mx, my = f(x), f(y)
        vx, vy, cxy = f(x * x) - mx**2, f(y * y) - my**2, f(x * y) - mx * my
        s = ((2 * mx * my + c1) * (2 * cxy + c2)) / (
            (mx**2 + my**2 + c1) * (vx + vy + c2)
        )
        vals.append(s.mean())
    return float(np.mean(vals))


def test_ssim_identity_and_reference():
    x = smooth_image(0)
    assert metrics.ssim(x, x) == pytest.approx(1.0, abs=1e-6)
    rng = np.random.default_rng(5)
    y = np.clip(x + 0.3 * rng.normal(size=x.shape), -1, 1).astype(np.float32)
    got = metrics.ssim(x, y)
    want = ssim_reference(x, y)
    assert 0.05 < want < 0.95
    assert got == pytest.approx(want, abs=1e-4)
    u = rng.uniform(-1, 1, (2, 30, 33, 3)).astype(np.float32)  # unrelated noise pair
    assert metrics.ssim(u[0], u[1]) == pytest.approx(
        ssim_reference(u[0], u[1]), abs=1e-4
    )
    z = smooth_image(7)
    both = metrics.ssim(np.stack([y, z]), x)
    assert both == pytest.approx((want + ssim_reference(z, x)) / 2, abs=1e-4)


def test_ssim_too_small():
    with pytest.raises(UserError, match="at least 11x11"):
        metrics.ssim(np.zeros((10, 20, 3)), np.zeros((10, 20, 3)))


# ------------------------------------------------------------------------- diversity


def test_pixel_diversity():
    x = smooth_image(0)
    same = np.stack([x, x, x])
    assert metrics.pixel_diversity(same, x) == pytest.approx(0.0, abs=1e-6)
    s = np.stack([smooth_image(i) for i in range(1, 5)])
    g = s.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    gr = x.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    want = np.std(g, axis=0).mean() / np.std(gr)
    assert metrics.pixel_diversity(s, x) == pytest.approx(want, rel=1e-6)
    with pytest.raises(UserError, match="at least 2 samples"):
        metrics.pixel_diversity(x[None], x)
    with pytest.raises(UserError, match="constant"):
        metrics.pixel_diversity(s, np.zeros_like(x))


# ------------------------------------------------------------------------- patch SWD


def test_patch_swd_properties():
    real = smooth_image(0, 32, 36)
    rng = np.random.default_rng(1)
    assert metrics.patch_swd(real, real) == 0.0
    other = smooth_image(3, 32, 36)
    d1 = metrics.patch_swd(real, other, key_or_seed=4)
    assert d1 > 0
    assert metrics.patch_swd(other, real, key_or_seed=4) == pytest.approx(d1, rel=1e-6)
    assert metrics.patch_swd(real, other, key_or_seed=4) == d1  # deterministic
    assert metrics.patch_swd(real, other, key_or_seed=5) != d1  # projections from seed
    assert metrics.patch_swd(real, other, key_or_seed=jax.random.key(4)) == d1
    noise = rng.normal(size=real.shape)
    vals = [
        metrics.patch_swd(real, np.clip(real + s * noise, -1, 1).astype(np.float32))
        for s in (0.05, 0.2, 0.5)
    ]
    assert 0 < vals[0] < vals[1] < vals[2]
    # Batches: mean of the per-image values; subsampled patches keep 0 and symmetry.
    both = metrics.patch_swd(real, np.stack([real, other]), key_or_seed=4)
    assert both == pytest.approx(d1 / 2, rel=1e-5)
    assert metrics.patch_swd(real, real, max_patches=50) == 0.0
    assert metrics.patch_swd(real, other, max_patches=50) == pytest.approx(
        metrics.patch_swd(other, real, max_patches=50), rel=1e-6
    )


def test_patch_swd_different_sizes_and_errors():
    real = smooth_image(0, 32, 36)
    bigger = smooth_image(0, 40, 36)
    assert metrics.patch_swd(real, bigger, levels=2) > 0
    with pytest.raises(UserError, match="too small"):
        metrics.patch_swd(real, real, levels=4)
    with pytest.raises(UserError, match="one HWC image"):
        metrics.patch_swd(np.stack([real, real]), real)


# ------------------------------------------------------------------------- Frechet


def random_gaussian(rng: np.random.Generator, d: int, n: int):
    a = rng.normal(size=(d, d))
    x = rng.normal(size=(n, d)) @ a + rng.normal(size=d)
    return x.mean(0), np.cov(x, rowvar=False)


def frechet_reference(mu1, s1, mu2, s2) -> float:
    covmean = linalg.sqrtm(s1 @ s2).real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


@pytest.mark.parametrize("d,n", [(4, 50), (32, 400), (16, 10), (192, 144)])
def test_frechet_matches_scipy(d, n):
    rng = np.random.default_rng(d)
    mu1, s1 = random_gaussian(rng, d, n)
    mu2, s2 = random_gaussian(rng, d, n)
    got = metrics.frechet_distance(mu1, s1, mu2, s2)
    want = frechet_reference(mu1, s1, mu2, s2)
    assert got == pytest.approx(want, rel=1e-4)
    assert metrics.frechet_distance(mu2, s2, mu1, s1) == pytest.approx(got, rel=1e-9)


@pytest.mark.parametrize("d,n", [(8, 100), (64, 841), (192, 144), (192, 5000)])
def test_frechet_identical_is_zero(d, n):
    rng = np.random.default_rng(0)
    mu, s = random_gaussian(rng, d, n)  # n < d: a singular covariance
    assert metrics.frechet_distance(mu, s, mu, s) < 1e-6


def test_frechet_zero_covariance():
    z = np.zeros((3, 3))
    assert metrics.frechet_distance(np.zeros(3), z, np.ones(3), z) == pytest.approx(3.0)


def test_frechet_bad_shapes():
    with pytest.raises(UserError, match="covariances"):
        metrics.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_feature_stats():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(5, 6, 4)).astype(np.float32)
    mu, sigma = metrics.feature_stats(f)
    flat = f.reshape(-1, 4).astype(np.float64)
    np.testing.assert_allclose(mu, flat.mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(flat, rowvar=False), rtol=1e-12)
    assert mu.dtype == np.float64 and sigma.shape == (4, 4)
    with pytest.raises(UserError, match="at least 2 positions"):
        metrics.feature_stats(np.zeros((1, 1, 4)))


# ---------------------------------------------------------------------------- SIFID


def synthetic_inception_variables():
    from tests.test_inception import random_state_dict

    return inception.variables_from_state_dict(random_state_dict(0))


@pytest.mark.parametrize("layer", [64, 192])
def test_sifid(layer):
    params = synthetic_inception_variables()
    x = smooth_image(0, 64, 64)
    y = smooth_image(1, 64, 64)
    vals = metrics.sifid(x, np.stack([x, y]), params, layer=layer)
    assert vals.shape == (2,) and vals.dtype == np.float64
    assert vals[0] < 1e-3
    assert vals[1] > 1e-2


def test_summarize():
    s = metrics.summarize([3.0, 1.0, 2.0, 10.0])
    assert s == {
        "mean": 4.0,
        "median": 2.5,
        "std": pytest.approx(np.std([3, 1, 2, 10])),
        "values": [3.0, 1.0, 2.0, 10.0],
    }
    with pytest.raises(UserError, match="no values"):
        metrics.summarize([])


def _np_gray(x):
    # The grey weights of metrics.gray (ITU-R BT.601).
    return 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]


def _np_saturation(x):
    # HSV saturation of RGB in [0, 1], pixel by pixel: (max - min) / max, 0 at black.
    out = np.zeros(x.shape[:-1])
    for idx in np.ndindex(*x.shape[:-1]):
        hi, lo = max(x[idx]), min(x[idx])
        out[idx] = 0.0 if hi == 0 else (hi - lo) / hi
    return out


def test_contrast_and_saturation_against_numpy():
    rng = np.random.default_rng(5)
    real = rng.uniform(-1, 1, (9, 11, 3)).astype(np.float32)
    fakes = np.clip(0.6 * rng.uniform(-1, 1, (4, 9, 11, 3)), -1, 1).astype(np.float32)
    fakes[0, 0, 0] = -1.0  # a black pixel: saturation 0 there, not 0/0
    want_c = np.mean([np.std(_np_gray(f)) for f in fakes]) / np.std(_np_gray(real))
    unit = lambda x: (np.asarray(x, np.float64) + 1) / 2  # noqa: E731
    want_s = np.mean([_np_saturation(unit(f)).mean() for f in fakes])
    want_s /= _np_saturation(unit(real)).mean()
    assert metrics.contrast(fakes, real) == pytest.approx(want_c, rel=1e-6)
    assert metrics.saturation(fakes, real) == pytest.approx(want_s, rel=1e-6)
    assert 0.2 < want_c < 0.9 and 0.2 < want_s < 1.5  # a real difference measured
    # The training image against itself: 1.0 for both.
    assert metrics.contrast(real, real) == pytest.approx(1.0, rel=1e-6)
    assert metrics.saturation(real[None], real) == pytest.approx(1.0, rel=1e-6)
    np.testing.assert_allclose(
        metrics.hsv_saturation(unit(fakes)), _np_saturation(unit(fakes)), rtol=1e-12
    )
    assert metrics.hsv_saturation(np.zeros((2, 2, 3)))[0, 0] == 0.0


def test_contrast_is_per_sample_and_saturation_of_greys():
    rng = np.random.default_rng(6)
    real = rng.uniform(-1, 1, (8, 8, 3))
    # A sample that is the real image shifted in brightness keeps its contrast;
    # halving the spread around the mean halves it.
    shifted = np.clip(real * 0.5 + 0.2, -1, 1)
    assert metrics.contrast(shifted[None], real) == pytest.approx(0.5, rel=1e-6)
    grey = np.repeat(real[..., :1], 3, axis=-1)
    assert metrics.saturation(grey[None], real) == 0.0
    assert metrics.saturation(real[None], grey) is None  # undefined for a grey image
    with pytest.raises(UserError, match="constant"):
        metrics.contrast(real[None], np.zeros((8, 8, 3)))
    with pytest.raises(UserError, match="RGB"):
        metrics.saturation(real[None, ..., :1], real)
