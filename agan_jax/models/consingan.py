"""ConSinGAN: one growing generator with feature-space residuals, and its critic.

The generator of stage s is a single linen module whose parameters are
`head`, `block_0` .. `block_s` and `tail`:

  stage 0:  f_0 = block_0(edge(head(pad(z_0 * amp_0))))
  stage i:  f_i = block_i(edge(up(f_{i-1}) + amp_i * z_i)) + up(f_{i-1})
  image:    tanh(tail(pad(f_s)))

`head` is one ConvBlock (3 -> features), each block three ConvBlocks with valid
3x3 convolutions (LeakyReLU 0.05, BatchNorm optional), `tail` one conv to RGB.
`up` is bicubic resizing of the 64-channel features to the next stage's size.
`edge` restores the border the valid convolutions consume:
  - generation / animation: the features are upsampled to the size plus that
    border instead of zero-padded (more diversity at the image edges), and the
    feature noise z_i (i > 0) already has the bordered size;
  - retarget / harmonization / editing: zero padding, noise at the stage's size.
z_0 is a 3-channel map at the coarsest size: noise for samples, the real
coarsest image (or a fixed noise in animation mode) for the reconstruction, an
augmented or injected image in harmonization / editing.

The critic is five convolutions (head, three blocks, tail to one channel), 64
features, no BatchNorm; a new stage starts from the previous stage's critic.

`forward` is the pyramid forward pass `sampling.pyramid_forward` dispatches to for
ConSinGAN runs. The fixed reconstruction noise of stages > 0 is not stored: it is
drawn from a key kept in the generator's variables (`variables['consts']`), so it
can be redrawn at any size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from agan_jax import pyramid
from agan_jax.errors import UserError
from agan_jax.models.layers import ConvBlock, conv_init, pad_hw

MODES = ("generation", "retarget", "animation", "harmonization", "editing")
# Modes whose features are upsampled into the border instead of zero-padded.
EDGE_MODES = ("generation", "animation")
# Modes that train the head on augmented images (SPEC 5, ConSinGAN section 3.3).
AUGMENT_MODES = ("harmonization", "editing")
CONSTS = "consts"  # variable collection holding the reconstruction-noise key


class Block(nn.Module):
    """`layers` ConvBlocks (valid convolutions) with `features` channels."""

    features: int
    layers: int = 3
    kernel: int = 3
    batch_norm: bool = False
    negative_slope: float = 0.05

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        for _ in range(self.layers):
            x = ConvBlock(
                self.features, self.kernel, self.batch_norm, self.negative_slope
            )(x, train)
        return x


class ConSinGANGenerator(nn.Module):
    """The generator with `num_blocks` stages (see the module docstring).

    Call with `zs` (one NHWC map per stage: 3 channels at stage 0, `features`
    channels above) and `amps` (one amplitude per stage); returns (image, None).
    With `train`, BatchNorm uses batch statistics in the blocks that train at this
    stage (the newest `train_depth`, the head while block 0 trains) and running
    statistics in the frozen ones.
    """

    num_blocks: int
    features: int = 64
    layers: int = 3
    kernel: int = 3
    batch_norm: bool = False
    negative_slope: float = 0.05
    edge_upsample: bool = True
    train_depth: int = 3

    @nn.compact
    def __call__(self, zs: Sequence[jax.Array], amps, train: bool = False):
        if len(zs) != self.num_blocks:
            raise ValueError(f"expected {self.num_blocks} noise maps, got {len(zs)}")
        k = self.kernel // 2
        p = self.layers * k
        args = (self.features, self.layers, self.kernel, self.batch_norm)
        slope = self.negative_slope
        last = self.num_blocks - 1

        def trains(i: int) -> bool:
            return train and last - i < self.train_depth

        z0 = zs[0]
        x = ConvBlock(self.features, self.kernel, self.batch_norm, slope, name="head")(
            pad_hw(z0 * amps[0], k), trains(0)
        )
        h, w = z0.shape[1:3]
        if self.edge_upsample:
            x = pad_hw(pyramid.resize(x, (h + 2 * k, w + 2 * k)), p - k)
        else:
            x = pad_hw(x, p)
        x = Block(*args, slope, name="block_0")(x, trains(0))
        for i in range(1, self.num_blocks):
            z = zs[i]
            if self.edge_upsample:
                h, w = z.shape[1] - 2 * p, z.shape[2] - 2 * p
                up = pyramid.resize(x, (h, w))
                inp = pyramid.resize(x, (h + 2 * p, w + 2 * p)) + amps[i] * z
            else:
                h, w = z.shape[1:3]
                up = pyramid.resize(x, (h, w))
                inp = pad_hw(up + amps[i] * z, p)
            x = Block(*args, slope, name=f"block_{i}")(inp, trains(i)) + up
        out = nn.Conv(
            3,
            (self.kernel, self.kernel),
            padding="VALID",
            kernel_init=conv_init,
            name="tail",
        )(pad_hw(x, k))
        return jnp.tanh(out), None


class ConSinGANDiscriminator(nn.Module):
    """Patch critic: head ConvBlock, `layers` ConvBlocks, a conv to one channel."""

    features: int = 64
    layers: int = 3
    kernel: int = 3
    negative_slope: float = 0.05

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        del train  # no BatchNorm in the critic
        c, kk, slope = self.features, self.kernel, self.negative_slope
        x = ConvBlock(c, kk, False, slope, name="head")(x)
        x = Block(c, self.layers, kk, False, slope, name="body")(x)
        return nn.Conv(
            1, (kk, kk), padding="VALID", kernel_init=conv_init, name="tail"
        )(x)


def make_generator(spec, stage: int) -> ConSinGANGenerator:
    """The generator of stage `stage` (blocks 0..stage) for a ModelSpec."""
    return ConSinGANGenerator(
        num_blocks=stage + 1,
        features=spec.nfc,
        layers=spec.num_layers,
        kernel=spec.kernel,
        batch_norm=spec.batch_norm,
        negative_slope=spec.leaky_slope,
        edge_upsample=spec.mode in EDGE_MODES,
        train_depth=spec.train_depth,
    )


def make_discriminator(spec) -> ConSinGANDiscriminator:
    """The critic (the same architecture at every stage)."""
    return ConSinGANDiscriminator(
        spec.nfc, spec.num_layers, spec.kernel, spec.leaky_slope
    )


# -- noise ------------------------------------------------------------------------


def noise_shape(spec, hw: tuple[int, int], stage: int) -> tuple[int, int, int]:
    """HWC shape of the noise map of `stage` for a stage of size hw."""
    h, w = int(hw[0]), int(hw[1])
    if stage == 0:
        return (h, w, 3)
    p = spec.pad if spec.mode in EDGE_MODES else 0
    return (h + 2 * p, w + 2 * p, spec.nfc)


def draw_noise(spec, key: jax.Array, hw: tuple[int, int], stage: int) -> jax.Array:
    """Standard normal noise of `noise_shape` (3 independent channels at stage 0)."""
    return jax.random.normal(key, noise_shape(spec, hw, stage))


def rec_noise(spec, variables, hw: tuple[int, int], stage: int) -> jax.Array:
    """The fixed reconstruction noise of stage > 0, drawn from the stored key."""
    key = jax.random.wrap_key_data(variables[CONSTS]["rec_key"])
    return draw_noise(spec, jax.random.fold_in(key, stage), hw, stage)


def module_vars(variables: dict) -> dict:
    """The generator's variables without the `consts` collection."""
    return {k: v for k, v in variables.items() if k != CONSTS}


