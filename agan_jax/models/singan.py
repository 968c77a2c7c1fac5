"""SinGAN generator (image-space residual) and the patch discriminator."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from agan_jax.models.layers import ConvStack, pad_hw


class SinGANGenerator(nn.Module):
    """tanh(stack(pad(prev + noise_amp * z))) + prev.

    Inputs are NHWC. Returns (image, None): the second slot holds an attention
    map for generators that have one.
    """

    features: int
    num_layers: int = 5
    kernel: int = 3
    batch_norm: bool = True

    @nn.compact
    def __call__(self, prev, z, noise_amp, train: bool = False):
        pad = self.num_layers * (self.kernel // 2)
        x = pad_hw(prev + noise_amp * z, pad)
        # Named G_A so that AGAN's first attention stage can warm-start from it.
        stack = ConvStack(
            self.features, 3, self.num_layers, self.kernel, self.batch_norm, name="G_A"
        )
        return jnp.tanh(stack(x, train)) + prev, None


class Discriminator(nn.Module):
    """Markovian (patch) critic: the same conv stack ending in one channel."""

    features: int
    num_layers: int = 5
    kernel: int = 3
    batch_norm: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        stack = ConvStack(
            self.features, 1, self.num_layers, self.kernel, self.batch_norm, name="D"
        )
        return stack(x, train)


def stage_width(stage: int, nfc: int, growth: int, max_nfc: int) -> int:
    """SinGAN widths: nfc * 2 ** (stage // growth), at most max_nfc."""
    return min(nfc * 2 ** (stage // growth), max_nfc)
