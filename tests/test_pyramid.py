"""Tests for agan_jax.pyramid: exponents, stage sizes, resize and the real pyramid."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest

from agan_jax import pyramid
from agan_jax.errors import UserError
from agan_jax.settings import DataSettings, PyramidSettings, Settings

AGAN = ("cos", "quad", "circ")

# e(k), k = 1..5, for N = 5, written out from the papers' formulas by hand:
# cos  (AGAN eq. 2): (N-1)*cos(pi*(N-k)/(2(N-1))) + 1 = 4*cos(pi*(5-k)/8) + 1
# quad (AGAN eq. 3): N - (N-k)**2/(N-1)            = 5 - (5-k)**2/4
# circ (AGAN eq. 4): sqrt((N-1)**2 - (N-k)**2) + 1  = sqrt(16 - (5-k)**2) + 1
# log  (ConSinGAN):  1 + (N-1)*log(k)/log(N)        = 1 + 4*log(k)/log(5)
HAND_EXPONENTS_N5 = {
    "geometric": [1.0, 2.0, 3.0, 4.0, 5.0],
    "cos": [
        1.0,
        1 + 4 * math.cos(3 * math.pi / 8),
        1 + 4 * math.cos(math.pi / 4),
        1 + 4 * math.cos(math.pi / 8),
        5.0,
    ],
    "quad": [5 - 16 / 4, 5 - 9 / 4, 5 - 4 / 4, 5 - 1 / 4, 5.0],
    "circ": [1.0, 1 + math.sqrt(7), 1 + math.sqrt(12), 1 + math.sqrt(15), 5.0],
    "log": [
        1.0,
        1 + 4 * math.log(2) / math.log(5),
        1 + 4 * math.log(3) / math.log(5),
        1 + 4 * math.log(4) / math.log(5),
        5.0,
    ],
}

# Stage sizes (h, w), coarsest first, for a 250x188 image, min_size 25, 6 stages:
# N = 5, r = (25/188)**(1/5) = 0.667969..., each side x0 -> ceil(x0 * r**e(N-s)).
# Worked entry, cos stage 1 (k = 4): e(4) = 1 + 4*cos(pi/8) = 4.695518...,
# r**e(4) = 0.360168..., 250*0.360168 = 90.042 -> 91, 188*0.360168 = 67.712 -> 68.
# Coarsest (k = 5) for every schedule: r**5 = 25/188, 250*25/188 = 33.245 -> 34,
# 188*25/188 = 25 exactly.
HAND_SIZES_250x188 = {
    "geometric": [(34, 25), (50, 38), (75, 57), (112, 84), (167, 126), (250, 188)],
    "cos": [(34, 25), (38, 29), (54, 41), (91, 68), (167, 126), (250, 188)],
    "quad": [(34, 25), (37, 28), (50, 38), (83, 62), (167, 126), (250, 188)],
    "circ": [(34, 25), (35, 27), (42, 32), (58, 44), (167, 126), (250, 188)],
    "log": [(34, 25), (42, 32), (56, 42), (84, 63), (167, 126), (250, 188)],
}


@pytest.mark.parametrize("schedule", pyramid.SCHEDULES)
def test_exponents_match_hand_values(schedule):
    e = pyramid.exponents(schedule, 5)
    assert e.dtype == np.float64
    assert e.shape == (5,)
    np.testing.assert_allclose(e, HAND_EXPONENTS_N5[schedule], rtol=0, atol=1e-12)


@pytest.mark.parametrize("schedule", pyramid.SCHEDULES)
@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 11])
def test_exponents_endpoints(schedule, n):
    e = pyramid.exponents(schedule, n)
    assert e.shape == (n,)
    assert np.all(np.isfinite(e))
    assert e[0] == pytest.approx(1.0, abs=1e-12)
    assert e[-1] == pytest.approx(float(n), abs=1e-12)
    assert np.all(np.diff(e) > 0)


def test_exponents_n1_is_one():
    for schedule in pyramid.SCHEDULES:
        np.testing.assert_array_equal(pyramid.exponents(schedule, 1), [1.0])


@pytest.mark.parametrize("schedule", AGAN)
def test_agan_exponents_not_below_geometric(schedule):
    e = pyramid.exponents(schedule, 5)
    k = np.arange(1, 6)
    assert np.all(e >= k - 1e-12)
    assert np.all(e[1:-1] > k[1:-1])  # strictly smaller images in between


def test_agan_ordering_matches_paper():
    # AGAN paper: for the same k, circ (eq. 4) gives the smallest images, then
    # quad (eq. 3), then cos (eq. 2), then geometric (eq. 1).
    e = {s: pyramid.exponents(s, 5)[1:-1] for s in ("geometric", *AGAN)}
    assert np.all(e["circ"] > e["quad"])
    assert np.all(e["quad"] > e["cos"])
    assert np.all(e["cos"] > e["geometric"])


@pytest.mark.parametrize("schedule", pyramid.SCHEDULES)
def test_stage_sizes_hand_table(schedule):
    sizes = pyramid.stage_sizes(schedule, (250, 188), 6, 25)
    assert sizes == HAND_SIZES_250x188[schedule]
    assert all(isinstance(x, int) for hw in sizes for x in hw)


@pytest.mark.parametrize("schedule", pyramid.SCHEDULES)
@pytest.mark.parametrize(
    "finest_hw,num_stages,min_size",
    [((250, 188), 6, 25), ((101, 250), 4, 25), ((188, 250), 9, 25), ((64, 64), 2, 7)],
)
def test_stage_sizes_invariants(schedule, finest_hw, num_stages, min_size):
    sizes = pyramid.stage_sizes(schedule, finest_hw, num_stages, min_size)
    assert len(sizes) == num_stages
    assert sizes[-1] == finest_hw
    # The coarsest stage is the image resized by r**N = min_size / m, sized as
    # the official imresize does: ceil of the float64 product, so float noise
    # just above min_size gives min_size + 1 (101x250: 101 * r**3 is
    # 25.000000000000007, so 26).
    m, n = min(finest_hw), num_stages - 1
    r = (min_size / m) ** (1 / n)
    assert min(sizes[0]) in (min_size, min_size + 1)
    if schedule == "geometric":
        assert min(sizes[0]) == math.ceil(m * r**n)
    for (h0, w0), (h1, w1) in zip(sizes[:-1], sizes[1:], strict=True):
        assert h0 <= h1 and w0 <= w1


def test_stage_sizes_min_size_equal_to_image():
    assert pyramid.stage_sizes("cos", (40, 30), 3, 30) == [(40, 30)] * 3


def test_stage_sizes_float_noise_follows_official_ceil():
    # m * ((25/m)**(1/6))**6 is 25 only up to float noise (e.g. 25.000000000000004
    # for some m); official SinGAN's imresize takes the plain ceil of the float64
    # product, giving 26 there, and so must we (no tolerance).
    sides = []
    for m in range(25, 400):
        sizes = pyramid.stage_sizes("geometric", (m, m + 13), 7, 25)
        r = (25 / m) ** (1 / 6)
        assert min(sizes[0]) == math.ceil(m * r**6)
        sides.append(min(sizes[0]))
    assert set(sides) == {25, 26}  # both cases occur in this range


def test_stage_sizes_errors():
    with pytest.raises(UserError, match="unknown pyramid schedule 'cosine'") as exc:
        pyramid.stage_sizes("cosine", (250, 188), 6, 25)
    for name in pyramid.SCHEDULES:
        assert name in str(exc.value)
    with pytest.raises(UserError, match="188.*min_size=200.*lower data.min_size"):
        pyramid.stage_sizes("cos", (250, 188), 6, 200)
    with pytest.raises(UserError, match="at least 2 stages"):
        pyramid.stage_sizes("cos", (250, 188), 1, 25)
    with pytest.raises(UserError, match="unknown pyramid schedule"):
        pyramid.exponents("linear", 5)
    assert issubclass(UserError, ValueError)


def test_num_geometric_stages_singan_formula():
    # 250x188, min 25, max 250: ceil(log(25/188)/log(.75)) = ceil(7.013) = 8,
    # ceil(log(250/250)/log(.75)) = 0, so S - 1 = 8 + 1 (SinGAN's stop_scale).
    assert pyramid.num_geometric_stages((250, 188), 25, 250) == 10
    # 600x243, max 250: ceil(log(25/243)/log(.75)) = ceil(7.905) = 8,
    # ceil(log(250/600)/log(.75)) = ceil(3.043) = 4, so S - 1 = 8 + 1 - 4 = 5.
    assert pyramid.num_geometric_stages((600, 243), 25, 250) == 6
    # The official SinGAN (PyTorch) on 250x188 at max_size 64 and 128
    # trained 5 and 7 stages. ceil(log(64/250)/log(.75)) = ceil(4.74) = 5 and
    # ceil(log(128/250)/log(.75)) = ceil(2.33) = 3: 8 + 1 - 5 = 4, 8 + 1 - 3 = 6.
    assert pyramid.num_geometric_stages((250, 188), 25, 64) == 5
    assert pyramid.num_geometric_stages((250, 188), 25, 128) == 7
    # Cross-check against the formula evaluated here.
    for hw in [(250, 188), (600, 243), (400, 300), (1024, 768), (120, 90)]:
        h, w = hw
        log_r0 = math.log(0.75)
        expect = (
            math.ceil(math.log(25 / min(h, w)) / log_r0)
            + 1
            - math.ceil(math.log(min(250, max(h, w)) / max(h, w)) / log_r0)
            + 1
        )
        assert pyramid.num_geometric_stages(hw, 25, 250) == max(expect, 2)
    # An image barely larger than min_size: ceil(0.136) + 1 + 1 = 3 stages.
    assert pyramid.num_geometric_stages((26, 26), 25, 250) == 3


def _sizes_for(schedule, num_stages, r0, finest_hw, original_hw):
    pyr = PyramidSettings(schedule=schedule, num_stages=num_stages, r0=r0, min_step=0.0)
    data = DataSettings(
        image="x.png", max_size=250, min_size=25, min_size_ratio=0.0, fit=""
    )
    return pyramid.stage_sizes_for(pyr, data, finest_hw, original_hw)


def test_stage_sizes_for_settings():
    sizes = _sizes_for("quad", 6, 0.75, (250, 188), (250, 188))
    assert sizes == HAND_SIZES_250x188["quad"]

    # geometric: num_stages ignored, the count comes from r0 (0.75).
    sizes = _sizes_for("geometric", 6, 0.75, (250, 188), (250, 188))
    assert len(sizes) == 10
    assert sizes == pyramid.stage_sizes("geometric", (250, 188), 10, 25)

    # r0 = 0.5: ceil(log(25/188)/log(.5)) = ceil(2.91) = 3, + 2 = 5 stages
    sizes = _sizes_for("geometric", 6, 0.5, (250, 188), (250, 188))
    assert len(sizes) == 5
    with pytest.raises(UserError, match="unknown pyramid schedule 'cosine'"):
        _sizes_for("cosine", 6, 0.75, (250, 188), (250, 188))


def test_stage_sizes_from_config():
    from configs import default

    cfg = default.get_config()
    cfg.pyramid.schedule, cfg.pyramid.num_stages, cfg.pyramid.r0 = "geometric", 6, 0.75
    cfg.data.min_size, cfg.data.max_size = 25, 250
    s = Settings.from_config(cfg)
    # 600x243 original, resized to 250x101 for training.
    sizes = pyramid.stage_sizes_for(s.pyramid, s.data, (250, 101), (600, 243))
    assert len(sizes) == 6
    assert sizes[-1] == (250, 101)
    assert min(sizes[0]) == 25


def test_resize_checkerboard_antialiased():
    ii, jj = np.meshgrid(np.arange(64), np.arange(64), indexing="ij")
    board = np.where((ii + jj) % 2 == 0, 1.0, -1.0).astype(np.float32)
    image = jnp.asarray(np.repeat(board[:, :, None], 3, axis=2))
    for hw in [(16, 16), (21, 13)]:
        small = np.asarray(pyramid.resize(image, hw))
        assert small.shape == (*hw, 3)
        # Interior pixels average the +-1 pattern away; borders are renormalised
        # so they may deviate a little more.
        assert np.abs(small[2:-2, 2:-2]).max() < 0.05
        assert abs(small.mean()) < 0.05


def test_resize_constant_is_constant():
    image = jnp.full((40, 30, 3), 0.37, dtype=jnp.float32)
    for hw in [(10, 7), (25, 25), (80, 61)]:
        out = np.asarray(pyramid.resize(image, hw))
        assert out.shape == (*hw, 3)
        np.testing.assert_allclose(out, 0.37, atol=1e-5)
    batch = jnp.full((2, 40, 30, 1), -0.5, dtype=jnp.float32)
    np.testing.assert_allclose(pyramid.resize(batch, (13, 9)), -0.5, atol=1e-5)


def test_build_shapes_and_range():
    rng = np.random.default_rng(0)
    sizes = pyramid.stage_sizes("cos", (50, 38), 4, 10)
    image = jnp.asarray(rng.uniform(-1, 1, size=(50, 38, 3)).astype(np.float32))
    levels = pyramid.build(image, sizes)
    assert len(levels) == len(sizes)
    for level, hw in zip(levels, sizes, strict=True):
        assert level.shape == (*hw, 3)
        assert float(level.min()) >= -1.0 and float(level.max()) <= 1.0
    assert levels[-1] is image

    # Every level comes straight from the finest image, not from the level above.
    np.testing.assert_allclose(
        levels[0], jnp.clip(pyramid.resize(image, sizes[0]), -1, 1), atol=1e-6
    )

    batch = image[None]
    levels = pyramid.build(batch, sizes)
    assert [lv.shape for lv in levels] == [(1, *hw, 3) for hw in sizes]

    with pytest.raises(UserError, match="finest stage"):
        pyramid.build(image, [(10, 10), (40, 40)])


def test_scale_factor_between():
    sizes = [(25, 34), (50, 68), (100, 100)]
    assert pyramid.scale_factor_between(sizes, 1) == pytest.approx(2.0)
    assert pyramid.scale_factor_between(sizes, 2) == pytest.approx(
        (100 / 50 + 100 / 68) / 2
    )
    with pytest.raises(UserError):
        pyramid.scale_factor_between(sizes, 0)


def _floor8(x):
    # Official SinGAN's tensor-to-uint8 conversion: clamp to [0, 1], x 255, truncate.
    return np.floor(np.clip((np.asarray(x, np.float64) + 1) / 2, 0, 1) * 255) / 255


def test_official_upsampling_is_8_bit_resize_crop_clip():
    sizes = [(25, 37), (31, 44), (37, 54), (44, 64)]  # stone at max_size 64
    r = (25 / 44) ** (1 / 3)
    rng = np.random.default_rng(0)
    up = pyramid.upsampler("official", sizes)
    for s in (1, 2, 3):
        x = rng.uniform(-1.3, 1.3, (*sizes[s - 1], 3)).astype(np.float32)
        got = np.asarray(up(jnp.asarray(x), s))
        big = (math.ceil(sizes[s - 1][0] / r), math.ceil(sizes[s - 1][1] / r))
        assert big[0] >= sizes[s][0] and big[1] >= sizes[s][1]
        q = jnp.asarray(_floor8(x) * 2 - 1, jnp.float32)
        want = np.clip(
            np.asarray(pyramid.resize(q, big))[: sizes[s][0], : sizes[s][1]], -1, 1
        )
        np.testing.assert_allclose(got, want, atol=1e-6)
        assert got.shape == (*sizes[s], 3)
    # The crop keeps official SinGAN's scale: 37x54 goes to 45x66, cut to 44x64.
    assert pyramid.scaled_size((37, 54), 1 / r) == (45, 66)
    # A constant image stays constant, floored to its 8-bit level.
    c = up(jnp.full((31, 44, 3), 0.3001, jnp.float32), 2)
    np.testing.assert_allclose(np.asarray(c), _floor8(0.3001) * 2 - 1, atol=1e-6)
    # 'resize' is the bicubic resize to the size, unclipped.
    x = jnp.asarray(rng.uniform(-1.3, 1.3, (25, 37, 3)), jnp.float32)
    plain = pyramid.upsampler("resize", sizes)(x, 1)
    np.testing.assert_array_equal(
        np.asarray(plain), np.asarray(pyramid.resize(x, (31, 44)))
    )
    assert float(jnp.max(plain)) > 1.0
