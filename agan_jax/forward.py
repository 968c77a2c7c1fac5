"""The pyramid forward pass and noise, for every model family.

Sampling, training's stage grids and every application go through
`pyramid_forward`; each dispatches to the run's family (models/families.py).
A sample is a pure function of its key: stage s draws its noise from
`jax.random.fold_in(key, s)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax

from agan_jax.models import families
from agan_jax.models.family import stage_noises as _family_stage_noises

Size = tuple[int, int]


def draw_noise(spec, key: jax.Array, hw: Size, stage: int) -> jax.Array:
    """A fresh noise map of one stage (SinGAN/AGAN: HWC, one channel shared by RGB
    at stage 0; ConSinGAN: its own shapes, `consingan.noise_shape`)."""
    return families.of(spec).draw_noise(spec, key, hw, stage)


def draw_noise_like(spec, key: jax.Array, z: jax.Array, stage: int) -> jax.Array:
    """Fresh noise of the kind and shape of the noise map z of `stage`."""
    return families.of(spec).draw_noise_like(spec, key, z, stage)


def stage_noises(
    spec, key: jax.Array, sizes: Sequence[Size], start: int, stop: int
) -> list:
    """Noise maps for stages [start, stop), stage s from fold_in(key, s); None below."""
    return _family_stage_noises(families.of(spec), spec, key, sizes, start, stop)


def rec_noises(
    spec,
    z_rec: jax.Array,
    sizes: Sequence[Size],
    stop: int,
    variables: Sequence[Any] | None = None,
) -> list:
    """The reconstruction noise of stages [0, stop): z* at stage 0; above it zero
    (SinGAN, AGAN) or ConSinGAN's fixed maps drawn from the key stored in
    `variables[stop - 1]` (None without `variables`: the forward pass draws them)."""
    return families.of(spec).rec_noises(spec, z_rec, sizes, stop, variables)


def pyramid_forward(
    spec,
    variables: Sequence[Any],
    sizes: Sequence[Size],
    amps: jax.Array,
    noises: Sequence[jax.Array | None],
    x: jax.Array | None,
    start: int,
    stop: int,
) -> tuple[jax.Array, list]:
    """Runs stages [start, stop) of a trained pyramid (inference BatchNorm).

    Args:
      variables: one generator variable tree per stage (at least `stop`).
      amps: the noise amplitude of every stage.
      noises: one map per stage (None below `start`; a None at a stage >= 1 is its
        reconstruction noise).
      x: the output of stage start-1 (any size: it is resized to what stage
        `start` takes), or None when start == 0.
    Returns:
      (HWC output of stage stop-1, the attention maps of the stages run that
      have one: AGAN's C; empty for SinGAN and ConSinGAN).
    """
    family = families.of(spec)
    return family.forward(spec, variables, sizes, amps, noises, x, start, stop)


def apply_stage_at(spec, stage: int, variables, hw: Size, amp, z, x) -> jax.Array:
    """The generator of `stage` alone on image `x` resized to hw, with noise z (the
    step of super-resolution). Needs a family with per-stage generators."""
    sizes = [hw] * (stage + 1)
    vs = [None] * stage + [variables]
    amps = [0.0] * stage + [amp]
    noises = [None] * stage + [z]
    out, _ = pyramid_forward(spec, vs, sizes, amps, noises, x, stage, stage + 1)
    return out
