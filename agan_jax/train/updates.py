"""One stage's pure training functions, for every model family.

An iteration is `d_steps` critic updates, then the generator update(s). What the
updates minimise is written once, as two pure functions: `critic_objective`
(WGAN-GP: D(fake) - D(real) + lambda_gp x gradient penalty) and
`generator_objective` (adversarial + alpha x reconstruction + tv_weight x TV;
AGAN eq. 14). Where each update's generator input comes from is the update rule
(`train.update_rule`), a small record in `RULES`:
- 'singan' (official SinGAN's train.py): one noise map per iteration; each critic
  update draws a fresh sample of the frozen stages below and makes its fake from
  that noise; the g_steps generator updates reuse the last critic update's noise
  and lower-stage sample (kept in `StageState.carry`), the fake recomputed after
  every optimiser step;
- 'fresh' (this project's earlier rule): every update draws a fresh generator
  input (`StageModel.draw_inputs`: for SinGAN/AGAN a fresh sample of the frozen
  stages below and fresh noise) and the generator takes g_steps gradients;
- 'consingan' (official ConSinGAN's train.py): one input per iteration, shared by
  the critic updates and the generator loss; one generator gradient, applied
  g_steps times.
The family supplies the networks, inputs and optimiser groups (`StageModel`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from agan_jax import losses
from agan_jax.errors import UserError
from agan_jax.models.family import Family, StageModel
from agan_jax.settings import AugmentSettings, LossSettings, ModelSpec, TrainSettings
from agan_jax.state import StageData, StageState, adam

# fold_in tag of stage 0's per-iteration reconstruction noise ('redraw').
REC_TAG = 7919


def critic_objective(critic, real, fake, a, lambda_gp: float, gp_mode: str = "exact"):
    """The critic's WGAN-GP objective for one real and one fake image.

    loss = mean D(fake) - mean D(real) + lambda_gp x GP, the per-pixel gradient
    penalty GP taken at a x real + (1 - a) x fake (`losses.gradient_penalty`).
    Returns (what to differentiate, (loss, GP)): under gp_mode 'jvp' the first
    is `losses.penalty_surrogate`'s stand-in for GP, with GP's gradient.
    """
    wgan = losses.critic_wgan(critic(real), critic(fake))
    xi = losses.interpolate(real, fake, a)
    if gp_mode == "jvp":
        surrogate, gp = losses.penalty_surrogate(critic, xi)
    else:
        gp = surrogate = losses.gradient_penalty(critic, xi)
    return wgan + lambda_gp * surrogate, (wgan + lambda_gp * gp, gp)


def generator_objective(critic, fake, rec, real, ls: LossSettings, tv_weight=None):
    """The generator's objective: -mean D(fake) + alpha x MSE(rec, real)
    + tv_weight x TV(fake) (AGAN eq. 14; SinGAN's with tv_weight 0).

    `tv_weight`: the TV weight of this stage (default `ls.tv_weight`). Returns
    (total, (adversarial, reconstruction, TV)).
    """
    tv_weight = ls.tv_weight if tv_weight is None else tv_weight
    adv = losses.generator_adv(critic(fake))
    rec_loss = losses.reconstruction(rec, real)
    tv = losses.total_variation(fake, ls.tv_reduction)
    total = adv + ls.alpha * rec_loss + tv_weight * tv
    return total, (adv, rec_loss, tv)


def update_keys(key, iteration, slot):
    """(lower-stage sample key, interpolation key) of update `slot` of an
    iteration, from the key the iteration starts with (train/lower.py draws the
    lower-stage samples of a whole call with the same keys)."""
    kit = jax.random.fold_in(key, iteration)
    return jax.random.split(jax.random.fold_in(kit, 1 + slot))


def singan_critic_keys(state: StageState, n_in: int, per_iter: int):
    """'singan': the iteration's noise key and this critic update's keys of the
    lower-stage sample and the interpolation weight, all derived from the stage
    key and the update count (the key itself never moves)."""
    i = state.step // per_iter
    k_lower, k_a = update_keys(state.key, i, state.step % per_iter)
    lower = [k_lower] if n_in == 2 else list(jax.random.split(k_lower, n_in - 1))
    k_z = jax.random.fold_in(jax.random.fold_in(state.key, i), 0)
    return state.key, [*lower[: n_in - 1], k_z], k_a


def fresh_critic_keys(state: StageState, n_in: int, per_iter: int):
    """'fresh': fresh input keys for every update; the key moves on."""
    key, *k_in, k_a = jax.random.split(state.key, 2 + n_in)
    return key, k_in, k_a


def consingan_critic_keys(state: StageState, n_in: int, per_iter: int):
    """'consingan': the iteration's input keys (the generator update draws the
    same ones, then moves the key on); the interpolation weight per update."""
    k_in = list(jax.random.split(state.key, 1 + n_in)[1:])
    return state.key, k_in, jax.random.fold_in(k_in[-1], state.step)


class UpdateRule(NamedTuple):
    """Where an iteration's updates take their generator inputs.

    critic_keys(state, n_in, per_iter) -> (key after, input keys, interpolation
    key) of one critic update; carries: the generator updates reuse the last
    critic update's input (else they draw with split(key)); one_gradient: one
    generator gradient per iteration, applied g_steps times.
    """

    name: str
    critic_keys: Callable
    carries: bool = False
    one_gradient: bool = False

    def g_calls(self, ts: TrainSettings) -> int:
        """Generator step calls per iteration."""
        return 1 if self.one_gradient else ts.g_steps

    def g_updates(self, ts: TrainSettings) -> int:
        """Optimiser steps per generator step call."""
        return ts.g_steps if self.one_gradient else 1

    def lower_slots(self, ts: TrainSettings) -> int:
        """Lower-stage samples an iteration draws: one per critic update, and
        one per generator update where the input is not carried."""
        return ts.d_steps if self.carries else ts.per_iter


RULES = {
    "singan": UpdateRule("singan", singan_critic_keys, carries=True),
    "fresh": UpdateRule("fresh", fresh_critic_keys),
    "consingan": UpdateRule("consingan", consingan_critic_keys, one_gradient=True),
}


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
    # Lower-stage samples per iteration the loop feeds in `StageState.lower`
    # (train/lower.py); 0: the stage has no frozen stages below.
    lower_slots: int = 0
    # (x, real) -> (rec_inputs, rmse): `prepare` given the reconstruction x of
    # the stages below (StageModel.enter); None where prepare is not split.
    enter: Any = None


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


class Stage(NamedTuple):
    """What one stage's update functions close over."""

    model: StageModel
    d_mod: Any  # the critic's linen module
    rule: UpdateRule
    ts: TrainSettings
    ls: LossSettings
    tx_g: Any
    tx_d: Any
    redraw: bool  # stage 0 redraws its reconstruction input every iteration
    tv_weight: float  # this stage's TV weight (0 below loss.tv_from_stage)

    @property
    def per_iter(self) -> int:
        """Optimiser updates per iteration (how far state.step advances)."""
        return self.ts.per_iter


