"""Per-stage train state pytree, its initialisation and the warm start."""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class StageState:
    """Everything that changes while one stage trains."""

    step: jax.Array  # optimiser updates done in this stage
    g_vars: Any  # {'params': ..., 'batch_stats': ...} of the stage's generator
    d_vars: Any  # the same for the critic
    g_opt: Any
    d_opt: Any
    key: jax.Array  # typed PRNG key
    # The generator input of the last critic update, which the generator updates
    # reuse under SinGAN's rule (train/updates.py); None under the other rules.
    carry: Any = None
    # Samples of the frozen stages below, drawn for this compiled call's updates
    # by their own programs (train/lower.py); None: each update draws its own.
    lower: Any = None


@flax.struct.dataclass
class StageData:
    """Constants of one stage (not donated; identical across its compiled calls)."""

    real: jax.Array  # (h, w, 3) real image at this stage
    amps: jax.Array  # (s+1,) noise amplitudes of stages 0..s (this stage's last)
    rec_inputs: Any  # the generator's reconstruction input (family-defined pytree)
    lower_vars: Any  # tuple of the frozen stages' generator variables, stages < s
    source: jax.Array  # (h0, w0, 3) the coarsest real image (ConSinGAN's augment)


def abstract(tree):
    """ShapeDtypeStructs of every leaf of a tree (None stays None)."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(jnp.shape(x), x.dtype), tree)


def same_shapes(a: Any, b: Any) -> bool:
    """True when two pytrees have the same structure and leaf shapes."""
    if jax.tree.structure(a) != jax.tree.structure(b):
        return False
    return all(
        jnp.shape(x) == jnp.shape(y)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def warm_start(new_vars: dict, old_vars: dict | None) -> dict:
    """Copies every top-level submodule (per collection) whose shapes match.

    A new stage starts from the previous stage's weights where the architecture is
    unchanged (SinGAN copies G and D when the width stays the same); AGAN's first
    attention stage takes G_A from the SinGAN stage 0 and initialises G_B afresh.
    """
    if old_vars is None:
        return new_vars
    out = {}
    for col, mods in new_vars.items():
        old_col = old_vars.get(col, {})
        out[col] = {
            name: (
                old_col[name]
                if name in old_col and same_shapes(sub, old_col[name])
                else sub
            )
            for name, sub in mods.items()
        }
    return out


def adam(
    lr: float, beta1: float, beta2: float, boundary: float, gamma: float, eps=1e-8
):
    """Adam with a step decay of the learning rate by `gamma` after `boundary` updates."""
    schedule = optax.piecewise_constant_schedule(lr, {int(boundary): gamma})
    return optax.adam(schedule, b1=beta1, b2=beta2, eps=eps)
