"""WGAN critic loss, per-pixel gradient penalty, reconstruction and TV losses.

All functions are pure and work on single HWC images (float32, [-1, 1]).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

Critic = Callable[[jax.Array], jax.Array]


def critic_wgan(d_real: jax.Array, d_fake: jax.Array) -> jax.Array:
    """WGAN critic loss without the penalty: mean(D(fake)) - mean(D(real))."""
    return jnp.mean(d_fake) - jnp.mean(d_real)


def generator_adv(d_fake: jax.Array) -> jax.Array:
    """Generator adversarial loss: -mean(D(fake))."""
    return -jnp.mean(d_fake)


def reconstruction(rec: jax.Array, real: jax.Array) -> jax.Array:
    """Mean squared error between the reconstruction and the real image."""
    return jnp.mean((rec - real) ** 2)


TV_REDUCTIONS = ("mean", "sum", "pytorch")


def total_variation(x: jax.Array, reduction: str = "mean") -> jax.Array:
    """AGAN eq. 13: squared differences of adjacent pixels of an HWC image.

    The horizontal (H x (W-1) x C terms) and vertical ((H-1) x W x C terms)
    squared differences are each averaged and the two means added ('mean', our
    default, independent of the image size), or all summed ('sum', the paper's
    equation), or reduced as the TVLoss of most PyTorch code ('pytorch'):
    2 x (sum_v / count_v + sum_h / count_h) / batch, with count_v = C (H-1) W,
    count_h = C H (W-1) and a batch of one image, i.e. 2 x 'mean'.
    """
    dh = x[:, 1:, :] - x[:, :-1, :]
    dv = x[1:, :, :] - x[:-1, :, :]
    if reduction == "sum":
        return jnp.sum(dh**2) + jnp.sum(dv**2)
    if reduction not in TV_REDUCTIONS:
        raise ValueError(
            f"TV reduction must be one of {', '.join(TV_REDUCTIONS)}, got {reduction!r}"
        )
    mean = jnp.mean(dh**2) + jnp.mean(dv**2)
    return 2.0 * mean if reduction == "pytorch" else mean


def interpolate(real: jax.Array, fake: jax.Array, a: jax.Array) -> jax.Array:
    """The gradient penalty's sample point a * real + (1 - a) * fake."""
    return a * real + (1.0 - a) * fake


def _penalty_from_grad(g: jax.Array) -> jax.Array:
    # The 1e-12 keeps the derivative finite where a pixel's gradient is zero.
    norms = jnp.sqrt(jnp.sum(g**2, axis=-1) + 1e-12)
    return jnp.mean((norms - 1.0) ** 2)


def gradient_penalty(critic: Critic, x: jax.Array) -> jax.Array:
    """Per-pixel gradient penalty at x.

    GP = mean over pixels of (||d sum(D(x)) / dx||_2 over channels - 1) ** 2.
    Differentiating this value with respect to the critic's parameters takes a
    gradient of a gradient; `penalty_surrogate` gives the same parameter gradient
    at a lower cost.
    """
    g = jax.grad(lambda y: jnp.sum(critic(y)))(x)
    return _penalty_from_grad(g)


def penalty_surrogate(critic: Critic, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """A surrogate with the gradient penalty's parameter gradient, and the penalty.

    With g = d sum(D(x)) / dx and v = dGP/dg held constant, the gradient of
    sum(jvp(D, x, v)) = <v, g> with respect to the critic's parameters equals the
    gradient of GP. It needs one forward-mode pass inside a reverse pass instead of
    a reverse pass inside a reverse pass.

    Returns:
      (surrogate, penalty): differentiate `surrogate`; report `penalty`.
    """
    g = jax.lax.stop_gradient(jax.grad(lambda y: jnp.sum(critic(y)))(x))
    penalty = _penalty_from_grad(g)
    v = jax.lax.stop_gradient(jax.grad(_penalty_from_grad)(g))
    _, tangent = jax.jvp(critic, (jax.lax.stop_gradient(x),), (v,))
    return jnp.sum(tangent), penalty
