"""SinGAN: one generator per stage with an image-space residual, a patch critic,
and the SinGAN family record (AGAN's is built from it, models/agan.py).

Generator of stage s: tanh(stack(pad(prev + noise_amp * z))) + prev, where prev is
the previous stage's output upsampled to this stage's size (zeros at stage 0).
Stage 0's noise has one channel shared by R, G and B; above, three channels.
The reconstruction input is a fixed noise z* at stage 0 and zero noise above.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from agan_jax import pyramid
from agan_jax.models.family import Family, StageModel, rbg_key
from agan_jax.models.layers import StageStack, pad_hw
from agan_jax.state import adam, warm_start

Size = tuple[int, int]
# fold_in constant of the stage-0 reconstruction noise z* (from the run's seed).
REC_NOISE_KEY = 10_000


class SinGANGenerator(StageStack):
    """tanh(stack(pad(prev + noise_amp * z))) + prev.

    Inputs are NHWC. Returns (image, None): the second slot holds an attention
    map for generators that have one.
    """

    @nn.compact
    def __call__(self, prev, z, noise_amp, train: bool = False):
        x = pad_hw(prev + noise_amp * z, self.pad)
        # Named G_A so that AGAN's first attention stage can warm-start from it.
        return jnp.tanh(self.stack(3, "G_A")(x, train)) + prev, None


class Discriminator(StageStack):
    """Markovian (patch) critic: the same conv stack ending in one channel."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        return self.stack(1, "D")(x, train)


def make_generator(spec, stage: int) -> nn.Module:
    """SinGAN's generator of one stage."""
    return SinGANGenerator(
        spec.width(stage), spec.num_layers, spec.kernel, spec.batch_norm
    )


def make_discriminator(spec, stage: int) -> nn.Module:
    """The critic of one stage (as wide as its generator)."""
    return Discriminator(
        spec.width(stage), spec.num_layers, spec.kernel, spec.batch_norm
    )


def draw_noise(spec, key: jax.Array, hw: Size, stage: int) -> jax.Array:
    """Standard normal HWC noise; stage 0 draws one channel shared by RGB."""
    del spec
    h, w = hw
    if stage == 0:
        return jnp.broadcast_to(jax.random.normal(key, (h, w, 1)), (h, w, 3))
    return jax.random.normal(key, (h, w, 3))


def draw_noise_like(spec, key: jax.Array, z: jax.Array, stage: int) -> jax.Array:
    """Fresh noise of the shape of the noise map z of `stage`."""
    return draw_noise(spec, key, z.shape[:2], stage)


def apply_stage(gen, variables, prev: jax.Array, z: jax.Array, amp) -> tuple:
    """One frozen generator on one HWC image (inference BatchNorm)."""
    out, attn = gen.apply(variables, prev[None], z[None], amp, train=False)
    return out[0], (None if attn is None else attn[0])


def run_stages(
    gens: Sequence[Any],
    variables: Sequence[Any],
    sizes: Sequence[Size],
    amps: jax.Array,
    noises: Sequence[jax.Array | None],
    x: jax.Array | None,
    start: int,
    stop: int,
    up=None,
) -> tuple[jax.Array, list]:
    """Runs stages [start, stop) of a pyramid of per-stage generators; `up`
    (`pyramid.upsampler`, default bicubic resize) brings x to a stage's size.

    Returns (output of stage stop-1, attention maps of the stages that have one).
    """
    up = up or pyramid.upsampler("resize", sizes)
    attns = []
    for s in range(start, stop):
        h, w = sizes[s]
        prev = jnp.zeros((h, w, 3), jnp.float32) if s == 0 else up(x, s)
        z = noises[s]
        if z is None:  # the reconstruction noise of a stage above 0
            z = jnp.zeros((h, w, 3), jnp.float32)
        x, attn = apply_stage(gens[s], variables[s], prev, z, amps[s])
        if attn is not None:
            attns.append(attn)
    return x, attns


def forward(make_gen, spec, variables, sizes, amps, noises, x, start, stop):
    """Family.forward for per-stage generators made by `make_gen(spec, stage)`."""
    gens = [make_gen(spec, s) for s in range(stop)]
    up = pyramid.upsampler(spec.upsample, sizes)
    return run_stages(gens, variables, sizes, amps, noises, x, start, stop, up)


def rec_noises(spec, z_rec, sizes, stop: int, variables=None) -> list:
    """Reconstruction noise: the fixed z* at stage 0, zero above."""
    del spec, variables
    return [z_rec] + [jnp.zeros((*sizes[s], 3), jnp.float32) for s in range(1, stop)]


def stage0_rec(spec, seed: int, sizes, g_vars, real0) -> jax.Array:
    """The fixed reconstruction noise z* of stage 0, drawn from the run's seed."""
    del g_vars, real0
    key = jax.random.fold_in(jax.random.key(seed), REC_NOISE_KEY)
    return draw_noise(spec, key, sizes[0], 0)