def make_stage(family, spec, sizes, stage, ts, ls, aug=None, finetune=False) -> Stage:
    """The Stage record of `make_stage_fns` (arguments as there)."""
    model = family.make_stage(spec, sizes, stage, aug, finetune)
    if ts.remat:  # recompute the generator's activations in the backward pass
        model = model._replace(apply=jax.checkpoint(model.apply))
    rule = RULES[resolve_rule(family, spec, ts)]
    mode = ts.stage0_rec_noise
    redraw = stage == 0 and not finetune
    redraw = redraw and (mode == "redraw" or (mode == "auto" and rule.carries))
    if redraw and not rule.carries:
        raise UserError(
            "train.stage0_rec_noise='redraw' is official SinGAN's and needs "
            f"train.update_rule=singan (this run trains with {rule.name!r})"
        )
    d_mod = family.make_discriminator(spec, stage)
    tv_weight = ls.tv_weight if stage >= ls.tv_from_stage else 0.0
    tx_g, tx_d = model.g_tx(ts), d_tx(ts)
    return Stage(model, d_mod, rule, ts, ls, tx_g, tx_d, redraw, tv_weight)


def stage0_rec_inputs(st: Stage, key, i):
    """Stage 0's reconstruction inputs of iteration i ('redraw'): a noise map of
    its own, drawn from the stage key and the iteration (as official SinGAN
    redraws z_opt every iteration)."""
    k = jax.random.fold_in(jax.random.fold_in(key, i), REC_TAG)
    return st.model.draw_inputs(list(jax.random.split(k, st.model.input_keys)), None)


