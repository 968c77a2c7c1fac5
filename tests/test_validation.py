"""Validation and input: every setting checked before any work (all
problems in one message), images decoded at reduced size, clear input messages,
and dm-pix for SSIM and the colour augmentation."""

from __future__ import annotations

import colorsys
import logging
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from agan_jax import augment, image_io, metrics, pyramid, settings
from agan_jax.applications import blending
from agan_jax.errors import UserError
from agan_jax.models import families
from tests.conftest import BUNDLED_IMAGE, ROOT, tiny_config

# -- settings: every field in range ---------------------------------------------


def _from(overrides: dict, name: str = "singan", variant: str = "tiny"):
    """Settings.from_config of a tiny config with "section.field" overrides."""
    c = settings.config_to_dict(tiny_config(name, variant))
    for key, value in overrides.items():
        if "." in key:
            section, field = key.split(".")
            c[section][field] = value
        else:
            c[key] = value
    return families.settings_from_config(c)


BAD = [
    ("model.nfc", 0),
    ("model.max_nfc", -8),
    ("model.nfc_growth", 0),
    ("model.kernel", 0),
    ("model.kernel", 4),
    ("model.num_layers", 1),
    ("model.train_depth", 0),
    ("model.lr_scale", -0.1),
    ("model.leaky_slope", 1.0),
    ("train.lr_g", -1e-4),
    ("train.lr_d", float("nan")),
    ("train.lr_g", 1e30),
    ("train.lr_d", 0.0),
    ("train.beta1", 1.0),
    ("train.beta2", -0.1),
    ("train.adam_eps", 0.0),
    ("train.gamma", 0.0),
    ("train.iters_per_stage", 0),
    ("train.d_steps", 0),
    ("train.g_steps", -1),
    ("train.lr_decay_iter", -2),
    ("train.lr_milestone", float("inf")),
    ("noise_amp_base", -0.1),
    ("loss.lambda_gp", -1.0),
    ("loss.alpha", -10.0),
    ("loss.tv_weight", -1.0),
    ("data.max_size", 0),
    ("data.min_size", 0),
    ("data.min_size", 40),  # above max_size 32
    ("data.min_size_ratio", 1.5),
    ("data.image", ""),
    ("pyramid.num_stages", 1),
    ("pyramid.r0", 1.0),
    ("augment.p_colour", 1.5),
    ("augment.noise_std", -0.1),
    ("augment.cutout_max", 2.0),
]


@pytest.mark.parametrize("key,value", BAD)
def test_each_bad_value_is_named_with_its_range(key, value):
    with pytest.raises(UserError) as e:
        _from({key: value})
    message = str(e.value)
    assert f"config.{key} = {value!r}: must be " in message, message
    assert "\n" not in message  # one problem: one line


def test_learning_rate_upper_bound_is_one():
    assert _from({"train.lr_g": 1.0, "train.lr_d": 1.0}).train.lr_g == 1.0
    with pytest.raises(UserError, match=r"config.train.lr_g = 1.5: must be .*\(0, 1\]"):
        _from({"train.lr_g": 1.5})


def test_every_problem_is_listed_at_once():
    bad = {
        "model.nfc": 0,
        "model.kernel": 4,
        "train.lr_g": -0.001,
        "train.lr_d": float("nan"),
        "train.beta1": 1.0,
        "loss.lambda_gp": -1.0,
        "train.iters_per_stage": "many",  # a conversion problem, listed too
    }
    with pytest.raises(UserError) as e:
        _from(bad)
    lines = str(e.value).splitlines()
    assert lines[0].startswith("7 config values are invalid")
    for key, value in bad.items():
        assert any(
            line.strip().startswith(f"config.{key} = {value!r}: must be")
            for line in lines[1:]
        ), (key, lines)


