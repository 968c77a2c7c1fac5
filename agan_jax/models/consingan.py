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

Training (the family record `FAMILY` and `make_stage`): stage s trains the
generator with blocks 0..s against a critic copied from stage s-1; block s starts
as a copy of block s-1 (`grow`). The newest `train_depth` blocks train
concurrently, block s-k at learning rate lr_g * lr_scale**k; the head trains with
block 0 (while s < train_depth), the tail at lr_g always; older blocks are frozen
(one `optax.multi_transform` over parameter labels, `param_labels`). The
generator loss adds alpha x MSE of the reconstruction: the real coarsest image
(animation mode: a fixed noise map) enters the head and every stage above adds
its fixed reconstruction noise. Noise amplitude of stage s > 0: noise_amp_base x
RMSE between the real image and the reconstruction of the stage-s generator
(block s freshly copied, its own amplitude 0).

Modes (`model.mode`): generation (default; features upsampled into the border for
diverse edges), retarget (zero padding: better for other sizes), animation (as
generation, stage-0 reconstruction from noise, so walks around it are smooth),
harmonization and editing (zero padding; the head is trained on augmented copies
of the coarsest image instead of noise, agan_jax/augment.py).

`forward` is this family's pyramid forward pass. The fixed reconstruction noise
of stages > 0 is not stored: it is drawn from a key kept in the generator's
variables (`variables['consts']`), so it can be redrawn at any size.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn

from agan_jax import augment as aug_ops
from agan_jax import pyramid
from agan_jax.errors import UserError
from agan_jax.models.family import Family, StageModel, rbg_key
from agan_jax.models.layers import ConvBlock, conv_init, pad_hw
from agan_jax.state import adam