def fed_lower(st: Stage, state: StageState):
    """This update's sample of the frozen stages below, from `state.lower`
    (None when the loop feeds none: the update draws its own).

    `state.lower` holds `lower_slots` samples per iteration for k iterations;
    iteration i's are at (i mod k) x slots, as `lower.call_keys` draws them.
    """
    if state.lower is None:
        return None
    slots = st.rule.lower_slots(st.ts)
    k = state.lower.shape[0] // slots
    i = (state.step // st.per_iter) % k * slots + state.step % st.per_iter
    return jax.lax.dynamic_index_in_dim(state.lower, i, keepdims=False)


def critic_update(st: Stage, state: StageState, data: StageData):
    """One critic update on `critic_objective`, its fake made from the input the
    rule gives (kept in state.carry under 'singan')."""
    model = st.model
    key, k_in, k_a = st.rule.critic_keys(state, model.input_keys, st.per_iter)
    inputs = model.draw_inputs(k_in, data, fed_lower(st, state))
    carry = inputs if st.rule.carries else state.carry
    fake, g_vars = model.apply(state.g_vars, inputs, data)
    fake = jax.lax.stop_gradient(fake)
    a = jax.random.uniform(k_a)

    def loss_fn(params):
        critic = critic_of(st.d_mod, state.d_vars, params)
        return critic_objective(
            critic, data.real, fake, a, st.ls.lambda_gp, st.ts.gp_mode
        )

    params = state.d_vars["params"]
    grads, (d_loss, gp) = jax.grad(loss_fn, has_aux=True)(params)
    updates, d_opt = st.tx_d.update(grads, state.d_opt, params)
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


def generator_update(st: Stage, state: StageState, data: StageData):
    """Generator update(s) on `generator_objective`: with the last critic
    update's input ('singan') or a fresh one drawn with split(key); under
    'consingan' one gradient applied g_steps times."""
    model = st.model
    if st.rule.carries:
        key, inputs = state.key, state.carry
    else:
        key, *k_in = jax.random.split(state.key, 1 + model.input_keys)
        inputs = model.draw_inputs(k_in, data, fed_lower(st, state))
    critic = critic_of(st.d_mod, state.d_vars, state.d_vars["params"])
    rec_inputs = data.rec_inputs
    if st.redraw:  # under 'singan' state.key is the stage key all stage long
        rec_inputs = stage0_rec_inputs(st, state.key, state.step // st.per_iter)

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
        total, terms = generator_objective(
            critic, fake, rec, data.real, st.ls, st.tv_weight
        )
        return total, (v, *terms)

    params = state.g_vars["params"]
    grads, (v, adv, rec_loss, tv) = jax.grad(loss_fn, has_aux=True)(params)
    g_opt, n = state.g_opt, st.rule.g_updates(st.ts)
    for _ in range(n):
        updates, g_opt = st.tx_g.update(grads, g_opt, params)
        params = optax_apply(params, updates)
    new = state.replace(
        step=state.step + n, g_vars={**v, "params": params}, g_opt=g_opt, key=key
    )
    return new, {"g_adv": adv, "rec": rec_loss, "tv": tv}


def first_state(st: Stage, key, prev_g_vars=None, prev_d_vars=None) -> StageState:
    """A stage's first state: fresh or warm-started variables, fresh optimisers,
    the training key, and (under 'singan') a zero carried input."""
    g_vars, d_vars, k_train = st.model.init(key, prev_g_vars, prev_d_vars)
    carry = None
    if st.rule.carries:
        zeros = lambda x: jnp.zeros(x.shape, x.dtype)  # noqa: E731
        carry = jax.tree.map(zeros, st.model.input_shapes)
    return StageState(
        step=jnp.zeros((), jnp.int32),
        g_vars=g_vars,
        d_vars=d_vars,
        g_opt=st.tx_g.init(g_vars["params"]),
        d_opt=st.tx_d.init(d_vars["params"]),
        key=k_train,
        carry=carry,
    )


def scan_updates(step, n: int, state, data):
    """n updates of `step` in a lax.scan loop; the last update's metrics."""
    state, m = jax.lax.scan(lambda st, _: step(st, data), state, None, n)
    return state, jax.tree.map(lambda x: x[-1], m)


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
    st = make_stage(family, spec, sizes, stage, ts, ls, aug, finetune)
    g_calls = st.rule.g_calls(ts)

    # Named as StageFns names them: the compile logs (and tests) see these names.
    def d_step(state, data):
        return critic_update(st, state, data)

    def g_step(state, data):
        return generator_update(st, state, data)

    # Traced once each, reused by the unrolled iteration (XLA inlines them). A
    # lax.fori_loop over the updates instead compiled faster but ran far slower
    # per iteration on XLA CPU (docs/performance.md, "Compile unit").
    d_jit, g_jit = jax.jit(d_step), jax.jit(g_step)

    def iteration(state, data):
        """d_steps critic updates, then the generator update call(s)."""
        for _ in range(ts.d_steps):
            state, md = d_jit(state, data)
        for _ in range(g_calls):
            state, mg = g_jit(state, data)
        return state, {**md, **mg}

    def rolled(state, data):
        """`iteration` with each kind of update in a lax.scan loop: the program
        holds one critic and one generator update instead of d_steps + g_calls
        copies (compile unit 'rolled')."""
        state, md = scan_updates(d_step, ts.d_steps, state, data)
        state, mg = scan_updates(g_step, g_calls, state, data)
        return state, {**md, **mg}

    def init_state(key, prev_g_vars=None, prev_d_vars=None):
        # One compiled program (eager init ran dozens of tiny compiles). Its
        # outputs are fresh buffers, so donating the state never donates a
        # frozen stage's.
        return first_state(st, key, prev_g_vars, prev_d_vars)

    def rec_draw(key, i):
        return stage0_rec_inputs(st, key, i)

    return StageFns(
        init_state=jax.jit(init_state),
        iteration=iteration,
        d_step=d_step,
        g_step=g_step,
        g_calls=g_calls,
        prepare=jax.jit(st.model.prepare),
        rec_draw=jax.jit(rec_draw) if st.redraw else None,
        rolled=rolled,
        lower_slots=st.rule.lower_slots(ts) if st.model.frozen_below else 0,
        enter=None if st.model.enter is None else jax.jit(st.model.enter),
    )