def test_min_size_below_the_critic_receptive_field():
    """SinGAN's critic (5 valid 3x3 convs) removes 10 pixels: min_size 10 leaves
    nothing to score; 11 is fine."""
    assert _from({"data.min_size": 11}).data.min_size == 11
    with pytest.raises(UserError, match=r"config.data.min_size = 10: must be > 10"):
        _from({"data.min_size": 10})
    # ConSinGAN, 3 layers of 5x5: head, 3 body convs and tail remove 5 x 4 = 20.
    big = {"model.kernel": 5, "model.num_layers": 3}
    assert _from({"data.min_size": 21, **big}, "consingan").data.min_size == 21
    with pytest.raises(UserError, match=r"config.data.min_size = 20: must be > 20"):
        _from({"data.min_size": 20, **big}, "consingan")


def test_family_mode_is_checked_with_the_settings():
    with pytest.raises(UserError, match="config.model.mode = 'zoom'"):
        _from({"model.mode": "zoom"}, "consingan")


def test_derived_min_size_must_fit_max_size():
    """harmonization: min_size = max(16, round(0.48 x max_size)) > max_size 12."""
    with pytest.raises(UserError, match=r"config.data.max_size = 12: must be >= 16"):
        _from({"data.max_size": 12}, "consingan", "harmonization,tiny")


def test_train_launcher_refuses_nfc_0_before_any_work(tmp_path):
    workdir = tmp_path / "w"
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "launch.train",
            "--config=configs/singan.py:tiny",
            f"--config.data.image={BUNDLED_IMAGE}",
            "--config.model.nfc=0",
            f"--workdir={workdir}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert p.returncode == 2, p.stderr
    assert "config.model.nfc = 0: must be an integer >= 1" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr
    assert not workdir.exists() or os.listdir(workdir) == []


# -- images decoded at reduced size -----------------------------------------------


def _photo(h: int, w: int) -> np.ndarray:
    """A smooth colour image with some texture (JPEG-friendly)."""
    yy, xx = np.mgrid[0:h, 0:w]
    r = 128 + 100 * np.sin(xx / 37.0) * np.cos(yy / 23.0)
    g = 255 * xx / w
    b = 255 * yy / h
    return np.stack([r, g, b], -1).clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def big_jpeg(tmp_path_factory):
    p = tmp_path_factory.mktemp("big") / "big.jpg"
    Image.fromarray(_photo(3000, 4000)).save(p, quality=90)
    return p


def test_large_jpeg_decoded_with_draft_to_the_same_size(big_jpeg, monkeypatch):
    drafts = []
    original = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        out = original(self, mode, size)
        drafts.append((size, self.size))
        return out

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    x = image_io.load_image(big_jpeg, 64)
    assert x.shape == (48, 64, 3) == (*pyramid.finest_size((3000, 4000), 64), 3)
    # Decoded by DCT scaling (1/8: 500x375), at least REDUCE_KEEP x 64 kept.
    assert len(drafts) == 1 and drafts[0][1] == (500, 375), drafts
    img, hw = image_io._open(big_jpeg, "image", "fix", target=64)
    assert hw == (3000, 4000)
    assert image_io.REDUCE_KEEP * 64 <= max(img.size) <= 4000 // 2
    # The same picture as the full decode resized directly (to 8-bit precision).
    full, _ = image_io._open(big_jpeg, "image", "fix")
    ref = np.asarray(full, np.float32) / 127.5 - 1.0
    ref = np.clip(np.asarray(pyramid.resize(ref, (48, 64))), -1, 1)
    assert np.abs(x - ref).max() < 4 / 255, np.abs(x - ref).max()
    assert full.size == (4000, 3000)


def test_large_png_box_reduced_and_rotated_jpeg_keeps_orientation(tmp_path):
    px = _photo(1500, 2100)
    p = tmp_path / "big.png"
    Image.fromarray(px).save(p)
    img, hw = image_io._open(p, "image", "fix", target=64)
    assert hw == (1500, 2100) and img.size == (
        263,
        188,
    )  # ceil(2100 / 8), ceil(1500 / 8)
    assert image_io.load_image(p, 64).shape == (46, 64, 3)
    # EXIF orientation 6 (rotate 90): the file is 2000x1000 (WxH), shown 1000x2000.
    q = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(_photo(1000, 2000)).save(q, exif=exif)
    assert image_io.file_size(q) == (2000, 1000)
    assert image_io.load_image(q, 64).shape == (64, 32, 3)