def check_noise(spec, z: jax.Array, hw, stage: int) -> None:
    """UserError unless z has the shape ConSinGAN expects at this stage."""
    want = noise_shape(spec, hw, stage)
    if tuple(z.shape) != want:
        raise UserError(
            f"ConSinGAN noise of stage {stage} must have shape {want} for a "
            f"{hw[0]}x{hw[1]} stage, got {tuple(z.shape)}; draw it with "
            "sampling.draw_noise(key, hw, stage, spec=run.spec) (ConSinGAN noise "
            f"has {spec.nfc} feature channels above stage 0)"
        )


def forward(
    spec,
    variables: Sequence[Any],
    sizes: Sequence[tuple[int, int]],
    amps,
    noises: Sequence[jax.Array | None],
    x: jax.Array | None,
    start: int,
    stop: int,
) -> tuple[jax.Array, list]:
    """`sampling.pyramid_forward` for ConSinGAN: the generator of stage stop-1.

    Only `variables[stop - 1]` is used (it holds every block up to stop-1). With
    start == 0, noises[0] is the 3-channel stage-0 input. With start > 0, the image
    `x` (the output of stage start-1, any size) is resized to the coarsest size and
    enters the head, and stages 1..start-1 use their fixed reconstruction noise: a
    ConSinGAN pyramid carries features, not images, between stages, and its head is
    trained to map a coarse image (the real one, for the reconstruction) to them.
    A None noise at a stage > 0 also means its reconstruction noise.

    Returns:
      (HWC image at the size of stage stop-1, [] (no attention maps)).
    """
    vs = variables[stop - 1]
    zs = []
    for s in range(stop):
        if s == 0 and start > 0:
            if x is None:
                raise UserError("an image must be given to start at a stage > 0")
            z = pyramid.resize(x, sizes[0])
        elif s == 0:
            z = noises[0]
            if z is None:
                raise UserError(
                    "ConSinGAN stage 0 needs an input map (noise, or the run's "
                    "z_rec for the reconstruction)"
                )
        elif s < start or noises[s] is None:
            z = rec_noise(spec, vs, sizes[s], s)
        else:
            z = noises[s]
        check_noise(spec, z, sizes[s], s)
        zs.append(z[None])
    gen = make_generator(spec, stop - 1)
    out, _ = gen.apply(module_vars(vs), zs, [amps[s] for s in range(stop)])
    return out[0], []