def lower_sample(spec, gens, sizes, stage: int, up, data, key) -> jax.Array:
    """A fresh sample of the frozen stages below `stage`, upsampled to its size
    (zeros at stage 0): stage s's noise from fold_in(key, s)."""
    if stage == 0:
        return jnp.zeros((*sizes[0], 3), jnp.float32)
    noises = [
        draw_noise(spec, jax.random.fold_in(key, s), sizes[s], s) for s in range(stage)
    ]
    amps = data.amps[:stage]
    x, _ = run_stages(gens, data.lower_vars, sizes, amps, noises, None, 0, stage, up)
    return up(x, stage)


def g_tx(ts):
    """The generator's Adam, its learning rate x gamma from `ts.decay_iter` on."""
    boundary = ts.decay_boundary(ts.g_steps)
    return adam(ts.lr_g, ts.beta1, ts.beta2, boundary, ts.gamma, ts.adam_eps)


def make_stage(
    make_gen, spec, sizes, stage: int, augment=None, finetune: bool = False
) -> StageModel:
    """The StageModel of a per-stage-generator family (SinGAN, AGAN)."""
    del augment
    gens = [make_gen(spec, s) for s in range(stage + 1)]
    g_mod, d_mod = gens[stage], make_discriminator(spec, stage)
    h, w = sizes[stage]
    up = pyramid.upsampler(spec.upsample, sizes)

    def init(key, prev_g=None, prev_d=None):
        # Warm start: a new stage copies every submodule of the previous stage
        # whose shapes match (SinGAN copies G and D while the width is unchanged);
        # model.warm_start=False (an ablation) starts every stage afresh (a
        # fine-tuning still starts from the weights it fine-tunes).
        if not spec.warm_start and not finetune:
            prev_g = prev_d = None
        k_init, k_train = jax.random.split(key)
        kg, kd = jax.random.split(rbg_key(k_init))
        x = jnp.zeros((1, h, w, 3), jnp.float32)
        g_vars = jax.tree.map(jnp.asarray, dict(g_mod.init(kg, x, x, 1.0, train=False)))
        d_vars = jax.tree.map(jnp.asarray, dict(d_mod.init(kd, x, train=False)))
        return warm_start(g_vars, prev_g), warm_start(d_vars, prev_d), k_train

    def draw_inputs(keys, data, lower=None):
        k_prev, k_z = keys
        if lower is None:  # drawn here, the whole pyramid below in this program
            prev = lower_sample(spec, gens, sizes, stage, up, data, k_prev)
        else:
            prev = up(lower, stage)
        return prev, draw_noise(spec, k_z, (h, w), stage)

    def apply(g_vars, inputs, data):
        prev, z = inputs
        (out, _), upd = g_mod.apply(
            g_vars,
            prev[None],
            z[None],
            data.amps[stage],
            train=True,
            mutable=["batch_stats"],
        )
        return out[0], {**g_vars, **upd}

    def enter(x, real):
        rec_prev = up(x, stage)
        rmse = jnp.sqrt(jnp.mean((real - rec_prev) ** 2))
        return (rec_prev, jnp.zeros((h, w, 3), jnp.float32)), rmse

    def prepare(g_vars, lower_vars, lower_amps, z_rec, real):
        del g_vars
        if stage == 0:
            return (jnp.zeros((h, w, 3), jnp.float32), z_rec), None
        noises = rec_noises(spec, z_rec, sizes, stage)
        x, _ = run_stages(
            gens, lower_vars, sizes, lower_amps, noises, None, 0, stage, up
        )
        return enter(x, real)

    return StageModel(
        init=init,
        input_keys=2,
        input_shapes=(jax.ShapeDtypeStruct((h, w, 3), jnp.float32),) * 2,
        draw_inputs=draw_inputs,
        apply=apply,
        frozen=lambda name: False,
        g_tx=g_tx,
        prepare=prepare,
        frozen_below=stage,
        enter=enter if stage else None,
    )


def family(kind: str, make_gen, display_name, attention: bool = False) -> Family:
    """A family of per-stage generators made by `make_gen` (SinGAN, AGAN): SinGAN's
    critic, noise, reconstruction noise and training plan around `make_gen`."""
    return Family(
        kind=kind,
        display_name=display_name,
        make_generator=make_gen,
        make_discriminator=make_discriminator,
        draw_noise=draw_noise,
        draw_noise_like=draw_noise_like,
        forward=functools.partial(forward, make_gen),
        rec_noises=rec_noises,
        stage0_rec=stage0_rec,
        make_stage=functools.partial(make_stage, make_gen),
        # SinGAN's own rule by default (AGAN is built on SinGAN's code); the
        # project's earlier rule ('fresh') as an option.
        update_rules=("singan", "fresh"),
        default_rule=lambda spec: "singan",
        stage_generators=True,
        attention=attention,
        can_finetune=False,
    )


FAMILY = family("singan", make_generator, lambda schedule: "SinGAN")