@pytest.mark.parametrize("max_size", [32, 64, 250])
def test_small_images_are_decoded_as_before(max_size):
    """colusseum (188x250) is not reduced at the sizes the configs use: the result
    is the full decode resized, bit for bit."""
    img, hw = image_io._open(BUNDLED_IMAGE, "image", "fix", target=max_size)
    assert img.size == (250, 188) and hw == (188, 250)
    x = np.asarray(img, np.float64)[..., :3] / 255.0  # RGBA, fully opaque
    x = (x * 2.0 - 1.0).astype(np.float32)
    want = pyramid.finest_size(hw, max_size)
    if want != hw:
        x = np.clip(np.asarray(pyramid.resize(x, want)), -1, 1)
    np.testing.assert_array_equal(image_io.load_image(BUNDLED_IMAGE, max_size), x)


def test_decompression_bomb_is_a_user_error(tmp_path, monkeypatch, caplog):
    p = tmp_path / "bomb.png"
    Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(p)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 4000)
    with pytest.raises(UserError) as e:
        image_io.load_image(p, 32)
    message = str(e.value)
    assert "10,000 pixels" in message and "8,000 pixels" in message, message
    assert "downscale it" in message and "--config.data.image=PATH" in message
    # Between the limit and twice it Pillow only warns: loaded, with a log line.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 6000)
    with caplog.at_level(logging.WARNING, logger="agan_jax.image_io"):
        assert image_io.load_image(p, 32).shape == (32, 32, 3)
    assert "10000 pixels" in caplog.text


# -- input messages -----------------------------------------------------------------


def test_black_and_white_rgb_mask_is_binary(tmp_path, caplog):
    m = np.zeros((8, 10, 3), np.uint8)
    m[2:5, 3:7] = 255
    p = tmp_path / "mask.png"
    Image.fromarray(m).save(p)
    with caplog.at_level(logging.WARNING, logger="agan_jax.image_io"):
        mask = image_io.load_mask(p, (8, 10))
    assert "not binary" not in caplog.text
    np.testing.assert_array_equal(mask, (m[..., 0] == 255).astype(np.float32))
    grey = m.copy()
    grey[0, 0] = 128
    Image.fromarray(grey).save(p)
    with caplog.at_level(logging.WARNING, logger="agan_jax.image_io"):
        image_io.load_mask(p, (8, 10))
    assert "not binary" in caplog.text


def test_empty_image_path_is_named(tmp_path):
    with pytest.raises(UserError, match="the image path is empty") as e:
        image_io.load_image("")
    assert "directory" not in str(e.value)
    assert "--config.data.image=PATH" in str(e.value)
    assert image_io.resolve_path("") == ""
    with pytest.raises(
        UserError, match="config.data.image = ' ': must be a non-empty path"
    ):
        _from({"data.image": " "})


@pytest.mark.parametrize("flag", ["--paint", "--image", "--naive"])
def test_image_errors_name_the_flag_given(tmp_path, flag):
    missing = str(tmp_path / "missing.png")
    with pytest.raises(UserError) as e:
        image_io.load_image(missing, flag=flag)
    assert f"{flag}=PATH" in str(e.value) and "config.data.image" not in str(e.value)
    with pytest.raises(UserError) as e:
        image_io.load_image("", flag=flag)
    assert f"{flag}=PATH" in str(e.value)


