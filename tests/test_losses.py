"""Tests for agan_jax.losses against NumPy references and closed forms."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agan_jax import losses
from agan_jax.models.singan import Discriminator
from tests.conftest import quick_compiles


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _np_gp(g: np.ndarray) -> float:
    """Per-pixel gradient penalty of an HWC input gradient, in NumPy."""
    norms = np.sqrt(np.sum(g.astype(np.float64) ** 2, axis=-1))
    return float(np.mean((norms - 1.0) ** 2))


# --- simple losses ---------------------------------------------------------------


def test_total_variation_matches_eq13_mean_reduced():
    x = _rng(1).uniform(-1, 1, (5, 7, 3)).astype(np.float32)
    # AGAN eq. 13 written with explicit loops over its terms: horizontal
    # (x[i, j-1] - x[i, j])**2 for j >= 1 and vertical (x[i+1, j] - x[i, j])**2
    # for i < H-1; each family averaged over its H*(W-1)*C or (H-1)*W*C terms.
    h, w, c = x.shape
    xd = x.astype(np.float64)
    horiz = [
        (xd[i, j - 1, k] - xd[i, j, k]) ** 2
        for i in range(h)
        for j in range(1, w)
        for k in range(c)
    ]
    vert = [
        (xd[i + 1, j, k] - xd[i, j, k]) ** 2
        for i in range(h - 1)
        for j in range(w)
        for k in range(c)
    ]
    assert len(horiz) == 5 * 6 * 3 and len(vert) == 4 * 7 * 3
    expected = np.mean(horiz) + np.mean(vert)
    np.testing.assert_allclose(losses.total_variation(jnp.asarray(x)), expected, 1e-6)


def test_total_variation_of_constant_image_is_zero():
    x = jnp.full((5, 7, 3), 0.37, jnp.float32)
    assert float(losses.total_variation(x)) == 0.0


def test_total_variation_weights_directions_by_their_own_counts():
    # A single horizontal step: only the 5*1*3 differences across column 3 are
    # nonzero (each equal to 1), out of 5*6*3 horizontal terms; vertical TV is 0.
    x = np.zeros((5, 7, 3), np.float32)
    x[:, 3:, :] = 1.0
    np.testing.assert_allclose(losses.total_variation(jnp.asarray(x)), 1 / 6, 1e-6)


def test_reconstruction_is_mse():
    r = _rng(2)
    rec = r.normal(size=(6, 5, 3)).astype(np.float32)
    real = r.normal(size=(6, 5, 3)).astype(np.float32)
    expected = np.mean((rec.astype(np.float64) - real) ** 2)
    np.testing.assert_allclose(losses.reconstruction(rec, real), expected, 1e-6)


def test_critic_wgan_and_generator_adv():
    r = _rng(3)
    # Different shapes: each term is its own mean.
    d_real = r.normal(size=(4, 6)).astype(np.float32)
    d_fake = r.normal(size=(3, 5)).astype(np.float32) + 0.5
    np.testing.assert_allclose(
        losses.critic_wgan(d_real, d_fake),
        np.mean(d_fake.astype(np.float64)) - np.mean(d_real.astype(np.float64)),
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        losses.generator_adv(d_fake), -np.mean(d_fake.astype(np.float64)), 1e-6
    )


def test_interpolate_formula():
    r = _rng(4)
    real = r.uniform(-1, 1, (4, 5, 3)).astype(np.float32)
    fake = r.uniform(-1, 1, (4, 5, 3)).astype(np.float32)
    for a in (0.0, 0.3, 1.0):
        out = losses.interpolate(real, fake, jnp.float32(a))
        np.testing.assert_allclose(out, a * real + (1 - a) * fake, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(losses.interpolate(real, fake, 1.0), real)
    np.testing.assert_array_equal(losses.interpolate(real, fake, 0.0), fake)


# --- gradient penalty ----------------------------------------------------------


def test_gradient_penalty_closed_form_quadratic_critic():
    r = _rng(5)
    w = r.uniform(0.2, 1.5, (3,)).astype(np.float32)
    x = r.uniform(-1, 1, (6, 8, 3)).astype(np.float32)

    def critic(y):  # HxW score map: D(y)[i, j] = sum_c w_c y[i, j, c] ** 2
        return jnp.sum(jnp.asarray(w) * y**2, axis=-1)

    expected = _np_gp(2.0 * w * x)  # d sum(D) / dx = 2 w x
    got = losses.gradient_penalty(critic, jnp.asarray(x))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # The penalty is per pixel, not over the whole image: a whole-image norm
    # gives a different value here.
    whole = (np.linalg.norm(2.0 * w * x) - 1.0) ** 2
    assert abs(whole - expected) > 1e-2


def _conv_critic(params, y):
    """A tiny smooth conv critic: HWC -> HxW-ish score map."""
    dn = ("NHWC", "HWIO", "NHWC")
    h = jax.lax.conv_general_dilated(
        y[None], params["w1"], (1, 1), "VALID", None, None, dn
    )
    h = jnp.tanh(h + params["b1"])
    out = jax.lax.conv_general_dilated(h, params["w2"], (1, 1), "VALID", None, None, dn)
    return out[0, ..., 0]


def test_gradient_penalty_matches_central_finite_differences():
    with jax.enable_x64(True):
        r = _rng(6)
        params = {
            "w1": jnp.asarray(r.normal(0, 0.5, (3, 3, 3, 4))),
            "b1": jnp.asarray(r.normal(0, 0.1, (4,))),
            "w2": jnp.asarray(r.normal(0, 0.5, (3, 3, 4, 1))),
        }
        x = r.uniform(-1, 1, (7, 6, 3))
        assert params["w1"].dtype == jnp.float64

        total = jax.jit(lambda y: jnp.sum(_conv_critic(params, y)))
        eps = 1e-6
        g_fd = np.zeros_like(x)
        for idx in np.ndindex(*x.shape):
            e = np.zeros_like(x)
            e[idx] = eps
            g_fd[idx] = (float(total(x + e)) - float(total(x - e))) / (2 * eps)

        got = losses.gradient_penalty(lambda y: _conv_critic(params, y), x)
        assert got.dtype == jnp.float64
        np.testing.assert_allclose(float(got), _np_gp(g_fd), rtol=1e-7)
        # Not a degenerate case: the penalty is far from 0 and from the value
        # with a zero gradient (1.0).
        assert 0.05 < float(got) and abs(float(got) - 1.0) > 0.05


# --- the jvp surrogate -----------------------------------------------------------


@pytest.fixture
def fast_compiles():
    """Cheaper XLA compiles for the many small programs of an eager grad-of-grad."""
    with quick_compiles():
        yield


def _real_critic(num_layers: int):
    """The real Discriminator (BatchNorm, train mode) and a random 20x24x3 input."""
    d = Discriminator(features=4, num_layers=num_layers, kernel=3, batch_norm=True)
    k_init, k_x, k_p = jax.random.split(jax.random.key(0), 3)
    x = jax.random.uniform(k_x, (20, 24, 3), jnp.float32, -1.0, 1.0)

    @jax.jit
    def init(k_init, k_p):
        variables = d.init(k_init, x[None], train=True)
        # Move the params away from their init so the check is not about a special
        # point, and scale the convs up so the input gradients are not all tiny.
        leaves, tree = jax.tree.flatten(variables["params"])
        keys = jax.random.split(k_p, len(leaves))
        leaves = [
            p * 5.0 + 0.01 * jax.random.normal(k, p.shape, p.dtype)
            for p, k in zip(leaves, keys, strict=True)
        ]
        return {**variables, "params": jax.tree.unflatten(tree, leaves)}

    variables = init(k_init, k_p)

    def critic_of(params):
        def critic(y):
            out, _ = d.apply(
                {**variables, "params": params},
                y[None],
                train=True,
                mutable=["batch_stats"],
            )
            return out[0]

        return critic

    return critic_of, variables["params"], x


# Eager evaluation compiles every primitive on its own; the eager case uses a
# 2-layer critic (one conv-BatchNorm-LeakyReLU block and the tail) to stay quick,
# the jitted case the default 5-layer one.
@pytest.mark.parametrize(
    "jit,num_layers", [(False, 2), (True, 5)], ids=["eager-2layers", "jit-5layers"]
)
def test_penalty_surrogate_matches_grad_of_grad(fast_compiles, jit, num_layers):
    critic_of, params, x = _real_critic(num_layers)

    def surrogate_fn(p):
        return losses.penalty_surrogate(critic_of(p), x)

    def exact_fn(p):
        return losses.gradient_penalty(critic_of(p), x)

    g_sur = jax.grad(surrogate_fn, has_aux=True)
    g_exact = jax.value_and_grad(exact_fn)
    if jit:
        g_sur, g_exact = jax.jit(g_sur), jax.jit(g_exact)

    grads_sur, gp_sur = g_sur(params)
    gp_exact, grads_exact = g_exact(params)

    # The reported penalty is the gradient penalty itself.
    np.testing.assert_allclose(gp_sur, gp_exact, rtol=1e-6)
    assert float(gp_exact) > 1e-3
    # Same parameter gradient; atol guards entries that are ~0 relative to the
    # gradient's scale (e.g. conv biases before a train-mode BatchNorm, whose
    # gradient is exactly 0 in theory and rounding noise in practice).
    scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads_exact))
    assert scale > 1e-4
    chex.assert_trees_all_close(grads_sur, grads_exact, rtol=1e-5, atol=1e-6 * scale)
    # The gradient reaches every conv kernel and BatchNorm scale.
    flat = jax.tree_util.tree_flatten_with_path(grads_exact)[0]
    checked = 0
    for path, g in flat:
        if jax.tree_util.keystr(path).endswith(("['kernel']", "['scale']")):
            assert float(jnp.max(jnp.abs(g))) > 1e-3 * scale, path
            checked += 1
    assert checked == num_layers + (num_layers - 1)


def test_penalty_surrogate_value_equals_gradient_penalty_closed_form():
    w = jnp.asarray([0.3, 0.9, 1.4], jnp.float32)
    x = jnp.asarray(_rng(7).uniform(-1, 1, (5, 4, 3)), jnp.float32)

    def critic(y):
        return jnp.sum(w * y**2, axis=-1)

    _, gp = losses.penalty_surrogate(critic, x)
    np.testing.assert_allclose(gp, _np_gp(2.0 * np.asarray(w) * np.asarray(x)), 1e-5)
