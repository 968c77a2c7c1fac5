"""Tests for agan_jax.image_io: loading, validation, saving, grids, GIFs, hashes."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agan_jax import image_io
from agan_jax.errors import UserError

REPO = Path(__file__).resolve().parents[1]


def _rgb(h: int = 6, w: int = 5, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _read(p: Path) -> Image.Image:
    with Image.open(p) as im:
        im.load()
        return im


def _save(tmp_path: Path, name: str, img: Image.Image) -> Path:
    p = tmp_path / name
    img.save(p)
    return p


# ---------------------------------------------------------------- load_image


def test_rgb_round_trip_exact(tmp_path):
    px = _rgb()
    p = _save(tmp_path, "rgb.png", Image.fromarray(px))
    x = image_io.load_image(p)
    assert x.dtype == np.float32 and x.shape == (6, 5, 3)
    assert x.min() >= -1 and x.max() <= 1
    np.testing.assert_array_equal(image_io.to_uint8(x), px)
    np.testing.assert_allclose(x, image_io.from_uint8(px), atol=1e-6)


def test_grayscale_gives_three_equal_channels(tmp_path):
    g = np.arange(30, dtype=np.uint8).reshape(5, 6) * 8
    p = _save(tmp_path, "g.png", Image.fromarray(g))
    x = image_io.load_image(p)
    assert x.shape == (5, 6, 3)
    for c in range(3):
        np.testing.assert_array_equal(image_io.to_uint8(x[..., c]), g)


def test_la_drops_alpha(tmp_path):
    la = np.stack([np.full((3, 4), 200, np.uint8), np.full((3, 4), 255, np.uint8)], -1)
    p = _save(tmp_path, "la.png", Image.fromarray(la, "LA"))
    x = image_io.load_image(p)
    assert x.shape == (3, 4, 3)
    np.testing.assert_array_equal(image_io.to_uint8(x), 200)


def test_rgba_alpha_dropped_opaque_no_warning(tmp_path, caplog):
    px = _rgb()
    rgba = np.concatenate([px, np.full((6, 5, 1), 255, np.uint8)], -1)
    p = _save(tmp_path, "rgba.png", Image.fromarray(rgba, "RGBA"))
    with caplog.at_level(logging.WARNING, logger="agan_jax.image_io"):
        x = image_io.load_image(p)
    assert x.shape == (6, 5, 3)
    np.testing.assert_array_equal(image_io.to_uint8(x), px)
    assert not caplog.records


def test_rgba_transparent_warns(tmp_path, caplog):
    px = _rgb()
    alpha = np.full((6, 5, 1), 255, np.uint8)
    alpha[0, 0] = 10
    p = _save(tmp_path, "t.png", Image.fromarray(np.concatenate([px, alpha], -1)))
    with caplog.at_level(logging.WARNING, logger="agan_jax.image_io"):
        x = image_io.load_image(p)
    np.testing.assert_array_equal(image_io.to_uint8(x), px)
    assert "alpha" in caplog.text and str(p) in caplog.text


def test_palette(tmp_path):
    px = _rgb(8, 8)
    pal = Image.fromarray(px).quantize(colors=4)
    assert pal.mode == "P"
    p = _save(tmp_path, "p.png", pal)
    x = image_io.load_image(p)
    assert x.shape == (8, 8, 3)
    np.testing.assert_array_equal(image_io.to_uint8(x), np.asarray(pal.convert("RGB")))


def test_16bit_grayscale_exact_scaling(tmp_path):
    a = np.array([[0, 32768, 65535]], dtype=np.uint16)
    p = _save(tmp_path, "g16.png", Image.fromarray(a))
    assert _read(p).mode.startswith("I")
    x = image_io.load_image(p)
    assert x.shape == (1, 3, 3) and x.dtype == np.float32
    assert x[0, 0, 0] == -1.0 and x[0, 2, 0] == 1.0
    assert abs(x[0, 1, 0]) < 1e-4
    np.testing.assert_array_equal(x[..., 0], x[..., 2])


def test_16bit_mode_i(tmp_path):
    a = np.array([[0, 65535]], dtype=np.int32)
    p = _save(tmp_path, "i.tiff", Image.fromarray(a, "I"))
    x = image_io.load_image(p)
    np.testing.assert_array_equal(x[0, :, 0], [-1.0, 1.0])


def test_float_mode_f(tmp_path):
    a = np.array([[0.0, 0.5, 1.0]], dtype=np.float32)
    p = _save(tmp_path, "f.tiff", Image.fromarray(a, "F"))
    x = image_io.load_image(p)
    np.testing.assert_allclose(x[0, :, 1], [-1.0, 0.0, 1.0], atol=1e-6)


def test_palette_with_transparency_and_bilevel(tmp_path):
    pal = Image.fromarray(_rgb(4, 4)).quantize(colors=3)
    pal.info["transparency"] = 0
    p = _save(tmp_path, "pt.png", pal)
    x = image_io.load_image(p)
    np.testing.assert_array_equal(image_io.to_uint8(x), np.asarray(pal.convert("RGB")))
    bits = np.array([[0, 1, 1]], bool)
    b = _save(tmp_path, "b.png", Image.fromarray(bits))
    assert _read(b).mode == "1"
    np.testing.assert_array_equal(image_io.load_image(b)[..., 0], [[-1, 1, 1]])


def test_mode_i_out_of_range_rescaled_with_warning(tmp_path, caplog):
    a = np.array([[-100, 0, 100000]], dtype=np.int32)
    p = _save(tmp_path, "wide.tiff", Image.fromarray(a, "I"))
    with caplog.at_level(logging.WARNING, logger="agan_jax.image_io"):
        x = image_io.load_image(p)
    assert x[0, 0, 0] == -1.0 and x[0, 2, 0] == 1.0
    assert "rescaled" in caplog.text


def test_cmyk(tmp_path):
    p = _save(tmp_path, "c.jpg", Image.new("CMYK", (4, 3), (0, 0, 0, 0)))
    x = image_io.load_image(p)
    assert x.shape == (3, 4, 3)
    assert x.min() > 0.9  # no ink = white


def test_max_size_resize(tmp_path):
    p = _save(tmp_path, "big.png", Image.fromarray(_rgb(30, 50)))
    x = image_io.load_image(p, max_size=20)
    assert x.shape == (12, 20, 3)  # 30 * 20 / 50 = 12 exactly
    # The official imresize rule: sides rounded up (30 * 22 / 50 = 13.2 -> 14).
    assert image_io.load_image(p, max_size=22).shape == (14, 22, 3)
    assert x.min() >= -1 and x.max() <= 1
    tall = _save(tmp_path, "tall.png", Image.fromarray(_rgb(50, 3)))
    assert image_io.load_image(tall, max_size=10).shape == (10, 1, 3)
    # No upscaling when the image is already small enough.
    assert image_io.load_image(p, max_size=100).shape == (30, 50, 3)


def test_min_size_error(tmp_path):
    p = _save(tmp_path, "small.png", Image.fromarray(_rgb(30, 50)))
    with pytest.raises(UserError) as e:
        image_io.load_image(p, max_size=20, min_size=25)
    msg = str(e.value)
    assert str(p) in msg and "12x20" in msg and "--config.data.min_size" in msg
    assert image_io.load_image(p, min_size=30).shape == (30, 50, 3)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_bad_size_args(tmp_path, bad):
    p = _save(tmp_path, "x.png", Image.fromarray(_rgb()))
    with pytest.raises(UserError, match="positive integer"):
        image_io.load_image(p, max_size=bad)


def test_missing_file(tmp_path):
    p = tmp_path / "nope.png"
    with pytest.raises(UserError, match="not found") as e:
        image_io.load_image(p)
    assert str(p) in str(e.value) and "--config.data.image" in str(e.value)


def test_directory(tmp_path):
    with pytest.raises(UserError, match="directory") as e:
        image_io.load_image(tmp_path)
    assert str(tmp_path) in str(e.value)


def test_not_an_image(tmp_path):
    p = tmp_path / "x.png"
    p.write_text("this is not a PNG\n")
    with pytest.raises(UserError) as e:
        image_io.load_image(p)
    assert str(p) in str(e.value)


def test_truncated_png(tmp_path):
    p = _save(tmp_path, "full.png", Image.fromarray(_rgb(20, 30)))
    data = p.read_bytes()
    t = tmp_path / "trunc.png"
    t.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError) as e:
        image_io.load_image(t)
    assert str(t) in str(e.value)
    with pytest.raises(UserError):
        image_io.load_mask(t, (20, 30))


def test_bundled_image():
    x = image_io.load_image(REPO / "data" / "colusseum.png", max_size=64)
    # 188 * 64 / 250 = 48.128, rounded up as official SinGAN/ConSinGAN resize it.
    assert x.shape == (49, 64, 3)
    assert x.dtype == np.float32 and x.min() >= -1 and x.max() <= 1


# ---------------------------------------------------------------- load_mask


def test_mask_binary_no_warning(tmp_path, caplog):
    m = np.zeros((4, 6), np.uint8)
    m[1:3, 2:5] = 255
    p = _save(tmp_path, "m.png", Image.fromarray(m))
    with caplog.at_level(logging.WARNING, logger="agan_jax.image_io"):
        mask = image_io.load_mask(p, (4, 6))
    assert mask.dtype == np.float32 and mask.shape == (4, 6)
    np.testing.assert_array_equal(mask, m / 255)
    assert not caplog.records


def test_mask_threshold_warns(tmp_path, caplog):
    m = np.array([[0, 100, 127, 128, 200, 255]], np.uint8)
    p = _save(tmp_path, "m.png", Image.fromarray(m))
    with caplog.at_level(logging.WARNING, logger="agan_jax.image_io"):
        mask = image_io.load_mask(p, (1, 6))
    np.testing.assert_array_equal(mask, [[0, 0, 0, 1, 1, 1]])
    assert "threshold" in caplog.text and str(p) in caplog.text


def test_mask_rgb_and_resize(tmp_path):
    m = np.zeros((8, 8, 3), np.uint8)
    m[:, 4:] = 255
    p = _save(tmp_path, "m.png", Image.fromarray(m))
    mask = image_io.load_mask(p, (4, 2))
    assert mask.shape == (4, 2)
    np.testing.assert_array_equal(mask, [[0, 1]] * 4)
    assert set(np.unique(mask)) <= {0.0, 1.0}


def test_mask_empty(tmp_path):
    p = _save(tmp_path, "m.png", Image.fromarray(np.zeros((4, 4), np.uint8)))
    with pytest.raises(UserError, match="no pixels set") as e:
        image_io.load_mask(p, (4, 4))
    assert str(p) in str(e.value) and "white" in str(e.value)


def test_mask_missing(tmp_path):
    p = tmp_path / "nomask.png"
    with pytest.raises(UserError) as e:
        image_io.load_mask(p, (4, 4))
    assert str(p) in str(e.value)


# ---------------------------------------------------------------- uint8, save


def test_uint8_conversions():
    u = np.arange(256, dtype=np.uint8)
    f = image_io.from_uint8(u)
    assert f.dtype == np.float32 and f[0] == -1 and f[-1] == 1
    np.testing.assert_array_equal(image_io.to_uint8(f), u)
    np.testing.assert_array_equal(
        image_io.to_uint8(np.array([-2.0, -1.0, 0.0, 1.0, 3.0])), [0, 0, 128, 255, 255]
    )
    with pytest.raises(ValueError):
        image_io.to_uint8(np.array([np.nan]))
    with pytest.raises(ValueError):
        image_io.from_uint8(np.zeros(3, np.int32))


def test_save_image_round_trip(tmp_path):
    px = _rgb()
    p = tmp_path / "sub" / "dir" / "out.png"
    image_io.save_image(p, image_io.from_uint8(px))
    np.testing.assert_array_equal(np.asarray(_read(p)), px)
    np.testing.assert_array_equal(image_io.to_uint8(image_io.load_image(p)), px)


def test_save_image_gray_and_value_range(tmp_path):
    att = np.array([[0.0, 0.5, 1.0]], np.float32)
    p = tmp_path / "att.png"
    image_io.save_image(p, att, value_range=(0, 1))
    im = _read(p)
    assert im.mode == "L"
    np.testing.assert_array_equal(np.asarray(im), [[0, 128, 255]])
    image_io.save_image(tmp_path / "att1.png", att[..., None] * 2 - 1)
    assert _read(tmp_path / "att1.png").mode == "L"
    with pytest.raises(ValueError):
        image_io.save_image(tmp_path / "b.png", np.zeros((2, 3, 3, 3)))


# ---------------------------------------------------------------- grids, GIF


def test_make_grid_layout():
    n, h, w, pad = 5, 3, 4, 2
    imgs = np.stack([np.full((h, w, 3), -1.0 + 0.1 * i, np.float32) for i in range(n)])
    grid = image_io.make_grid(imgs, pad=pad)  # ncols = ceil(sqrt(5)) = 3, rows = 2
    assert grid.shape == (2 * h + 3 * pad, 3 * w + 4 * pad, 3)
    for i in range(n):
        r, c = divmod(i, 3)
        y0, x0 = pad + r * (h + pad), pad + c * (w + pad)
        np.testing.assert_array_equal(grid[y0 : y0 + h, x0 : x0 + w], imgs[i])
    # Borders and the unused sixth cell are pad_value.
    covered = np.zeros(grid.shape[:2], bool)
    for i in range(n):
        r, c = divmod(i, 3)
        covered[pad + r * (h + pad) :][:h, pad + c * (w + pad) :][:, :w] = True
    assert np.all(grid[~covered] == 1.0)


def test_make_grid_ncols_pad_value_and_list():
    imgs = [np.zeros((2, 2, 1), np.float32)] * 3
    g = image_io.make_grid(imgs, ncols=1, pad=1, pad_value=-1.0)
    assert g.shape == (3 * 2 + 4, 2 + 2, 1)
    assert g[0, 0, 0] == -1.0 and g[1, 1, 0] == 0.0


def test_strip_equals_one_row_grid():
    imgs = np.random.default_rng(0).uniform(-1, 1, (4, 3, 5, 3)).astype(np.float32)
    s = image_io.strip(imgs, pad=1)
    np.testing.assert_array_equal(s, image_io.make_grid(imgs, ncols=4, pad=1))
    assert s.shape == (3 + 2, 4 * 5 + 5, 3)


def test_save_grid(tmp_path):
    imgs = np.zeros((4, 3, 5, 3), np.float32)
    p = tmp_path / "g" / "grid.png"
    image_io.save_grid(p, imgs, ncols=2, pad=2)
    assert _read(p).size == (2 * 5 + 3 * 2, 2 * 3 + 3 * 2)


def test_save_gif(tmp_path):
    rng = np.random.default_rng(0)
    frames = rng.uniform(-1, 1, (5, 6, 7, 3)).astype(np.float32)
    p = tmp_path / "a" / "anim.gif"
    image_io.save_gif(p, frames, fps=20.0)
    with Image.open(p) as im:
        assert im.n_frames == 5
        assert im.size == (7, 6)
        assert im.info["duration"] == 50
    with pytest.raises(UserError):
        image_io.save_gif(p, frames, fps=0)


# ---------------------------------------------------------------- hash


def test_image_hash():
    a = np.random.default_rng(0).uniform(-1, 1, (4, 6, 3)).astype(np.float32)
    h = image_io.image_hash(a)
    assert len(h) == 64 and h == image_io.image_hash(a.copy())
    assert h == image_io.image_hash(a.astype(np.float64).astype(np.float32))
    b = a.copy()
    b[0, 0, 0] += 0.01
    assert image_io.image_hash(b) != h
    assert image_io.image_hash(a.reshape(6, 4, 3)) != h
