"""Training augmentations of ConSinGAN's harmonization and editing modes.

The head of a harmonization/editing ConSinGAN is trained on random transforms of
the coarsest real image (colour, additive noise, cut-outs; shuffled tiles for
editing), with the probabilities and strengths of `settings.AugmentSettings`.
"""

from __future__ import annotations

import dm_pix
import jax
import jax.numpy as jnp

from agan_jax.settings import AugmentSettings


def colour_transform(key: jax.Array, x: jax.Array) -> jax.Array:
    """Random contrast, brightness, saturation and per-channel gains; in [-1, 1].

    dm-pix's adjustments on the image mapped to [0, 1]: contrast x U(0.7, 1.3)
    about each channel's mean, brightness + U(-0.1, 0.1) (+-0.2 in [-1, 1]),
    saturation (HSV S) x U(0.5, 1.5); then each channel x U(0.85, 1.15).
    """
    kc, kb, ks, kg = jax.random.split(key, 4)
    contrast = jax.random.uniform(kc, (), minval=0.7, maxval=1.3)
    brightness = jax.random.uniform(kb, (), minval=-0.2, maxval=0.2)
    saturation = jax.random.uniform(ks, (), minval=0.5, maxval=1.5)
    gains = jax.random.uniform(kg, (3,), minval=0.85, maxval=1.15)
    u = (x + 1.0) * 0.5
    u = dm_pix.adjust_contrast(u, contrast)
    u = dm_pix.adjust_brightness(u, brightness * 0.5)
    # HSV needs [0, 1]: clip first (the result is clipped to that range anyway).
    u = dm_pix.adjust_saturation(jnp.clip(u, 0.0, 1.0), saturation)
    return jnp.clip(u * gains * 2.0 - 1.0, -1.0, 1.0)


def additive_noise(key: jax.Array, x: jax.Array, max_std: float) -> jax.Array:
    """x + N(0, std^2), std ~ U(0, max_std), clipped to [-1, 1]."""
    ks, kn = jax.random.split(key)
    std = jax.random.uniform(ks, (), maxval=max_std)
    return jnp.clip(x + std * jax.random.normal(kn, x.shape), -1.0, 1.0)


def cutout(key: jax.Array, x: jax.Array, max_frac: float) -> jax.Array:
    """One rectangle (sides 10%..max_frac of the image's) filled with a random colour."""
    h, w = x.shape[:2]
    kh, kw, ky, kx, kc = jax.random.split(key, 5)
    lo = min(0.1, max_frac)
    rh = jnp.ceil(h * jax.random.uniform(kh, (), minval=lo, maxval=max_frac))
    rw = jnp.ceil(w * jax.random.uniform(kw, (), minval=lo, maxval=max_frac))
    y0 = jnp.floor(jax.random.uniform(ky, ()) * (h - rh + 1))
    x0 = jnp.floor(jax.random.uniform(kx, ()) * (w - rw + 1))
    yy = jnp.arange(h)[:, None, None]
    xx = jnp.arange(w)[None, :, None]
    inside = (yy >= y0) & (yy < y0 + rh) & (xx >= x0) & (xx < x0 + rw)
    colour = jax.random.uniform(kc, (3,), minval=-1.0, maxval=1.0)
    return jnp.where(inside, colour, x)


def shuffle_tiles(key: jax.Array, x: jax.Array, n: int) -> jax.Array:
    """Cuts the image into an n x n grid of tiles and permutes them.

    Tiles are (h // n) x (w // n); the remainder rows and columns stay in place.
    """
    h, w, c = x.shape
    th, tw = h // n, w // n
    if th == 0 or tw == 0 or n == 1:
        return x
    core = x[: n * th, : n * tw]
    tiles = core.reshape(n, th, n, tw, c).transpose(0, 2, 1, 3, 4)
    tiles = tiles.reshape(n * n, th, tw, c)[jax.random.permutation(key, n * n)]
    core = tiles.reshape(n, n, th, tw, c).transpose(0, 2, 1, 3, 4)
    return x.at[: n * th, : n * tw].set(core.reshape(n * th, n * tw, c))


def augment(key: jax.Array, x: jax.Array, mode: str, a: AugmentSettings) -> jax.Array:
    """A random training input for harmonization / editing from image x (HWC).

    Each transform applies with its probability: colour, additive noise, cut-out;
    editing also shuffles tiles. Shape and the [-1, 1] range are kept.
    """
    keys = jax.random.split(key, 8)
    u = jax.random.uniform(keys[0], (4,))
    if mode == "editing":
        x = jnp.where(u[3] < a.p_tiles, shuffle_tiles(keys[4], x, a.tiles), x)
    x = jnp.where(u[0] < a.p_colour, colour_transform(keys[1], x), x)
    x = jnp.where(u[1] < a.p_noise, additive_noise(keys[2], x, a.noise_std), x)
    x = jnp.where(u[2] < a.p_cutout, cutout(keys[3], x, a.cutout_max), x)
    return jnp.clip(x, -1.0, 1.0)
