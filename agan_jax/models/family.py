"""What a model family is: a record of only what differs between families.

The one stage loop (`agan_jax/train/loop.py`), the update rules
(`agan_jax/train/updates.py`), sampling and the applications name no family; they
call the hooks of the `Family` of a run's `model.kind`, looked up in
`models/families.py` (the only place that knows every kind).

Conventions shared by every hook:
- `spec` is the run's `settings.ModelSpec`; `sizes` the (h, w) of every stage,
  coarsest first; stage indices count from 0 (coarsest).
- Images are HWC float32 in [-1, 1]; batches are vmapped by the caller.
- `variables` is a sequence with one generator variable tree per trained stage.

Adding a family: one file (modules, a `Family` and its `StageModel` factory; see
`models/singan.py` for the simplest) and one line in `models/families.py`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax

Size = tuple[int, int]


class StageModel(NamedTuple):
    """The pure functions of one family at one training stage (closed over plain
    values: the spec, the sizes, the stage).

    init(key, prev_g, prev_d) -> (g_vars, d_vars, train_key)
        Fresh variables (stage 0) or a warm start / growth from the previous
        stage's variables; the key that the stage's training stream starts from.
    input_keys: how many keys `draw_inputs` takes. The last draws this stage's
        noise; the others the sample of the frozen stages below (if any).
    input_shapes: ShapeDtypeStructs of what `draw_inputs` returns.
    draw_inputs(keys, data, lower=None) -> inputs
        A fresh training input of the generator (SinGAN: an upsampled sample of
        the frozen stages below and this stage's noise; ConSinGAN: the noise of
        every stage). `data` is the stage's `state.StageData`; `lower`: a sample
        of the frozen stages below drawn outside (train/lower.py), at the size
        of stage s-1, used instead of drawing one with keys[0].
    apply(g_vars, inputs, data) -> (image, g_vars)
        The trained generator in training mode (BatchNorm batch statistics; the
        returned variables carry the updated running statistics). Takes
        `data.rec_inputs` as well, for the reconstruction loss.
    frozen(name) -> bool
        Whether the top-level generator parameter group `name` is frozen at this
        stage (no gradient).
    g_tx(train_settings) -> optax transformation of the generator's parameters.
    prepare(g_vars, lower_vars, lower_amps, z_rec, real) -> (rec_inputs, rmse)
        Jittable: the reconstruction inputs of this stage and the RMSE of the real
        image against the reconstruction that enters this stage (None at stage
        0). The stage's noise amplitude is noise_amp_base x that RMSE (1 at stage
        0; `train.loop.noise_amp`). `g_vars`: this stage's freshly initialised
        variables; `lower_vars`, `lower_amps`: the frozen stages'.
    frozen_below: how many frozen stages the input samples (SinGAN, AGAN: the
        stage index; 0 for ConSinGAN, whose input is noise only).
    enter(x, real) -> (rec_inputs, rmse)
        `prepare` above stage 0 given the reconstruction `x` of the stages below
        (at stage s-1's size), which train/lower.py then draws with the frozen
        stages' own programs; None where `prepare` is not split so (stage 0,
        ConSinGAN).
    """

    init: Callable
    input_keys: int
    input_shapes: Any
    draw_inputs: Callable
    apply: Callable
    frozen: Callable[[str], bool]
    g_tx: Callable
    prepare: Callable
    frozen_below: int = 0
    enter: Callable | None = None


@dataclasses.dataclass(frozen=True)
class Family:
    """A model family: its networks, noise, forward pass and training plan.

    Fields (callables take the `ModelSpec` first):
      kind: the `model.kind` it is registered under.
      display_name(schedule) -> the paper's name of a run ("AGAN(3)").
      make_generator(spec, stage), make_discriminator(spec, stage): linen modules.
      draw_noise(spec, key, hw, stage): a fresh noise map of one stage.
      draw_noise_like(spec, key, z, stage): fresh noise of z's kind and shape.
      forward(spec, variables, sizes, amps, noises, x, start, stop):
        stages [start, stop) of the pyramid in inference mode; x is the output of
        stage start-1 (any size) or None at start 0; a None noise at a stage >= 1
        means its reconstruction noise. Returns (HWC image, attention maps: one
        per stage run that has one).
      rec_noises(spec, z_rec, sizes, stop, variables): the reconstruction noise of
        stages [0, stop) (None where the forward pass draws it itself).
      stage0_rec(spec, seed, sizes, g_vars, real0): the fixed stage-0
        reconstruction input (z*), saved with every stage.
      make_stage(spec, sizes, stage, augment, finetune) -> StageModel.
      update_rules: the update rules it trains with (train/updates.py).
      default_rule(spec): the rule of `train.update_rule='auto'`.
      stage_generators: each stage has an image-to-image generator of its own
        (super-resolution applies the finest one).
      attention: the generators return attention maps.
      can_finetune: `train.finetune.fine_tune` applies.
      check(spec): UserError for settings the family cannot train.
    """

    kind: str
    display_name: Callable[[str], str]
    make_generator: Callable
    make_discriminator: Callable
    draw_noise: Callable
    draw_noise_like: Callable
    forward: Callable
    rec_noises: Callable
    stage0_rec: Callable
    make_stage: Callable
    update_rules: tuple[str, ...]
    default_rule: Callable[[Any], str]
    stage_generators: bool = True
    attention: bool = False
    can_finetune: bool = False
    check: Callable = lambda spec: None


def rbg_key(key: jax.Array) -> jax.Array:
    """An 'rbg' key derived from a threefry key, for drawing initial weights: the
    init program compiles about 3x faster on CPU (docs/performance.md, "What
    changed")."""
    return jax.random.wrap_key_data(
        jax.random.bits(key, (4,), jax.numpy.uint32), impl="rbg"
    )


def stage_noises(
    family: Family, spec, key: jax.Array, sizes: Sequence[Size], start: int, stop: int
) -> list:
    """Noise maps for stages [start, stop), stage s from fold_in(key, s); None below."""
    return [
        family.draw_noise(spec, jax.random.fold_in(key, s), sizes[s], s)
        if s >= start
        else None
        for s in range(stop)
    ]
