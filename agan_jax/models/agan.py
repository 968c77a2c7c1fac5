"""AGAN: SinGAN's stage 0, then residual pixel attention generators (AGAN eq. 12).

The family record is SinGAN's (models/singan.py) with this generator above stage
0; the non-linear pyramid (cos/quad/circ) and the TV loss come from the config.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import linen as nn

from agan_jax.models import singan
from agan_jax.models.layers import StageStack, pad_hw
from agan_jax.settings import BLENDS

# AGAN(k) by pyramid schedule (AGAN eqs. 2-4).
SCHEDULE_NAMES = {"cos": "AGAN(1)", "quad": "AGAN(2)", "circ": "AGAN(3)"}
# The `intermediates` entry of G_A's proposal x_hat.
PROPOSAL = "x_hat"


def attention_blend(x_hat, c, prev):
    """AGAN eq. 12: x' = x_hat * C + x * (1 - C)."""
    return x_hat * c + prev * (1.0 - c)


class AGANGenerator(StageStack):
    """G_A(prev + noise_amp * z) -> tanh -> x_hat; G_B(prev) -> sigmoid -> C.

    Returns (x_hat * C + prev * (1 - C), C), NHWC. G_A's proposal x_hat is sown
    into the `intermediates` collection (kept only when a caller makes that
    collection mutable, as the per-stage diagnostics do).

    blend="convex" is the paper's eq. 10 (x_hat = tanh(G_A(...))); "residual", an
    ablation that is not the paper's, proposes x_hat = prev + tanh(G_A(...)) as
    SinGAN's generator does, so the blend is x' = prev + C * tanh(G_A(...)).
    """

    blend: str = "convex"

    @nn.compact
    def __call__(self, prev, z, noise_amp, train: bool = False):
        g_a, g_b = self.stack(3, "G_A"), self.stack(3, "G_B")
        x_hat = jnp.tanh(g_a(pad_hw(prev + noise_amp * z, self.pad), train))
        if self.blend not in BLENDS:
            raise ValueError(f"blend must be one of {BLENDS}, got {self.blend!r}")
        if self.blend == "residual":
            x_hat = prev + x_hat
        c = nn.sigmoid(g_b(pad_hw(prev, self.pad), train))
        self.sow("intermediates", PROPOSAL, x_hat)
        return attention_blend(x_hat, c, prev), c


def make_generator(spec, stage: int) -> nn.Module:
    """SinGAN's generator at stage 0, an attention generator above."""
    if stage == 0:
        return singan.make_generator(spec, stage)
    return AGANGenerator(
        spec.width(stage), spec.num_layers, spec.kernel, spec.batch_norm, spec.blend
    )


FAMILY = singan.family(
    "agan",
    make_generator,
    lambda schedule: SCHEDULE_NAMES.get(schedule, f"AGAN({schedule})"),
    attention=True,
)