MODES = ("generation", "retarget", "animation", "harmonization", "editing")
# Modes whose features are upsampled into the border instead of zero-padded.
EDGE_MODES = ("generation", "animation")
# Modes that train the head on augmented images (ConSinGAN paper, section 3.3).
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
    BatchNorm (harmonization/editing modes) always uses the batch statistics of
    the image it normalises, in trained and frozen blocks, in training and in
    sampling, as official ConSinGAN (which never enters eval mode) does; apply
    with `mutable=["batch_stats"]` (the running averages it keeps are unused). A
    sample is still the same alone or in a vmap'd batch: each is its own batch.
    """

    num_blocks: int
    features: int = 64
    layers: int = 3
    kernel: int = 3
    batch_norm: bool = False
    negative_slope: float = 0.05
    edge_upsample: bool = True

    @nn.compact
    def __call__(self, zs: Sequence[jax.Array], amps, train: bool = False):
        del train  # BatchNorm uses batch statistics either way (see above)
        if len(zs) != self.num_blocks:
            raise ValueError(f"expected {self.num_blocks} noise maps, got {len(zs)}")
        k = self.kernel // 2
        p = self.layers * k
        args = (self.features, self.layers, self.kernel, self.batch_norm)
        slope = self.negative_slope
        batch_stats = True  # in every block (see the class docstring)
        z0 = zs[0]
        x = ConvBlock(self.features, self.kernel, self.batch_norm, slope, name="head")(
            pad_hw(z0 * amps[0], k), batch_stats
        )
        h, w = z0.shape[1:3]
        if self.edge_upsample:
            x = pad_hw(pyramid.resize(x, (h + 2 * k, w + 2 * k)), p - k)
        else:
            x = pad_hw(x, p)
        x = Block(*args, slope, name="block_0")(x, batch_stats)
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
            x = Block(*args, slope, name=f"block_{i}")(inp, batch_stats) + up
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
    )


def make_discriminator(spec, stage: int = 0) -> ConSinGANDiscriminator:
    """The critic (the same architecture at every stage)."""
    del stage
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


def draw_noise_like(spec, key: jax.Array, z: jax.Array, stage: int) -> jax.Array:
    """Fresh noise of z's shape."""
    del spec, stage
    return jax.random.normal(key, z.shape)


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
            "forward.draw_noise(run.spec, key, hw, stage) (ConSinGAN noise "
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
    """The pyramid forward pass of ConSinGAN: the generator of stage stop-1.

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
    (out, _), _ = gen.apply(
        module_vars(vs), zs, [amps[s] for s in range(stop)], mutable=["batch_stats"]
    )
    return out[0], []


def rec_noises(spec, z_rec, sizes, stop: int, variables=None) -> list:
    """z_rec at stage 0, then the fixed noise maps drawn from the key stored in
    `variables[stop - 1]`; None above stage 0 without `variables` (the forward
    pass draws them)."""
    if variables is None:
        return [z_rec] + [None] * (stop - 1)
    vs = variables[stop - 1]
    return [z_rec] + [rec_noise(spec, vs, sizes[s], s) for s in range(1, stop)]


def stage0_rec(spec, seed: int, sizes, g_vars, real0) -> jax.Array:
    """What the head reconstructs from: the real coarsest image, or (animation) a
    fixed noise map drawn from the stored reconstruction key."""
    del seed
    if spec.mode == "animation":
        return rec_noise(spec, g_vars, real0.shape[:2], 0)
    return real0


# -- learning rates per parameter group -------------------------------------------

FROZEN = "frozen"


def param_group(name: str, stage: int, train_depth: int) -> int | None:
    """k of a top-level generator entry at `stage` (lr = lr_g * lr_scale**k).

    block_i: k = stage - i while k < train_depth; the head goes with block 0
    (k = stage, while stage < train_depth); the tail: k = 0. None = frozen.
    """
    if name == "tail":
        return 0
    if name == "head":
        k = stage
    elif name.startswith("block_"):
        k = stage - int(name[len("block_") :])
    else:
        raise ValueError(f"unknown ConSinGAN parameter group {name!r}")
    return k if 0 <= k < train_depth else None


def group_label(k: int | None) -> str:
    """The optax label of a group: 'k0', 'k1', ... or 'frozen'."""
    return FROZEN if k is None else f"k{k}"


def param_labels(params: dict, stage: int, train_depth: int) -> dict:
    """The multi_transform labels: every leaf labelled by its top-level group."""
    out = {}
    for name, sub in params.items():
        label = group_label(param_group(name, stage, train_depth))
        out[name] = jax.tree.map(lambda _, lab=label: lab, sub)
    return out


def group_learning_rates(spec, stage: int, lr: float, names) -> dict[str, float]:
    """The learning rate (before the step decay) of every named group; 0 if frozen."""
    out = {}
    for name in names:
        k = param_group(name, stage, spec.train_depth)
        out[name] = 0.0 if k is None else lr * spec.lr_scale**k
    return out


def make_g_tx(spec, stage: int, ts) -> optax.GradientTransformation:
    """Adam per group at lr_g * lr_scale**k (step decay as SinGAN), zero if frozen."""
    boundary = ts.decay_boundary(ts.g_steps)
    transforms = {
        group_label(k): adam(
            ts.lr_g * spec.lr_scale**k,
            ts.beta1,
            ts.beta2,
            boundary,
            ts.gamma,
            ts.adam_eps,
        )
        for k in range(spec.train_depth)
    }
    transforms[FROZEN] = optax.set_to_zero()
    labels = functools.partial(param_labels, stage=stage, train_depth=spec.train_depth)
    return optax.multi_transform(transforms, labels)


def grow(prev: dict, stage: int) -> dict:
    """Generator variables for `stage`: block `stage` added as a copy of block
    stage-1 (in every collection that has it) unless `prev` already has it."""
    out = {}
    new, last = f"block_{stage}", f"block_{stage - 1}"
    for col, tree in prev.items():
        tree = dict(tree)
        if col != CONSTS and last in tree and new not in tree:
            tree[new] = tree[last]
        out[col] = tree
    return out


# -- one training stage -------------------------------------------------------------


def init_stage(spec, sizes, stage: int, gen, d_mod, key, prev_g=None, prev_d=None):
    """StageModel.init of ConSinGAN: G, D and the reconstruction-noise key
    initialised at stage 0; later the previous generator grown (`grow`) and the
    critic copied."""
    k_init, k_train, k_rec = jax.random.split(key, 3)
    if prev_g is None:
        if stage > 0:
            raise ValueError("stages > 0 start from the previous generator")
        kg, kd = jax.random.split(rbg_key(k_init))
        zs = [jnp.zeros((1, *noise_shape(spec, sizes[0], 0)), jnp.float32)]
        img = jnp.zeros((1, *sizes[0], 3), jnp.float32)
        g_vars = dict(gen.init(kg, zs, jnp.ones((1,)), train=False))
        g_vars[CONSTS] = {"rec_key": jax.random.key_data(k_rec)}
        d_vars = dict(d_mod.init(kd, img))
    else:
        g_vars = grow(prev_g, stage)
        d_vars = dict(prev_d)
    g_vars = jax.tree.map(jnp.asarray, g_vars)
    d_vars = jax.tree.map(jnp.asarray, d_vars)
    return g_vars, d_vars, k_train


def make_stage(spec, sizes, stage: int, augment=None, finetune: bool = False):
    """The StageModel of ConSinGAN at `stage`.

    init: without previous variables (stage 0) G, D and the reconstruction-noise
    key are initialised; otherwise the previous generator grows by a copy of its
    last block (`grow`) and the critic is copied. What enters the head in
    training: augmented copies of data.source in harmonization/editing modes,
    else noise; when fine-tuning (`finetune`) outside those modes, data.source as
    is (the naive image).
    """
    if spec.mode in AUGMENT_MODES:
        head_input = "augment"
    else:
        head_input = "source" if finetune else "noise"
    gen, d_mod = make_generator(spec, stage), make_discriminator(spec)

    def draw_inputs(keys, data, lower=None):
        del lower  # the input is noise only (frozen_below 0)
        keys = jax.random.split(keys[0], stage + 1)
        if head_input == "augment":
            z0 = aug_ops.augment(keys[0], data.source, spec.mode, augment)
        elif head_input == "source":
            z0 = data.source
        else:
            z0 = draw_noise(spec, keys[0], sizes[0], 0)
        rest = [draw_noise(spec, keys[s], sizes[s], s) for s in range(1, stage + 1)]
        return (z0, *rest)

    def apply(g_vars, zs, data):
        (out, _), upd = gen.apply(
            module_vars(g_vars),
            [z[None] for z in zs],
            data.amps,
            train=True,
            mutable=["batch_stats"],
        )
        return out[0], {**g_vars, **upd}

    def prepare(g_vars, lower_vars, lower_amps, z0, real):
        del lower_vars
        zs = [z0] + [rec_noise(spec, g_vars, sizes[s], s) for s in range(1, stage + 1)]
        if stage == 0:
            return tuple(zs), None
        amps = jnp.concatenate([lower_amps, jnp.zeros((1,), jnp.float32)])
        (out, _), _ = gen.apply(
            module_vars(g_vars), [z[None] for z in zs], amps, mutable=["batch_stats"]
        )
        rmse = jnp.sqrt(jnp.mean((out[0] - real) ** 2))
        return tuple(zs), rmse

    return StageModel(
        init=functools.partial(init_stage, spec, sizes, stage, gen, d_mod),
        input_keys=1,
        input_shapes=tuple(
            jax.ShapeDtypeStruct(noise_shape(spec, sizes[s], s), jnp.float32)
            for s in range(stage + 1)
        ),
        draw_inputs=draw_inputs,
        apply=apply,
        frozen=lambda name: param_group(name, stage, spec.train_depth) is None,
        g_tx=lambda ts: make_g_tx(spec, stage, ts),
        prepare=prepare,
    )


def stage_params(params: dict, stage: int) -> dict:
    """What stage `stage` adds to the growing generator: block `stage` (with the
    head and the tail at stage 0)."""
    names = [f"block_{stage}"] + (["head", "tail"] if stage == 0 else [])
    return {name: params[name] for name in names}


def check(spec) -> None:
    """UserError for an unknown mode."""
    if spec.mode not in MODES:
        raise UserError(f"unknown model.mode {spec.mode!r}; use one of {MODES}")


def default_rule(spec) -> str:
    """ConSinGAN's own rule, with and without BatchNorm (as its code trains every
    mode). It diverged with BatchNorm while frozen blocks normalised with running
    statistics (reconstruction MSE 0.58 at 64 px); with batch statistics in every
    block, as the official code has them, it trains."""
    del spec
    return "consingan"


FAMILY = Family(
    kind="consingan",
    display_name=lambda schedule: "ConSinGAN",
    make_generator=make_generator,
    make_discriminator=make_discriminator,
    draw_noise=draw_noise,
    draw_noise_like=draw_noise_like,
    forward=forward,
    rec_noises=rec_noises,
    stage0_rec=stage0_rec,
    make_stage=make_stage,
    update_rules=("fresh", "consingan"),
    default_rule=default_rule,
    stage_generators=False,
    attention=False,
    can_finetune=True,
    check=check,
)
