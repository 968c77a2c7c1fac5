"""Applications on the tiny AGAN run: exact blending, bounds, sizes, determinism,
the compiled functions kept in one Sampler, family capabilities checked by flag."""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from agan_jax import applications as apps
from agan_jax import sampling
from agan_jax.errors import UserError
from agan_jax.models import families

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY = jax.random.key(0)
OTHER = jax.random.key(1)


@pytest.fixture(scope="module")
def run(tiny_agan_run):
    return tiny_agan_run[1]


@pytest.fixture(scope="module")
def workdir(tiny_agan_run):
    return tiny_agan_run[0]


@pytest.fixture(scope="module")
def sampler(run):
    """One Sampler for the module: every application compiles into its cache."""
    return sampling.Sampler(run)


def _with_kind(run, kind):
    """The run under another family's spec (for checks made before any forward)."""
    return dataclasses.replace(run, spec=dataclasses.replace(run.spec, kind=kind))


def _app_keys(sampler):
    return {k for k in sampler.cache if k[0] == "applications"}


def _naive_and_mask(run):
    """The training image with a flat green square pasted in, and the square's mask."""
    real = np.asarray(run.real)
    h, w = real.shape[:2]
    mask = np.zeros((h, w), np.float32)
    mask[h // 3 : h // 3 + 6, w // 4 : w // 4 + 6] = 1.0
    naive = real.copy()
    naive[mask > 0] = np.array([-0.8, 0.9, -0.8], np.float32)
    return naive, mask


def _save_png(path, array_uint8):
    Image.fromarray(array_uint8).save(path)
    return str(path)


# -- injection and blending -------------------------------------------------------


def test_inject_stage_bounds(run, sampler):
    naive, _ = _naive_and_mask(run)
    for bad in (0, -1, run.num_stages, 1.5, True):
        with pytest.raises(UserError, match="start_stage"):
            apps.inject(sampler, naive, bad, KEY)
    with pytest.raises(UserError, match="number of outputs"):
        apps.inject(sampler, naive, 1, KEY, n=0)
    with pytest.raises(UserError, match="RGB image"):
        apps.inject(sampler, naive[..., :2], 1, KEY)
    out = apps.inject(sampler, naive, run.num_stages - 1, KEY, n=2)
    assert out.shape == (2, *run.sizes[-1], 3) and out.dtype == np.float32
    assert np.all(np.isfinite(out))
    assert not np.array_equal(out[0], out[1])


def test_run_and_sampler_agree_and_the_sampler_caches(run):
    # A Run gets a fresh Sampler per call; a Sampler keeps what it compiled.
    naive, _ = _naive_and_mask(run)
    own = sampling.Sampler(run)
    out = apps.inject(own, naive, 1, KEY, n=2)
    assert _app_keys(own) == {("applications", "inject", 1, 2)}
    fn = own.cache[("applications", "inject", 1, 2)]
    np.testing.assert_array_equal(apps.inject(own, naive, 1, KEY, n=2), out)
    assert own.cache[("applications", "inject", 1, 2)] is fn
    np.testing.assert_array_equal(apps.inject(run, naive, 1, KEY, n=2), out)
    assert len(own.cache) == 1
    with pytest.raises(TypeError, match="Run or a Sampler"):
        apps.inject(run.g_vars, naive, 1, KEY)


def test_incomplete_run_is_refused(run):
    partial = dataclasses.replace(run, g_vars=run.g_vars[:1])
    naive, mask = _naive_and_mask(run)
    for target in (partial, sampling.Sampler(partial)):
        with pytest.raises(UserError, match="1 of 3 stages trained"):
            apps.harmonize(target, naive, mask, 1, KEY)
        with pytest.raises(UserError, match="1 of 3 stages trained"):
            apps.check_complete(target)
    no_image = dataclasses.replace(run, real=None)
    with pytest.raises(UserError, match="no training image"):
        apps.paint_to_image(no_image, naive, 1, KEY)


@pytest.mark.parametrize("fn", [apps.harmonize, apps.edit])
def test_blend_equals_image_outside_dilated_mask(run, sampler, fn):
    naive, mask = _naive_and_mask(run)
    real = np.asarray(run.real)
    b = fn(sampler, naive, mask, 1, KEY)
    assert b.blended.shape == real.shape
    outside = ~b.support
    assert outside.any()
    np.testing.assert_array_equal(b.blended[outside], real[outside])
    assert np.all(b.soft_mask[outside] == 0)
    # The soft mask is 1 on the mask, the blend is the raw output there.
    assert np.all(b.soft_mask[mask > 0] == 1)
    np.testing.assert_array_equal(b.blended[mask > 0], b.output[mask > 0])
    assert np.abs(b.blended - real)[mask > 0].max() > 0.05
    # The raw output is the injection's (one output, the same key).
    np.testing.assert_array_equal(b.output, apps.inject(sampler, naive, 1, KEY)[0])
    # Same key, same result; another key, another result.
    again = fn(sampler, naive, mask, 1, KEY)
    np.testing.assert_array_equal(again.blended, b.blended)
    assert not np.array_equal(fn(sampler, naive, mask, 1, OTHER).blended, b.blended)
    with pytest.raises(UserError, match="fit_naive_and_mask"):
        fn(sampler, naive[:-1], mask[:-1], 1, KEY)


def test_editing_dilates_more_than_harmonization(run):
    _, mask = _naive_and_mask(run)
    _, s_h = apps.soft_mask(mask, apps.HARMONIZATION)
    _, s_e = apps.soft_mask(mask, apps.EDITING)
    assert s_h.sum() < s_e.sum()
    assert np.all(s_e[s_h])
    r, sigma, t = apps.HARMONIZATION.pixels((168, 250))
    assert (r, t) == (7, 10) and sigma == pytest.approx(5.0)


def test_soft_mask_support_is_the_dilated_mask():
    mask = np.zeros((40, 50), np.float32)
    mask[0:5, 10:14] = 1  # touches the border
    mask[25, 40] = 1
    soft, support = apps.soft_mask(mask, apps.EDITING)
    r, _, t = apps.EDITING.pixels(mask.shape)
    ys, xs = np.nonzero(mask)
    yy, xx = np.mgrid[:40, :50]
    dist2 = np.min((yy[..., None] - ys) ** 2 + (xx[..., None] - xs) ** 2, axis=-1)
    np.testing.assert_array_equal(support, dist2 <= (r + t) ** 2)
    assert np.all(soft[~support] == 0) and np.all(soft[dist2 <= r * r] > 0.4)


def test_sweep(run, sampler):
    naive, mask = _naive_and_mask(run)
    results, strip = apps.sweep(sampler, naive, mask, KEY)
    assert [b.stage for b in results] == list(range(1, run.num_stages))
    h, w = run.sizes[-1]
    assert strip.shape == (h + 4, run.num_stages * (w + 2) + 2, 3)
    # Each sweep entry is the single-stage call with the same key.
    for b in results:
        np.testing.assert_array_equal(
            b.blended, apps.harmonize(sampler, naive, mask, b.stage, KEY).blended
        )
    # One compiled injector per stage, shared with the single-stage calls.
    stages = {k[2] for k in _app_keys(sampler) if k[1] == "inject" and k[3] == 1}
    assert stages >= set(range(1, run.num_stages))


def test_fit_naive_and_mask(run):
    naive, mask = _naive_and_mask(run)
    big = np.repeat(np.repeat(naive, 2, 0), 2, 1)
    big_mask = np.repeat(np.repeat(mask, 2, 0), 2, 1)
    x, m, notes = apps.fit_naive_and_mask(run, big, big_mask)
    assert x.shape == naive.shape and m.shape == mask.shape and notes
    assert set(np.unique(m)) <= {0.0, 1.0}
    # At the training size: nothing changes, no notes; a Sampler works alike.
    x, m, notes = apps.fit_naive_and_mask(sampling.Sampler(run), naive, mask)
    np.testing.assert_array_equal(x, naive)
    np.testing.assert_array_equal(m, mask)
    assert notes == []
    with pytest.raises(UserError, match="same size"):
        apps.fit_naive_and_mask(run, big, mask)


def test_load_naive_and_mask_files(run, tmp_path, caplog):
    naive, mask = _naive_and_mask(run)
    h, w = mask.shape
    naive_path = _save_png(
        tmp_path / "naive.png", ((naive + 1) * 127.5).astype(np.uint8)
    )
    grey = (mask * 200 + 20).astype(np.uint8)  # not binary: thresholded, logged
    grey_path = _save_png(tmp_path / "grey.png", grey)
    with caplog.at_level(logging.WARNING):
        x, m, notes = apps.load_naive_and_mask(run, naive_path, grey_path)
    assert "not binary" in caplog.text and "thresholded" in caplog.text
    np.testing.assert_array_equal(m, mask)
    assert notes == []
    wrong = _save_png(tmp_path / "wrong.png", np.zeros((h + 3, w), np.uint8) + 255)
    with pytest.raises(UserError, match="same size"):
        apps.load_naive_and_mask(run, naive_path, wrong)
    empty = _save_png(tmp_path / "empty.png", np.zeros((h, w), np.uint8))
    with pytest.raises(UserError, match="no pixels set"):
        apps.load_naive_and_mask(run, naive_path, empty)


# -- paint-to-image ------------------------------------------------------------------


def test_kmeans_palette_recovers_colours_and_is_deterministic():
    colours = np.array(
        [[-1, -1, -1], [1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], np.float32
    )
    rng = np.random.default_rng(3)
    image = colours[rng.integers(0, 5, (20, 30))] + rng.normal(0, 0.01, (20, 30, 3))
    p1 = apps.kmeans_palette(image, 5, seed=0)
    np.testing.assert_array_equal(p1, apps.kmeans_palette(image, 5, seed=0))
    found = {tuple(np.round(c)) for c in p1}
    assert found == {tuple(c) for c in colours}


def test_quantised_paint_uses_only_palette_colours(run, sampler):
    rng = np.random.default_rng(0)
    paint = rng.uniform(-1, 1, (12, 16, 3)).astype(np.float32)
    res = apps.paint_to_image(sampler, paint, 1, KEY, quantize=True)
    assert res.palette.shape == (5, 3)
    pixels = res.paint.reshape(-1, 1, 3)
    assert np.all(np.any(np.all(pixels == res.palette[None], axis=-1), axis=-1))
    assert res.output.shape == (*run.sizes[-1], 3)
    np.testing.assert_array_equal(
        res.palette, apps.kmeans_palette(np.asarray(run.real), 5, seed=0)
    )
    again = apps.paint_to_image(sampler, paint, 1, KEY, quantize=True)
    np.testing.assert_array_equal(again.output, res.output)
    np.testing.assert_array_equal(
        res.output, apps.inject(sampler, res.paint, 1, KEY)[0]
    )
    plain = apps.paint_to_image(sampler, paint, 1, KEY)
    assert plain.palette is None and not np.array_equal(plain.paint, res.paint)


# -- super-resolution -----------------------------------------------------------------


def test_super_resolution_size_and_determinism(run, sampler):
    factor = 2.5
    res = apps.super_resolve(sampler, factor, KEY)
    h, w = run.sizes[-1]
    oh, ow = res.output.shape[:2]
    assert abs(oh - factor * h) <= 1 and abs(ow - factor * w) <= 1
    assert res.sizes[-1] == (oh, ow) and len(res.sizes) >= 2
    assert np.all(np.isfinite(res.output))
    np.testing.assert_array_equal(
        apps.super_resolve(sampler, factor, KEY).output, res.output
    )
    assert not np.array_equal(
        apps.super_resolve(sampler, factor, OTHER).output, res.output
    )
    # Without noise the key does not matter.
    quiet = apps.super_resolve(sampler, factor, KEY, noise_scale=0.0).output
    np.testing.assert_array_equal(
        apps.super_resolve(sampler, factor, OTHER, noise_scale=0.0).output, quiet
    )
    with pytest.raises(UserError, match="noise_scale"):
        apps.super_resolve(sampler, factor, KEY, noise_scale=-1.0)


def test_super_resolution_rejects_bad_factor(sampler):
    for bad in (1.0, 0.5, 20.0):
        with pytest.raises(UserError, match="factor"):
            apps.super_resolve(sampler, bad, KEY)


def test_super_resolution_needs_stage_generators(run):
    # Refused by the family's flag (ConSinGAN has no per-stage generator) before
    # any forward pass, with a message naming the families that can.
    assert not families.get("consingan").stage_generators
    with pytest.raises(UserError, match="ConSinGAN generator is one network") as e:
        apps.super_resolve(_with_kind(run, "consingan"), 2.0, KEY)
    assert "singan or agan" in str(e.value) and "configs/agan.py" in str(e.value)
    apps.check_stage_generators(_with_kind(run, "singan"))


def test_sr_sizes_end_exactly_at_the_factor():
    sizes = apps.sr_sizes((48, 64), 4.0, 1.12)
    assert sizes[-1] == (192, 256) and len(sizes) == 13
    assert all(b[0] > a[0] for a, b in zip(sizes, sizes[1:], strict=False))


# -- animation -----------------------------------------------------------------------

FRAMES = 5


def test_animation_frames_and_first_frame(run, sampler):
    frames = apps.animate(sampler, KEY, frames=FRAMES, alpha=0.1, beta=0.9)
    assert frames.shape == (FRAMES, *run.sizes[-1], 3)
    # Frame 0 uses the reconstruction noise at every stage: it is the
    # reconstruction up to float rounding of a differently compiled program.
    rec = np.asarray(sampler.reconstruct())
    np.testing.assert_allclose(frames[0], rec, atol=1e-4)
    later = np.abs(frames[1:] - frames[:-1]).max(axis=(1, 2, 3))
    assert np.all(later > 1e-3)
    np.testing.assert_array_equal(apps.animate(sampler, KEY, frames=FRAMES), frames)
    assert not np.array_equal(apps.animate(sampler, OTHER, frames=FRAMES), frames)
    # alpha and beta are arguments of the compiled function: no new compile.
    assert ("applications", "animate", FRAMES, 0) in sampler.cache
    before = len(sampler.cache)
    other = apps.animate(sampler, KEY, frames=FRAMES, alpha=0.3, beta=0.5)
    assert len(sampler.cache) == before
    np.testing.assert_allclose(other[0], frames[0], atol=1e-6)
    assert not np.array_equal(other[1:], frames[1:])


def test_animation_start_stage_and_bounds(run, sampler):
    last = run.num_stages - 1
    frames = apps.animate(sampler, KEY, frames=FRAMES, start_stage=last)
    # Only the finest stage moves, so frames stay close to the reconstruction.
    rec = np.asarray(sampler.reconstruct())
    assert np.abs(frames - rec).mean() < 0.1
    for bad in (-1, run.num_stages):
        with pytest.raises(UserError, match="start_stage"):
            apps.animate(sampler, KEY, frames=FRAMES, start_stage=bad)
    with pytest.raises(UserError, match="alpha and beta"):
        apps.animate(sampler, KEY, frames=FRAMES, alpha=1.5)
    with pytest.raises(UserError, match="frames"):
        apps.animate(sampler, KEY, frames=0)


def test_noise_walk_is_pulled_to_z_star(run):
    spec = run.spec
    z = jax.numpy.ones((4, 5, 3))
    walk = np.asarray(apps.noise_walk(spec, KEY, z, 6, alpha=1.0, beta=0.5, stage=1))
    np.testing.assert_array_equal(walk, np.ones((6, 4, 5, 3)))
    walk = np.asarray(apps.noise_walk(spec, KEY, z, 6, alpha=0.1, beta=0.9, stage=0))
    assert np.all(walk[:, :, :, 0] == walk[:, :, :, 2])  # stage 0: grey noise
    np.testing.assert_array_equal(walk[0], np.ones((4, 5, 3)))
    assert np.all(np.abs(walk[1:] - 1.0).max(axis=(1, 2, 3)) > 0)
    # alpha = 0, beta = 0: z_t = z_{t-1} + eps_t, eps_t from fold_in(key, t).
    walk = np.asarray(apps.noise_walk(spec, KEY, z, 3, alpha=0.0, beta=0.0, stage=1))
    eps1 = np.asarray(jax.random.normal(jax.random.fold_in(KEY, 1), (4, 5, 3)))
    np.testing.assert_allclose(walk[1], 1.0 + eps1, rtol=1e-6, atol=1e-6)


# -- retargeting, attention ----------------------------------------------------------


def test_retarget_grid(run, sampler):
    grid, samples = apps.retarget_grid(sampler, KEY, [1.0], [1.0, 1.5])
    h, w = run.sizes[-1]
    assert samples[(1.0, 1.0)].shape == (h, w, 3)
    assert samples[(1.0, 1.5)].shape == (h, round(w * 1.5), 3)
    assert grid.shape == (h + 4, w + round(w * 1.5) + 6, 3)
    # Each cell is the sampler's sample with the same key, placed top-left.
    np.testing.assert_array_equal(
        samples[(1.0, 1.0)], np.asarray(sampler.sample(KEY, 1)[0])
    )
    np.testing.assert_array_equal(grid[2 : 2 + h, 2 : 2 + w], samples[(1.0, 1.0)])
    with pytest.raises(UserError, match="at least one"):
        apps.retarget_grid(sampler, KEY, [], [1.0])


def test_save_attention(run, sampler, tmp_path):
    paths = apps.save_attention(sampler, KEY, str(tmp_path))
    names = sorted(os.path.basename(p) for p in paths)
    stages = [f"attention_stage_{s:02d}.png" for s in range(1, run.num_stages)]
    assert names == sorted(["sample.png", "attention_strip.png", *stages])
    c = np.asarray(Image.open(tmp_path / stages[-1]))
    assert c.shape[:2] == tuple(run.sizes[-1])
    assert all(os.path.exists(p) for p in paths)


def test_save_attention_needs_attention_maps(run, tmp_path):
    # Refused by the family's flag before sampling, naming the families that can.
    assert not families.get("singan").attention
    with pytest.raises(UserError, match=r"\(singan\) has no attention maps") as e:
        apps.save_attention(_with_kind(run, "singan"), KEY, str(tmp_path))
    assert "configs/agan.py" in str(e.value)
    assert not os.listdir(tmp_path)


# -- launchers -----------------------------------------------------------------------


def _launch(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", f"launch.{name}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ.copy(),
    )


def test_launcher_errors_exit_2(workdir, run, tmp_path):
    naive, mask = _naive_and_mask(run)
    h, w = mask.shape
    naive_path = _save_png(
        tmp_path / "naive.png", ((naive + 1) * 127.5).astype(np.uint8)
    )
    wrong = _save_png(tmp_path / "wrong.png", np.full((h, w + 5), 255, np.uint8))
    empty = _save_png(tmp_path / "empty.png", np.zeros((h, w), np.uint8))
    mask_path = _save_png(tmp_path / "mask.png", (mask * 255).astype(np.uint8))
    common = [
        f"--workdir={workdir}",
        f"--out={tmp_path / 'out'}",
        f"--naive={naive_path}",
    ]
    cases = [
        ("sr", [f"--workdir={tmp_path}"], "holds no trained run"),
        ("harmonize", [*common, f"--mask={wrong}", "--start_stage=1"], "same size"),
        ("edit", [*common, f"--mask={empty}", "--start_stage=1"], "no pixels set"),
        ("harmonize", [*common, f"--mask={mask_path}", "--start_stage=3"], "[1, 2]"),
    ]
    for name, args, message in cases:
        proc = _launch(name, *args)
        assert proc.returncode == 2, (name, proc.stderr[-2000:])
        assert "error:" in proc.stderr and message in proc.stderr, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr


def test_animate_launcher_writes_gif(workdir, tmp_path):
    proc = _launch(
        "animate", f"--workdir={workdir}", f"--out={tmp_path}", f"--frames={FRAMES}"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    with Image.open(tmp_path / "animation.gif") as gif:
        assert gif.n_frames == FRAMES
