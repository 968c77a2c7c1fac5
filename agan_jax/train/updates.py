"""One stage's pure training functions, for every model family.

An iteration is `d_steps` critic updates, then the generator update(s), under an
update rule (`train.update_rule`):
- 'singan' (official SinGAN's code, SPEC 6): one noise map per iteration; each
  critic update draws a fresh sample of the frozen stages below and makes its
  fake from that noise; the g_steps generator updates reuse the last critic
  update's noise and lower-stage sample (kept in `StageState.carry`), the fake
  recomputed after every optimiser step;
- 'fresh' (this project's earlier rule): every update draws a fresh generator
  input (`StageModel.draw_inputs`: for SinGAN/AGAN a fresh sample of the frozen
  stages below and fresh noise) and the generator takes g_steps gradients;
- 'consingan' (ConSinGAN's code): one input per iteration, shared by the critic
  updates and the generator loss; one generator gradient, applied g_steps times.
The family supplies the networks, inputs and optimiser groups (`StageModel`); the
losses (WGAN-GP critic, adversarial + alpha x reconstruction + tv_weight x TV
generator) and the update arithmetic are written once here.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from agan_jax import losses
from agan_jax.errors import UserError
from agan_jax.models.family import Family
from agan_jax.settings import AugmentSettings, LossSettings, ModelSpec, TrainSettings
from agan_jax.state import StageData, StageState, adam

# fold_in tag of stage 0's per-iteration reconstruction noise ('redraw').
REC_TAG = 7919


class StageFns(NamedTuple):
    """The pure functions of one stage."""

    init_state: Any  # jitted (key, prev_g_vars=None, prev_d_vars=None) -> StageState
    iteration: Any  # (state, data) -> (state, metrics): d_steps + g_calls updates
    d_step: Any  # (state, data) -> (state, metrics): one critic update
    g_step: Any  # (state, data) -> (state, metrics): one generator update call
    g_calls: int  # g_step calls per iteration
    prepare: Any  # (g_vars, lower_vars, lower_amps, z_rec, real) -> (rec_inputs, rmse)
    # (key, iteration) -> stage 0's reconstruction inputs of that iteration under
    # train.stage0_rec_noise='redraw' ('auto' under the singan rule); None otherwise.
    rec_draw: Any = None
    # (state, data) -> (state, metrics): `iteration` with the critic and the
    # generator updates in lax.scan loops (one copy of each update in the program).
    rolled: Any = None


def resolve_rule(family: Family, spec: ModelSpec, ts: TrainSettings) -> str:
    """The update rule a stage trains with ('auto': the family's default)."""
    rule = family.default_rule(spec) if ts.update_rule == "auto" else ts.update_rule
    if rule not in family.update_rules:
        raise UserError(
            f"train.update_rule={rule!r} is not a rule of {family.kind}, which trains "
            f"with {', '.join(family.update_rules)} (drop the override or pick one "
            "of those)"
        )
    return rule


def optax_apply(params, updates):
    """params + updates, leafwise (optax.apply_updates without the dtype casts)."""
    return jax.tree.map(lambda p, u: p + u, params, updates)


def critic_of(d_mod, d_vars, params):
    """The critic as a function of one HWC image, with these parameters (training
    mode; its BatchNorm running statistics are not kept)."""

    def critic(x):
        out, _ = d_mod.apply(
            {**d_vars, "params": params},
            x[None],
            train=True,
            mutable=["batch_stats"],
        )
        return out[0]

    return critic


def d_tx(ts: TrainSettings):
    """The critic's Adam, its learning rate x gamma from `ts.decay_iter` on."""
    boundary = ts.decay_boundary(ts.d_steps)
    return adam(ts.lr_d, ts.beta1, ts.beta2, boundary, ts.gamma, ts.adam_eps)


def make_stage_fns(
    family: Family,
    spec: ModelSpec,
    sizes,
    stage: int,
    ts: TrainSettings,
    ls: LossSettings,
    aug: AugmentSettings | None = None,
    finetune: bool = False,
) -> StageFns:
    """init_state, iteration, d_step, g_step and prepare of one stage."""
    model = family.make_stage(spec, sizes, stage, aug, finetune)
    if ts.remat:  # recompute the generator's activations in the backward pass
        model = model._replace(apply=jax.checkpoint(model.apply))
    rule = resolve_rule(family, spec, ts)
    one_input = rule == "consingan"
    carried = rule == "singan"
    d_mod = family.make_discriminator(spec, stage)
    tx_g, tx_d = model.g_tx(ts), d_tx(ts)
    n_in = model.input_keys
    g_updates = ts.g_steps if one_input else 1  # optimiser steps per g_step call
    per_iter = ts.d_steps + ts.g_steps  # state.step advances by this per iteration
    tv_weight = ls.tv_weight if stage >= ls.tv_from_stage else 0.0
    redraw = (
        stage == 0
        and not finetune
        and (
            ts.stage0_rec_noise == "redraw"
            or (ts.stage0_rec_noise == "auto" and carried)
        )
    )
    if redraw and not carried:
        raise UserError(
            "train.stage0_rec_noise='redraw' is official SinGAN's and needs "
            f"train.update_rule=singan (this run trains with {rule!r})"
        )

    def rec_draw(key, i):
        """Stage 0's reconstruction inputs of iteration i ('redraw'): a noise map
        of its own, drawn from the stage key and the iteration (as official
        SinGAN redraws z_opt every iteration)."""
        k = jax.random.fold_in(jax.random.fold_in(key, i), REC_TAG)
        return model.draw_inputs(list(jax.random.split(k, n_in)), None)

    def singan_keys(state):
        """SinGAN's rule: the iteration's noise key, and this critic update's keys
        of the lower-stage sample and the interpolation weight."""
        kit = jax.random.fold_in(state.key, state.step // per_iter)
        k_lower, k_a = jax.random.split(
            jax.random.fold_in(kit, 1 + state.step % per_iter)
        )
        lower = [k_lower] if n_in == 2 else list(jax.random.split(k_lower, n_in - 1))
        return [*lower[: n_in - 1], jax.random.fold_in(kit, 0)], k_a

    def critic_fn(d_vars, params):
        return critic_of(d_mod, d_vars, params)

    def d_step(state: StageState, data: StageData):
        """One critic update: with a fresh input ('fresh'), or ('consingan') with
        the iteration's input, whose key stays until the generator update."""
        key, carry = state.key, state.carry
        if carried:
            k_in, k_a = singan_keys(state)
        elif one_input:
            k_in = list(jax.random.split(state.key, 1 + n_in)[1:])
            k_a = jax.random.fold_in(k_in[-1], state.step)
        else:
            key, *k_in, k_a = jax.random.split(state.key, 2 + n_in)
        inputs = model.draw_inputs(k_in, data)
        if carried:
            carry = inputs
        fake, g_vars = model.apply(state.g_vars, inputs, data)
        fake = jax.lax.stop_gradient(fake)
        a = jax.random.uniform(k_a)

        def loss_fn(params):
            critic = critic_fn(state.d_vars, params)
            wgan = losses.critic_wgan(critic(data.real), critic(fake))
            xi = losses.interpolate(data.real, fake, a)
            if ts.gp_mode == "jvp":
                surrogate, gp = losses.penalty_surrogate(critic, xi)
            else:
                gp = surrogate = losses.gradient_penalty(critic, xi)
            return wgan + ls.lambda_gp * surrogate, (wgan + ls.lambda_gp * gp, gp)

        params = state.d_vars["params"]
        grads, (d_loss, gp) = jax.grad(loss_fn, has_aux=True)(params)
        updates, d_opt = tx_d.update(grads, state.d_opt, params)
        d_vars = {**state.d_vars, "params": optax_apply(params, updates)}
        new = state.replace(
            step=state.step + 1,
            g_vars=g_vars,
            d_vars=d_vars,
            d_opt=d_opt,
            key=key,
            carry=carry,
        )
        return new, {"d_loss": d_loss, "gp": gp}

    def g_step(state: StageState, data: StageData):
        """Generator update(s) from the adversarial, reconstruction and TV losses:
        one with the last critic update's input ('singan') or a fresh one
        ('fresh'), or ('consingan', the iteration's input) one gradient applied
        g_steps times; the key then moves on (not under 'singan', whose keys
        derive from the stage key and the update count)."""
        if carried:
            key, inputs = state.key, state.carry
        else:
            key, *k_in = jax.random.split(state.key, 1 + n_in)
            inputs = model.draw_inputs(k_in, data)
        critic = critic_fn(state.d_vars, state.d_vars["params"])
        rec_inputs = data.rec_inputs
        if redraw:  # under 'singan' state.key is the stage key all stage long
            rec_inputs = rec_draw(state.key, state.step // per_iter)

        def loss_fn(params):
            # Frozen groups get no gradient at all (XLA then skips their backward
            # pass); their zero update comes from the family's optimiser.
            params = {
                n: jax.lax.stop_gradient(p) if model.frozen(n) else p
                for n, p in params.items()
            }
            v = {**state.g_vars, "params": params}
            fake, v = model.apply(v, inputs, data)
            rec, v = model.apply(v, rec_inputs, data)
            adv = losses.generator_adv(critic(fake))
            rec_loss = losses.reconstruction(rec, data.real)
            tv = losses.total_variation(fake, ls.tv_reduction)
            total = adv + ls.alpha * rec_loss + tv_weight * tv
            return total, (v, adv, rec_loss, tv)

        params = state.g_vars["params"]
        grads, (v, adv, rec_loss, tv) = jax.grad(loss_fn, has_aux=True)(params)
        g_opt = state.g_opt
        for _ in range(g_updates):
            updates, g_opt = tx_g.update(grads, g_opt, params)
            params = optax_apply(params, updates)
        new = state.replace(
            step=state.step + g_updates,
            g_vars={**v, "params": params},
            g_opt=g_opt,
            key=key,
        )
        return new, {"g_adv": adv, "rec": rec_loss, "tv": tv}

    # Traced once each, reused by the unrolled iteration (XLA inlines them). A
    # lax.fori_loop over the updates instead compiled 1.5x faster but ran 13x
    # slower per iteration on XLA CPU (jax 0.10.2, 49x64 px, 64 channels).
    d_jit, g_jit = jax.jit(d_step), jax.jit(g_step)
    g_calls = 1 if one_input else ts.g_steps

    def iteration(state: StageState, data: StageData):
        """d_steps critic updates, then the generator update call(s)."""
        for _ in range(ts.d_steps):
            state, md = d_jit(state, data)
        for _ in range(g_calls):
            state, mg = g_jit(state, data)
        return state, {**md, **mg}

    def rolled(state: StageState, data: StageData):
        """`iteration` with each kind of update in a lax.scan loop: the program
        holds one critic and one generator update instead of d_steps + g_calls
        copies (compile unit 'rolled': compiles about as fast as the 'update'
        unit's two programs, runs as one call)."""

        def loop(step, n, state):
            state, m = jax.lax.scan(lambda st, _: step(st, data), state, None, n)
            return state, jax.tree.map(lambda x: x[-1], m)

        state, md = loop(d_step, ts.d_steps, state)
        state, mg = loop(g_step, g_calls, state)
        return state, {**md, **mg}

    @jax.jit
    def init_state(key, prev_g_vars=None, prev_d_vars=None) -> StageState:
        # One compiled program (eager init ran dozens of tiny compiles). Its outputs
        # are fresh buffers, so donating the state never donates a frozen stage's.
        g_vars, d_vars, k_train = model.init(key, prev_g_vars, prev_d_vars)
        return StageState(
            step=jnp.zeros((), jnp.int32),
            g_vars=g_vars,
            d_vars=d_vars,
            g_opt=tx_g.init(g_vars["params"]),
            d_opt=tx_d.init(d_vars["params"]),
            key=k_train,
            carry=jax.tree.map(
                lambda x: jnp.zeros(x.shape, x.dtype), model.input_shapes
            )
            if carried
            else None,
        )

    return StageFns(
        init_state,
        iteration,
        d_step,
        g_step,
        g_calls,
        jax.jit(model.prepare),
        jax.jit(rec_draw) if redraw else None,
        rolled,
    )
