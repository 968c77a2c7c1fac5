"""Tests for agan_jax.models (SinGAN, AGAN eq. 12, critic, init, BatchNorm) and the
warm start in agan_jax.state."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from agan_jax.errors import UserError
from agan_jax.models import families
from agan_jax.models.agan import AGANGenerator, attention_blend
from agan_jax.models.layers import ConvBlock, ConvStack
from agan_jax.models.singan import Discriminator, SinGANGenerator
from agan_jax.settings import ModelSpec, Settings
from agan_jax.state import same_shapes, warm_start
from tests.conftest import model_spec, quick_compiles, tiny_config

SINGAN, AGAN = families.get("singan"), families.get("agan")
H, W = 20, 24
PAD = 5  # 5 layers of 3x3 valid convolutions


@pytest.fixture(autouse=True, scope="module")
def fast_compiles():
    """Cheaper XLA compiles: these tests run many small one-off programs."""
    with quick_compiles():
        yield


def _inputs(seed: int = 0, n: int = 1, h: int = H, w: int = W):
    r = np.random.default_rng(seed)
    prev = jnp.asarray(r.uniform(-1, 1, (n, h, w, 3)), jnp.float32)
    z = jnp.asarray(r.normal(size=(n, h, w, 3)), jnp.float32)
    return prev, z


def _init_gen(gen, prev, z, seed: int = 0):
    return jax.jit(lambda k: gen.init(k, prev, z, 0.1, train=False))(
        jax.random.key(seed)
    )


def _apply(module, variables, *args, train: bool = False):
    """module.apply, jitted; in train mode returns (out, updated batch_stats)."""
    if train:
        fn = jax.jit(
            lambda v, *a: module.apply(v, *a, train=True, mutable=["batch_stats"])
        )
        out, upd = fn(variables, *args)
        return out, upd["batch_stats"]
    return jax.jit(lambda v, *a: module.apply(v, *a, train=False))(variables, *args)


def _np_pad(x, pad: int = PAD):
    return jnp.asarray(np.pad(np.asarray(x), ((0, 0), (pad, pad), (pad, pad), (0, 0))))


def _sub(variables, name: str) -> dict:
    """{'params': ..., 'batch_stats': ...} of one top-level submodule."""
    return {col: tree[name] for col, tree in variables.items() if name in tree}


def _stack_out(variables, name, x, batch_norm=True, train=False):
    """Generator stack `name` (8 features) applied on its own to a padded input."""
    stack = ConvStack(8, 3, 5, 3, batch_norm)
    out = _apply(stack, _sub(variables, name), x, train=train)
    return out if train else (out, None)


def _set_tail_range(variables, name, x, target=3.0, **kw):
    """Scales stack `name`'s last conv so that max |output| = target.

    The tail conv is linear with a zero bias, so this is exact. The tanh / sigmoid
    after it is then neither ~linear (init weights are tiny) nor saturated.
    """
    out, _ = _stack_out(variables, name, x, **kw)
    factor = target / float(jnp.max(jnp.abs(out)))
    params = dict(variables["params"])
    tail = dict(params[name]["Conv_0"])
    np.testing.assert_array_equal(tail["bias"], 0.0)
    tail["kernel"] = tail["kernel"] * factor
    params[name] = {**params[name], "Conv_0": tail}
    return {**variables, "params": params}


# --- SinGAN generator and critic ---------------------------------------------------


@pytest.mark.parametrize("batch_norm", [False, True], ids=["no_bn", "bn"])
def test_singan_generator_shape_and_tanh_residual(batch_norm):
    prev, z = _inputs(1)
    amp = 0.1
    gen = SinGANGenerator(8, num_layers=5, kernel=3, batch_norm=batch_norm)
    x = _np_pad(prev + amp * z)
    variables = _set_tail_range(
        _init_gen(gen, prev, z), "G_A", x, batch_norm=batch_norm
    )
    out, attn = _apply(gen, variables, prev, z, amp)

    assert attn is None
    assert out.shape == prev.shape == (1, H, W, 3)
    residual = np.asarray(out - prev)
    assert np.all(np.abs(residual) < 1.0)
    # Independent recomputation: tanh(G_A(pad(prev + amp * z))) + prev, where the
    # stack's raw output reaches 3 in magnitude (so the bound is the tanh's).
    raw, _ = _stack_out(variables, "G_A", x, batch_norm=batch_norm)
    np.testing.assert_allclose(np.abs(raw).max(), 3.0, rtol=1e-5)
    np.testing.assert_allclose(out, jnp.tanh(raw) + prev, rtol=1e-5, atol=1e-6)


def test_discriminator_output_shape():
    x = _inputs(2)[0]
    d = Discriminator(8, num_layers=5, kernel=3, batch_norm=True)
    variables = jax.jit(lambda k: d.init(k, x, train=True))(jax.random.key(0))
    out, _ = _apply(d, variables, x, train=True)
    assert out.shape == (1, H - 10, W - 10, 1)
    assert _apply(d, variables, x).shape == (1, H - 10, W - 10, 1)


# --- AGAN generator (eq. 12) -------------------------------------------------------


def test_attention_blend_against_numpy():
    r = np.random.default_rng(3)
    x_hat = r.uniform(-1, 1, (2, 4, 5, 3)).astype(np.float32)
    c = r.uniform(0, 1, (2, 4, 5, 3)).astype(np.float32)
    prev = r.uniform(-1, 1, (2, 4, 5, 3)).astype(np.float32)
    np.testing.assert_allclose(
        attention_blend(x_hat, c, prev), x_hat * c + prev * (1 - c), rtol=1e-6
    )
    # C = 1 keeps x_hat, C = 0 keeps the input (paper text below eq. 12).
    np.testing.assert_array_equal(attention_blend(x_hat, np.ones_like(c), prev), x_hat)
    np.testing.assert_array_equal(attention_blend(x_hat, np.zeros_like(c), prev), prev)


@pytest.mark.parametrize("blend", ["convex", "residual"])
@pytest.mark.parametrize("train", [False, True], ids=["inference", "train"])
def test_agan_generator_is_eq12_of_its_two_stacks(train, blend):
    """Eq. 12 from the two ConvStacks applied directly; model.blend=residual
    proposes x_hat = prev + tanh(G_A(...)), so x' = prev + C tanh(G_A(...))."""
    prev, z = _inputs(4)
    amp = 0.3
    gen = AGANGenerator(8, num_layers=5, kernel=3, batch_norm=True, blend=blend)
    variables = _init_gen(gen, prev, z)
    assert set(variables["params"]) == {"G_A", "G_B"}
    # G_A sees the noisy input, G_B the clean previous image.
    inputs = {"G_A": _np_pad(prev + amp * z), "G_B": _np_pad(prev)}
    for name, x in inputs.items():
        variables = _set_tail_range(variables, name, x, train=train)

    if train:
        (out, c), upd = _apply(gen, variables, prev, z, amp, train=True)
    else:
        out, c = _apply(gen, variables, prev, z, amp)

    # Recompute eq. 12 from the two ConvStacks applied directly.
    raw, stats = {}, {}
    for name, x in inputs.items():
        raw[name], stats[name] = _stack_out(variables, name, x, train=train)
    x_hat = np.tanh(np.asarray(raw["G_A"], np.float64))
    if blend == "residual":
        x_hat = np.asarray(prev, np.float64) + x_hat
    c_ref = 1.0 / (1.0 + np.exp(-np.asarray(raw["G_B"], np.float64)))
    expected = x_hat * c_ref + np.asarray(prev) * (1.0 - c_ref)

    assert c.shape == prev.shape == out.shape == (1, H, W, 3)
    np.testing.assert_allclose(c, c_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    c = np.asarray(c)
    assert np.all((c > 0.0) & (c < 1.0))
    assert c.min() < 0.2 or c.max() > 0.8  # |logit| reaches 3: not ~0.5 everywhere
    # The blend matters: the output is neither x_hat nor the input.
    assert np.abs(np.asarray(out) - x_hat).max() > 1e-2
    assert np.abs(np.asarray(out - prev)).max() > 1e-2
    if train:
        for name in ("G_A", "G_B"):
            np.testing.assert_allclose(
                jax.tree.leaves(upd[name]),
                jax.tree.leaves(stats[name]),
                rtol=1e-5,
                atol=1e-7,
            )


# --- initialisation ----------------------------------------------------------------


def _leaves_by_suffix(tree, suffix: str):
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {
        jax.tree_util.keystr(p): np.asarray(v)
        for p, v in flat
        if jax.tree_util.keystr(p).endswith(suffix)
    }


def test_init_distributions():
    spec = model_spec("agan", None, nfc=32, nfc_growth=4, max_nfc=128)
    assert spec.width(9) == 128
    prev, z = _inputs(5, h=11, w=11)
    gen = AGAN.make_generator(spec, 9)
    variables = _init_gen(gen, prev, z)

    kernels = _leaves_by_suffix(variables["params"], "['kernel']")
    assert len(kernels) == 2 * 5  # G_A and G_B, five convs each
    # A large 3x3x128x128 body kernel (147456 weights): N(0, 0.02).
    big = kernels["['G_A']['ConvBlock_1']['Conv_0']['kernel']"]
    assert big.shape == (3, 3, 128, 128)
    assert abs(big.std() - 0.02) < 0.02 * 0.02
    assert abs(big.mean()) < 1e-3
    for k in kernels.values():  # every conv, not only the body
        assert abs(k.std() - 0.02) < 0.02 * 0.25

    biases = _leaves_by_suffix(variables["params"], "['bias']")
    assert len(biases) == 2 * 5 + 2 * 4  # conv biases and BatchNorm biases
    for b in biases.values():
        np.testing.assert_array_equal(b, 0.0)

    # BatchNorm scale ~ N(1, 0.02): 2 stacks x 4 blocks x 128 = 1024 values.
    scales = np.concatenate(
        list(_leaves_by_suffix(variables["params"], "['scale']").values())
    )
    assert scales.shape == (1024,)
    assert abs(scales.mean() - 1.0) < 0.005
    assert abs(scales.std() - 0.02) < 0.02 * 0.15

    # Running statistics start at mean 0, variance 1.
    for m in _leaves_by_suffix(variables["batch_stats"], "['mean']").values():
        np.testing.assert_array_equal(m, 0.0)
    for v in _leaves_by_suffix(variables["batch_stats"], "['var']").values():
        np.testing.assert_array_equal(v, 1.0)


# --- BatchNorm semantics ------------------------------------------------------------


def test_batchnorm_running_stats_update_and_inference_per_image():
    prev, z = _inputs(6, n=2)
    amp = 0.5
    gen = SinGANGenerator(8, num_layers=5, kernel=3, batch_norm=True)
    variables = _init_gen(gen, prev[:1], z[:1])

    # Train mode on one image: batch statistics, and the running ones move.
    _, new_stats = _apply(gen, variables, prev[:1], z[:1], amp, train=True)
    old_stats = variables["batch_stats"]
    assert same_shapes(old_stats, new_stats)
    for a, b in zip(
        jax.tree.leaves(old_stats), jax.tree.leaves(new_stats), strict=True
    ):
        assert np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-4

    # The first block's running mean is 0.9 * 0 + 0.1 * the conv output's mean
    # (PyTorch momentum 0.1); its variance 0.9 * 1 + 0.1 * the biased batch var.
    conv = nn.Conv(8, (3, 3), padding="VALID")
    conv_out = conv.apply(
        {"params": variables["params"]["G_A"]["ConvBlock_0"]["Conv_0"]},
        _np_pad(prev[:1] + amp * z[:1]),
    )
    mu = np.asarray(conv_out, np.float64).mean(axis=(0, 1, 2))
    var = np.asarray(conv_out, np.float64).var(axis=(0, 1, 2))
    bn = new_stats["G_A"]["ConvBlock_0"]["BatchNorm_0"]
    np.testing.assert_allclose(bn["mean"], 0.1 * mu, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(bn["var"], 0.9 + 0.1 * var, rtol=1e-4)

    # Inference mode uses the running statistics: an image's output does not
    # depend on what else is in the batch.
    variables = {**variables, "batch_stats": new_stats}
    both, _ = _apply(gen, variables, prev, z, amp)
    for i in range(2):
        alone, _ = _apply(gen, variables, prev[i : i + 1], z[i : i + 1], amp)
        np.testing.assert_allclose(both[i], alone[0], rtol=1e-5, atol=1e-6)

    # Whereas train mode normalises with the statistics of the whole batch.
    (both_train, _), _ = _apply(gen, variables, prev, z, amp, train=True)
    (alone_train, _), _ = _apply(gen, variables, prev[:1], z[:1], amp, train=True)
    assert np.abs(np.asarray(both_train[0] - alone_train[0])).max() > 1e-3


def test_convblock_without_batchnorm_has_no_stats():
    x = _inputs(7)[0]
    block = ConvBlock(4, batch_norm=False)
    variables = block.init(jax.random.key(0), x)
    assert set(variables) == {"params"}
    # conv -> LeakyReLU(0.2)
    conv_out = nn.Conv(4, (3, 3), padding="VALID").apply(
        {"params": variables["params"]["Conv_0"]}, x
    )
    ref = np.where(conv_out > 0, conv_out, 0.2 * np.asarray(conv_out))
    np.testing.assert_allclose(block.apply(variables, x), ref, rtol=1e-6)


# --- ModelSpec and factories --------------------------------------------------------


def test_modelspec_width_schedule():
    spec = model_spec(nfc=32, nfc_growth=4, max_nfc=128)
    assert [spec.width(s) for s in range(10)] == [
        32, 32, 32, 32, 64, 64, 64, 64, 128, 128,
    ]  # fmt: skip
    assert model_spec(nfc=8, nfc_growth=2, max_nfc=16).width(7) == 16
    assert model_spec(num_layers=5, kernel=3).pad == 5
    assert model_spec(num_layers=4, kernel=5).pad == 8


def test_make_generator_and_discriminator():
    agan = model_spec("agan", None, nfc=32, nfc_growth=4, max_nfc=128)
    singan = model_spec("singan", None, nfc=32, nfc_growth=4, max_nfc=128)
    assert families.of(agan) is AGAN and families.of(singan) is SINGAN
    assert type(AGAN.make_generator(agan, 0)) is SinGANGenerator
    for s in (1, 2, 5, 9):
        g = AGAN.make_generator(agan, s)
        assert type(g) is AGANGenerator
        assert g.features == agan.width(s)
    for s in range(10):
        g = SINGAN.make_generator(singan, s)
        assert type(g) is SinGANGenerator
        assert (g.features, g.num_layers, g.kernel, g.batch_norm) == (
            singan.width(s),
            5,
            3,
            True,
        )
    d = AGAN.make_discriminator(agan, 6)
    assert type(d) is Discriminator and d.features == 64
    assert SINGAN.attention is False and AGAN.attention is True


def test_family_registry():
    assert families.KINDS == tuple(families.FAMILIES) == ("singan", "agan", "consingan")
    for kind in families.KINDS:
        assert families.get(kind).kind == kind
    with pytest.raises(UserError, match="unknown model kind 'vae'.*singan"):
        families.get("vae")
    con = model_spec("consingan", mode="zoom")
    with pytest.raises(UserError, match="unknown model.mode 'zoom'"):
        families.of(con)


def test_family_update_rules():
    # SinGAN and AGAN (built on SinGAN's code) train with official SinGAN's rule
    # by default, our earlier 'fresh' as an option; ConSinGAN with its own rule
    # in every mode, BatchNorm or not.
    for kind in ("singan", "agan"):
        fam = families.get(kind)
        assert fam.update_rules == ("singan", "fresh")
        assert fam.default_rule(model_spec(kind)) == "singan"
    con = families.get("consingan")
    assert set(con.update_rules) == {"fresh", "consingan"}
    for mode in ("generation", "harmonization", "editing", "animation"):
        for bn in (False, True):
            spec = model_spec("consingan", mode=mode, batch_norm=bn)
            assert con.default_rule(spec) == "consingan"


def _config(**overrides):
    config = tiny_config("agan")
    model = dict(
        kind="agan",
        nfc=16,
        nfc_growth=3,
        max_nfc=64,
        num_layers=4,
        kernel=3,
        batch_norm=False,
    )
    model.update(overrides)
    config.model.update(model)
    return config


def test_modelspec_from_config():
    spec = Settings.from_config(_config()).model
    assert spec == ModelSpec(
        "agan", 16, 3, 64, 4, 3, False, 3, 0.1, "generation", 0.05, True, "convex",
        "resize",
    )  # fmt: skip
    assert spec.pad == 4
    with pytest.raises(UserError, match="unknown model kind 'stylegan'"):
        families.of(Settings.from_config(_config(kind="stylegan")).model)
    with pytest.raises(UserError, match="num_layers"):
        Settings.from_config(_config(num_layers=1))


# --- warm start ---------------------------------------------------------------------


def test_same_shapes():
    a = {"x": np.zeros((2, 3)), "y": {"z": np.zeros(4)}}
    assert same_shapes(a, {"x": np.ones((2, 3)), "y": {"z": np.ones(4)}})
    assert not same_shapes(a, {"x": np.ones((3, 2)), "y": {"z": np.ones(4)}})
    assert not same_shapes(a, {"x": np.ones((2, 3)), "y": {"w": np.ones(4)}})
    assert not same_shapes(a, {"x": np.ones((2, 3))})


def test_warm_start_copies_matching_submodules_only():
    new = {
        "params": {
            "same": {"k": jnp.zeros((2, 3)), "b": jnp.zeros(3)},
            "wider": {"k": jnp.zeros((2, 4))},
            "fresh": {"k": jnp.zeros(5)},
        },
        "batch_stats": {"same": {"mean": jnp.zeros(3)}},
    }
    old = {
        "params": {
            "same": {"k": jnp.ones((2, 3)), "b": jnp.full(3, 2.0)},
            "wider": {"k": jnp.ones((2, 2))},
            "gone": {"k": jnp.ones(7)},
        },
        "batch_stats": {"same": {"mean": jnp.full(3, 3.0)}},
    }
    for fn in (warm_start, jax.jit(warm_start)):
        out = fn(new, old)
        assert set(out["params"]) == {"same", "wider", "fresh"}
        np.testing.assert_array_equal(out["params"]["same"]["k"], 1.0)
        np.testing.assert_array_equal(out["params"]["same"]["b"], 2.0)
        np.testing.assert_array_equal(out["batch_stats"]["same"]["mean"], 3.0)
        np.testing.assert_array_equal(out["params"]["wider"]["k"], np.zeros((2, 4)))
        np.testing.assert_array_equal(out["params"]["fresh"]["k"], np.zeros(5))
    assert warm_start(new, None) is new


def test_warm_start_agan_stage1_from_singan_stage0():
    spec = model_spec("agan", nfc=8, nfc_growth=4, max_nfc=16)
    assert spec.width(0) == spec.width(1) == 8
    prev, z = _inputs(8, h=12, w=12)
    old = _init_gen(AGAN.make_generator(spec, 0), prev, z, seed=1)
    new = _init_gen(AGAN.make_generator(spec, 1), prev, z, seed=2)
    assert set(old["params"]) == {"G_A"} and set(new["params"]) == {"G_A", "G_B"}

    out = jax.jit(warm_start)(new, old)
    for col in ("params", "batch_stats"):
        # G_A copied exactly from the SinGAN stage (and it was different before).
        for a, b in zip(
            jax.tree.leaves(out[col]["G_A"]),
            jax.tree.leaves(old[col]["G_A"]),
            strict=True,
        ):
            np.testing.assert_array_equal(a, b)
        # G_B keeps its fresh initialisation.
        for a, n in zip(
            jax.tree.leaves(out[col]["G_B"]),
            jax.tree.leaves(new[col]["G_B"]),
            strict=True,
        ):
            np.testing.assert_array_equal(a, n)
    fresh_a = new["params"]["G_A"]["ConvBlock_0"]["Conv_0"]["kernel"]
    old_a = old["params"]["G_A"]["ConvBlock_0"]["Conv_0"]["kernel"]
    assert np.abs(np.asarray(fresh_a - old_a)).max() > 1e-3

    # Across a width change (stage 3 -> 4: 8 -> 16 features) nothing is copied.
    g3 = _init_gen(AGAN.make_generator(spec, 3), prev, z, seed=3)
    g4 = _init_gen(AGAN.make_generator(spec, 4), prev, z, seed=4)
    out = warm_start(g4, g3)
    for a, n in zip(jax.tree.leaves(out), jax.tree.leaves(g4), strict=True):
        np.testing.assert_array_equal(a, n)
