"""AGAN: SinGAN's stage 0, then residual pixel attention generators (AGAN eq. 12).

The family record is SinGAN's (models/singan.py) with this generator above stage
0; the non-linear pyramid (cos/quad/circ) and the TV loss come from the config.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import linen as nn

from agan_jax.models import singan
from agan_jax.models.layers import ConvStack, pad_hw

# AGAN(k) by pyramid schedule (AGAN eqs. 2-4).
SCHEDULE_NAMES = {"cos": "AGAN(1)", "quad": "AGAN(2)", "circ": "AGAN(3)"}


def attention_blend(x_hat, c, prev):
    """AGAN eq. 12: x' = x_hat * C + x * (1 - C)."""
    return x_hat * c + prev * (1.0 - c)


class AGANGenerator(nn.Module):
    """G_A(prev + noise_amp * z) -> tanh -> x_hat; G_B(prev) -> sigmoid -> C.

    Returns (x_hat * C + prev * (1 - C), C), NHWC.
    """

    features: int
    num_layers: int = 5
    kernel: int = 3
    batch_norm: bool = True

    @nn.compact
    def __call__(self, prev, z, noise_amp, train: bool = False):
        pad = self.num_layers * (self.kernel // 2)
        args = (self.features, 3, self.num_layers, self.kernel, self.batch_norm)
        x_hat = jnp.tanh(
            ConvStack(*args, name="G_A")(pad_hw(prev + noise_amp * z, pad), train)
        )
        c = nn.sigmoid(ConvStack(*args, name="G_B")(pad_hw(prev, pad), train))
        return attention_blend(x_hat, c, prev), c


def make_generator(spec, stage: int) -> nn.Module:
    """SinGAN's generator at stage 0, an attention generator above."""
    if stage == 0:
        return singan.make_generator(spec, stage)
    return AGANGenerator(
        spec.width(stage), spec.num_layers, spec.kernel, spec.batch_norm
    )


FAMILY = singan.family(
    "agan",
    make_generator,
    lambda schedule: SCHEDULE_NAMES.get(schedule, f"AGAN({schedule})"),
    attention=True,
)
