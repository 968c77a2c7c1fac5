"""Building blocks shared by every model family."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

conv_init = nn.initializers.normal(stddev=0.02)


def bn_scale_init(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
    """BatchNorm scale ~ N(1, 0.02)."""
    return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


class ConvBlock(nn.Module):
    """3x3 conv (valid padding) -> BatchNorm (optional) -> LeakyReLU."""

    features: int
    kernel: int = 3
    batch_norm: bool = True
    negative_slope: float = 0.2

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = nn.Conv(
            self.features,
            (self.kernel, self.kernel),
            padding="VALID",
            kernel_init=conv_init,
        )(x)
        if self.batch_norm:
            # Batch statistics of the one image while its stage trains; running
            # statistics (PyTorch momentum 0.1) for frozen stages and inference.
            x = nn.BatchNorm(
                use_running_average=not train,
                momentum=0.9,
                epsilon=1e-5,
                scale_init=bn_scale_init,
            )(x)
        return nn.leaky_relu(x, self.negative_slope)


class ConvStack(nn.Module):
    """`num_layers` convolutions: num_layers-1 ConvBlocks and a plain conv tail."""

    features: int
    out_features: int
    num_layers: int = 5
    kernel: int = 3
    batch_norm: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        for _ in range(self.num_layers - 1):
            x = ConvBlock(self.features, self.kernel, self.batch_norm)(x, train)
        return nn.Conv(
            self.out_features,
            (self.kernel, self.kernel),
            padding="VALID",
            kernel_init=conv_init,
        )(x)


def pad_hw(x: jax.Array, pad: int) -> jax.Array:
    """Zero-pad the two spatial axes of an NHWC array by `pad` on every side."""
    return jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))


class StageStack(nn.Module):
    """Base of the per-stage networks of SinGAN and AGAN: width, depth, kernel and
    BatchNorm of their conv stacks, and `stack(out, name)` to build one."""

    features: int
    num_layers: int = 5
    kernel: int = 3
    batch_norm: bool = True

    @property
    def pad(self) -> int:
        """Zero padding the valid convolutions of one stack consume per side."""
        return self.num_layers * (self.kernel // 2)

    def stack(self, out_features: int, name: str) -> ConvStack:
        """A ConvStack of this width and depth ending in `out_features` channels."""
        return ConvStack(
            self.features,
            out_features,
            self.num_layers,
            self.kernel,
            self.batch_norm,
            name=name,
        )
