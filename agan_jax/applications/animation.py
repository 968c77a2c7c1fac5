"""Animation: SinGAN's second-order random walk of the noise around the
reconstruction noise, every frame through the pyramid in one vmap."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from agan_jax import forward
from agan_jax.applications import common
from agan_jax.applications.common import RunLike
from agan_jax.errors import UserError


def noise_walk(
    spec,
    key: jax.Array,
    z_star: jax.Array,
    frames: int,
    alpha: float,
    beta: float,
    stage: int,
) -> jax.Array:
    """A second-order random walk around z* (SinGAN's animation), (frames, *z*.shape).

    z_0 = z_{-1} = z*; for t >= 1, with eps_t fresh noise of the run's family
    (`forward.draw_noise_like`, key fold_in(key, t)):
      d_t = beta * (z_{t-1} - z_{t-2}) + (1 - beta) * eps_t
      z_t = alpha * z* + (1 - alpha) * (z_{t-1} + d_t)
    beta keeps the velocity (smooth motion), alpha pulls back to z*.
    """
    ts = jnp.arange(1, frames)
    eps = jax.vmap(
        lambda t: forward.draw_noise_like(
            spec, jax.random.fold_in(key, t), z_star, stage
        )
    )(ts)

    def step(carry, e):
        z1, z2 = carry
        d = beta * (z1 - z2) + (1.0 - beta) * e
        z = alpha * z_star + (1.0 - alpha) * (z1 + d)
        return (z, z1), z

    _, zs = jax.lax.scan(step, (z_star, z_star), eps)
    return jnp.concatenate([z_star[None], zs])


def animate(
    run: RunLike,
    key: jax.Array,
    frames: int = 100,
    alpha: float = 0.1,
    beta: float = 0.9,
    start_stage: int = 0,
) -> np.ndarray:
    """Animation frames (frames, h, w, 3) from `noise_walk` at every stage.

    Stages below `start_stage` keep the reconstruction noise (z_rec at stage 0,
    the family's reconstruction noise above); stage s >= start_stage walks around
    it with key fold_in(key, s). Frame 0 is the reconstruction exactly (up to float
    rounding). All frames go through the pyramid in one vmap.
    """
    sampler = common.sampler_of(run)
    run = sampler.run
    common.check_complete(run)
    if not 0 <= start_stage < run.num_stages:
        raise UserError(
            f"start_stage={start_stage} is outside [0, {run.num_stages - 1}]; stages "
            "from start_stage on move, pick one in that range (0: everything moves)"
        )
    if not isinstance(frames, int | np.integer) or frames < 1:
        raise UserError(f"--frames must be a positive integer, got {frames!r}")
    if not (0.0 <= alpha <= 1.0 and 0.0 <= beta <= 1.0):
        raise UserError(
            f"alpha and beta must lie in [0, 1], got alpha={alpha}, beta={beta}; "
            "SinGAN uses alpha=0.1, beta in 0.8..0.95"
        )
    sizes, stop, spec = list(run.sizes), run.num_stages, run.spec
    n = int(frames)

    def make():
        def fn(key, variables, amps, z_rec, alpha, beta):
            stars = forward.rec_noises(spec, z_rec, sizes, stop, variables)
            walks = [
                noise_walk(
                    spec, jax.random.fold_in(key, s), stars[s], n, alpha, beta, s
                )
                if s >= start_stage
                else jnp.broadcast_to(stars[s], (n, *stars[s].shape))
                for s in range(stop)
            ]

            def one(noises):
                out, _ = forward.pyramid_forward(
                    spec, variables, sizes, amps, noises, None, 0, stop
                )
                return out

            return jax.vmap(one)(walks)

        return fn

    fn = sampler.compiled(common.cache_key("animate", n, start_stage), make)
    out = fn(
        key,
        run.g_vars,
        jnp.asarray(run.noise_amps),
        jnp.asarray(run.z_rec),
        jnp.float32(alpha),
        jnp.float32(beta),
    )
    return np.asarray(out)