def test_harmonize_and_edit_files_name_naive_and_mask(tmp_path):
    """launch.harmonize and launch.edit load through load_naive_and_mask."""
    missing = str(tmp_path / "missing.png")
    with pytest.raises(UserError, match="--naive=PATH") as e:
        blending.load_naive_and_mask(None, missing, missing)
    assert "config.data.image" not in str(e.value)
    naive = tmp_path / "naive.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(naive)
    with pytest.raises(UserError, match="--mask=PATH"):
        blending.load_naive_and_mask(None, str(naive), missing)


@pytest.mark.parametrize("module,flag", [("paint", "--paint"), ("sr", "--image")])
def test_launchers_pass_their_flag(module, flag):
    with open(os.path.join(ROOT, "launch", f"{module}.py")) as f:
        assert f'flag="{flag}"' in f.read()


# -- dm-pix: SSIM and the colour augmentation -----------------------------------


def _ssim_numpy(a: np.ndarray, b: np.ndarray) -> float:
    """Wang et al. (2004) SSIM in float64: 11-tap Gaussian (sigma 1.5) separable
    'valid' filtering per channel, K1 0.01, K2 0.03, data range 1, images in [0, 1]."""
    t = np.arange(11) - 5.0
    g = np.exp(-(t**2) / (2 * 1.5**2))
    g /= g.sum()

    def blur(x):
        h, w = x.shape[:2]
        y = sum(g[i] * x[i : h - 10 + i] for i in range(11))
        return sum(g[j] * y[:, j : w - 10 + j] for j in range(11))

    a, b = a.astype(np.float64), b.astype(np.float64)
    ma, mb = blur(a), blur(b)
    va, vb = blur(a * a) - ma**2, blur(b * b) - mb**2
    cov = blur(a * b) - ma * mb
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2))
    return float(s.mean())


def test_ssim_matches_numpy_reference_and_previous_values():
    rng = np.random.default_rng(0)
    real = image_io.load_image(BUNDLED_IMAGE, 64)
    noisy = np.clip(real + rng.normal(0, 0.2, real.shape), -1, 1).astype(np.float32)
    flipped = real[:, ::-1].copy()
    for other in (noisy, flipped):
        want = _ssim_numpy((real + 1) / 2, (other + 1) / 2)
        assert metrics.ssim(real, other) == pytest.approx(want, abs=2e-6)
    # The hand-written SSIM this replaced gave these (its own 'valid' Gaussian).
    assert metrics.ssim(real, noisy) == pytest.approx(0.58992654, abs=1e-5)
    assert metrics.ssim(real, flipped) == pytest.approx(0.24000047, abs=1e-5)


def test_colour_transform_is_dm_pix_adjustments():
    """Contrast about the channel means, brightness, HSV saturation (colorsys), then
    per-channel gains, with the random draws of the same key splits."""
    x = np.random.default_rng(1).uniform(-1, 1, (5, 6, 3)).astype(np.float32)
    key = jax.random.key(3)
    got = np.asarray(augment.colour_transform(key, jnp.asarray(x)))
    kc, kb, ks, kg = jax.random.split(key, 4)
    contrast = float(jax.random.uniform(kc, (), minval=0.7, maxval=1.3))
    brightness = float(jax.random.uniform(kb, (), minval=-0.2, maxval=0.2))
    sat = float(jax.random.uniform(ks, (), minval=0.5, maxval=1.5))
    gains = np.asarray(jax.random.uniform(kg, (3,), minval=0.85, maxval=1.15))
    u = (x.astype(np.float64) + 1) / 2
    mean = u.mean(axis=(0, 1))
    u = np.clip((u - mean) * contrast + mean + brightness / 2, 0, 1)
    out = np.empty_like(u)
    for i in range(u.shape[0]):
        for j in range(u.shape[1]):
            h, s, v = colorsys.rgb_to_hsv(*u[i, j])
            out[i, j] = colorsys.hsv_to_rgb(h, min(1.0, s * sat), v)
    want = np.clip(out * gains * 2 - 1, -1, 1)
    np.testing.assert_allclose(got, want, atol=2e-5)
    assert not math.isclose(contrast, 1.0) and not np.allclose(got, x)
