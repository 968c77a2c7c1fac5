"""The critic and generator objectives, term by term against NumPy, and one
critic and one generator update against the same objectives written out by hand
(the gradient each update hands to Adam is that objective's gradient).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from agan_jax import losses
from agan_jax.models import families
from agan_jax.settings import LossSettings
from agan_jax.state import StageData
from agan_jax.train import updates
from agan_jax.train.loop import stage_key
from tests.conftest import loss_settings, model_spec, train_settings

H, W = 6, 7
W_CRITIC = np.array([0.7, -0.4, 0.25])


def _images(seed: int = 0):
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1, 1, (H, W, 3)).astype(np.float32) for _ in range(3)]


def _critic(w):
    """A per-pixel critic D(x) = tanh(x . w), one output channel."""
    return lambda x: jnp.tanh(x @ w)[..., None]


def _np_critic(x, w):
    return np.tanh(np.asarray(x, np.float64) @ w)


def _np_tv(x, reduction):
    x = np.asarray(x, np.float64)
    dh = (x[:, 1:] - x[:, :-1]) ** 2
    dv = (x[1:] - x[:-1]) ** 2
    if reduction == "sum":
        return dh.sum() + dv.sum()
    mean = dh.mean() + dv.mean()
    return 2 * mean if reduction == "pytorch" else mean


@pytest.mark.parametrize("gp_mode", ["exact", "jvp"])
def test_critic_objective_is_wgan_plus_lambda_gp_times_the_penalty(gp_mode):
    real, fake, _ = _images()
    a, lambda_gp = 0.3, 10.0
    objective, (loss, gp) = updates.critic_objective(
        _critic(jnp.asarray(W_CRITIC, jnp.float32)),
        real,
        fake,
        a,
        lambda_gp,
        gp_mode,
    )
    # NumPy: d sum D / dx of tanh(x . w) is (1 - tanh^2) w at every pixel.
    x = a * real.astype(np.float64) + (1 - a) * fake
    grad = (1 - _np_critic(x, W_CRITIC) ** 2)[..., None] * W_CRITIC
    want_gp = np.mean((np.sqrt((grad**2).sum(-1) + 1e-12) - 1) ** 2)
    wgan = _np_critic(fake, W_CRITIC).mean() - _np_critic(real, W_CRITIC).mean()
    np.testing.assert_allclose(gp, want_gp, rtol=1e-5)
    np.testing.assert_allclose(loss, wgan + lambda_gp * want_gp, rtol=1e-5, atol=1e-6)
    if gp_mode == "exact":
        np.testing.assert_allclose(objective, loss, rtol=1e-6)


def test_critic_objectives_of_both_penalty_modes_have_one_gradient():
    real, fake, _ = _images(1)

    def grad(mode):
        return jax.grad(
            lambda w: updates.critic_objective(_critic(w), real, fake, 0.6, 10.0, mode)[
                0
            ]
        )(jnp.asarray(W_CRITIC, jnp.float32))

    np.testing.assert_allclose(grad("jvp"), grad("exact"), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("reduction", ["mean", "sum", "pytorch"])
def test_generator_objective_is_the_weighted_sum_of_its_terms(reduction):
    real, fake, rec = _images(2)
    ls = LossSettings(
        lambda_gp=0.1, alpha=7.0, tv_weight=0.35, tv_reduction=reduction,
        noise_amp_base=0.1, noise_amp_floor=0.0, tv_from_stage=0,
    )  # fmt: skip
    critic = _critic(jnp.asarray(W_CRITIC, jnp.float32))
    total, (adv, rec_loss, tv) = updates.generator_objective(
        critic, fake, rec, real, ls
    )
    want_adv = -_np_critic(fake, W_CRITIC).mean()
    want_rec = np.mean((rec.astype(np.float64) - real) ** 2)
    want_tv = _np_tv(fake, reduction)
    np.testing.assert_allclose(adv, want_adv, rtol=1e-5)
    np.testing.assert_allclose(rec_loss, want_rec, rtol=1e-5)
    np.testing.assert_allclose(tv, want_tv, rtol=1e-5)
    want = want_adv + 7.0 * want_rec + 0.35 * want_tv
    np.testing.assert_allclose(total, want, rtol=1e-5)
    # A stage's own TV weight replaces the settings' one.
    total0, _ = updates.generator_objective(critic, fake, rec, real, ls, tv_weight=0)
    np.testing.assert_allclose(total0, want_adv + 7.0 * want_rec, rtol=1e-5)


SIZES = [(16, 22), (20, 27)]


def _stage(kind: str, **ts_fields):
    """A tiny stage 0 under the 'fresh' rule with a fixed reconstruction input:
    (stage record, fns, state, data)."""
    spec = model_spec(kind, nfc=8, max_nfc=8)
    family = families.of(spec)
    ls = dataclasses.replace(loss_settings(kind), tv_weight=0.5, alpha=3.0)
    ts = train_settings(
        update_rule="fresh", stage0_rec_noise="fixed", compile_unit="update",
        **ts_fields,
    )  # fmt: skip
    st = updates.make_stage(family, spec, SIZES, 0, ts, ls)
    fns = updates.make_stage_fns(family, spec, SIZES, 0, ts, ls)
    rng = np.random.default_rng(3)
    real = jnp.asarray(rng.uniform(-0.8, 0.8, (*SIZES[0], 3)).astype(np.float32))
    state = fns.init_state(stage_key(0, 0))
    z_rec = family.stage0_rec(spec, 0, SIZES, state.g_vars, real)
    rec_inputs, _ = fns.prepare(state.g_vars, (), jnp.zeros((0,)), z_rec, real)
    data = StageData(real, jnp.ones((1,), jnp.float32), rec_inputs, (), real)
    return st, fns, state, data


def assert_adam_step(got, tx, grads, opt, params):
    """`got` is Adam's step from `params` on `grads` wherever the gradient is
    above float noise. A conv bias before BatchNorm has a true gradient of 0,
    and Adam turns its float-noise gradient into a full +-lr step of either
    sign; those elements (and only those: at least 90% are compared) are left
    out."""
    upd, _ = tx.update(grads, opt, params)
    want = optax.apply_updates(params, upd)
    top = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads))
    checked = total = 0
    for g, x, y in zip(*(jax.tree.leaves(t) for t in (grads, got, want)), strict=True):
        mask = np.abs(np.asarray(g)) > 1e-5 * top
        np.testing.assert_allclose(np.asarray(x)[mask], np.asarray(y)[mask], atol=2e-6)
        checked, total = checked + mask.sum(), total + mask.size
    assert checked >= 0.9 * total, (checked, total)


def assert_gradient(opt_state, grads, beta1: float):
    """The gradient an update took equals `grads`: after a stage's first Adam
    step the first moment is (1 - beta1) x the gradient (Adam's step itself is
    nearly sign(gradient) then, blind to most changes of the objective)."""
    mu = optax.tree_utils.tree_get(opt_state, "mu")
    top = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads))
    for m, g in zip(jax.tree.leaves(mu), jax.tree.leaves(grads), strict=True):
        np.testing.assert_allclose(m, (1 - beta1) * g, rtol=1e-4, atol=1e-6 * top)


@pytest.mark.parametrize("kind", ["singan", "agan"])
def test_updates_take_adams_step_on_the_written_out_objectives(kind):
    st, fns, state, data = _stage(kind)
    model, ls = st.model, st.ls
    n_in = model.input_keys

    # The critic update: fresh input keys, fake from them, a ~ U(0, 1).
    _, *k_in, k_a = jax.random.split(state.key, 2 + n_in)
    # The reference sides run jitted: op by op they took half a minute.
    fake, _ = jax.jit(lambda v, k, d: model.apply(v, model.draw_inputs(k, d), d))(
        state.g_vars, k_in, data
    )
    a = jax.random.uniform(k_a)

    def critic_loss(params):
        d = updates.critic_of(st.d_mod, state.d_vars, params)
        xi = a * data.real + (1 - a) * fake
        g = jax.grad(lambda y: jnp.sum(d(y)))(xi)
        gp = jnp.mean((jnp.sqrt(jnp.sum(g**2, -1) + 1e-12) - 1) ** 2)
        return jnp.mean(d(fake)) - jnp.mean(d(data.real)) + ls.lambda_gp * gp

    d_params = state.d_vars["params"]
    after_d, _ = jax.jit(fns.d_step)(state, data)
    grads = jax.jit(jax.grad(critic_loss))(d_params)
    assert_gradient(after_d.d_opt, grads, st.ts.beta1)
    assert_adam_step(after_d.d_vars["params"], st.tx_d, grads, state.d_opt, d_params)

    # The generator update: fresh inputs from split(key), the critic as updated.
    _, *k_in = jax.random.split(after_d.key, 1 + n_in)
    inputs = jax.jit(model.draw_inputs)(k_in, data)
    critic = updates.critic_of(st.d_mod, after_d.d_vars, after_d.d_vars["params"])

    def gen_loss(params):
        v = {**after_d.g_vars, "params": params}
        fake, v = model.apply(v, inputs, data)
        rec, _ = model.apply(v, data.rec_inputs, data)
        tv = losses.total_variation(fake, ls.tv_reduction)
        rec_loss = jnp.mean((rec - data.real) ** 2)
        return -jnp.mean(critic(fake)) + ls.alpha * rec_loss + ls.tv_weight * tv

    g_params = after_d.g_vars["params"]
    after_g, _ = jax.jit(fns.g_step)(after_d, data)
    grads = jax.jit(jax.grad(gen_loss))(g_params)
    assert_gradient(after_g.g_opt, grads, st.ts.beta1)
    assert_adam_step(after_g.g_vars["params"], st.tx_g, grads, after_d.g_opt, g_params)
    assert int(after_g.step) == 2


def test_rules_are_records_chosen_by_name():
    """Each rule's generator input and optimiser steps per call."""
    ts = train_settings(g_steps=3)
    singan, fresh, consingan = (updates.RULES[n] for n in updates.RULES)
    assert (singan.carries, fresh.carries, consingan.carries) == (True, False, False)
    assert [r.g_calls(ts) for r in (singan, fresh, consingan)] == [3, 3, 1]
    assert [r.g_updates(ts) for r in (singan, fresh, consingan)] == [1, 1, 3]
