"""ConSinGAN training: one growing generator, its newest blocks trained together.

Stage s trains the generator with blocks 0..s (`models/consingan.py`) against a
critic copied from stage s-1. Block s starts as a copy of block s-1. The newest
`train_depth` blocks train concurrently, block s-k at learning rate
lr_g * lr_scale**k; the head trains with block 0 (while s < train_depth), the tail
at lr_g always; older blocks are frozen. The learning rates come from one
`optax.multi_transform` over parameter labels (`param_labels`), frozen groups get
`optax.set_to_zero()`.

One iteration is `d_steps` critic updates and `g_steps` generator updates. With
`train.update_rule='consingan'` (configs/consingan.py) they follow ConSinGAN's own
code: one noise draw per iteration (at every stage; the whole generator runs end
to end) gives the fake of every critic update and of the generator loss, and the
generator's one gradient is applied g_steps times. With 'fresh' (SPEC 6) every
update draws its own noise and the generator takes g_steps gradients. The
generator loss adds alpha x MSE of the reconstruction: the real coarsest image
(animation mode: a fixed noise map) enters the head and every stage above adds
its fixed reconstruction noise. Noise amplitude of stage s > 0: noise_amp_base x
RMSE between the real image and the reconstruction of the stage-s generator
(block s freshly copied, its own amplitude 0).

Modes (`config.model.mode`): generation (default; features upsampled into the
border for diverse edges), retarget (zero padding: better for other sizes),
animation (as generation, stage-0 reconstruction from noise, so walks around it
are smooth), harmonization and editing (zero padding; the head is trained on
augmented copies of the coarsest image instead of noise: colour/noise transforms
and cut-outs, plus shuffled tiles for editing). `fine_tune` adapts the last stage
of such a run to one naive image.

Progress bar, metrics.jsonl, the non-finite check and the per-stage Orbax
checkpoints are those of `train.py` (`train_stage`, `RunStore`).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import json
import os
import shutil
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from agan_jax import checkpoint, image_io, losses, pyramid, sampling
from agan_jax.errors import UserError
from agan_jax.models import ModelSpec, consingan, make_discriminator, make_generator
from agan_jax.state import StageState, adam
from agan_jax.train import (
    StageFns,
    TrainSettings,
    _abstract,
    append_jsonl,
    finish_run,
    finish_stage,
    make_runner,
    optax_apply,
    prepare_image,
    resolve_path,
    stage_key,
    train_stage,
)

FROZEN = "frozen"
FINE_TUNE_KEY = (
    30_000  # fold_in constant: fine-tuning's key stream differs from training's
)


# -- learning rates per parameter group -------------------------------------------


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


def group_learning_rates(
    spec: ModelSpec, stage: int, lr: float, names
) -> dict[str, float]:
    """The learning rate (before the step decay) of every named group; 0 if frozen."""
    out = {}
    for name in names:
        k = param_group(name, stage, spec.train_depth)
        out[name] = 0.0 if k is None else lr * spec.lr_scale**k
    return out


def make_g_tx(
    spec: ModelSpec, stage: int, ts: TrainSettings
) -> optax.GradientTransformation:
    """Adam per group at lr_g * lr_scale**k (step decay as SinGAN), zero if frozen."""
    boundary = ts.lr_milestone * ts.iters * ts.g_steps
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


# -- augmentations (harmonization / editing) --------------------------------------


@dataclasses.dataclass(frozen=True)
class AugmentSettings:
    """Probabilities and strengths of the training augmentations."""

    p_colour: float = 0.5  # brightness, contrast, saturation, per-channel gains
    p_noise: float = 0.5  # additive Gaussian noise, std ~ U(0, noise_std)
    noise_std: float = 0.1
    p_cutout: float = 0.5  # one rectangle of a random colour
    cutout_max: float = 0.4  # its largest side, as a fraction of the image side
    p_tiles: float = 0.5  # editing only: tiles x tiles grid, shuffled
    tiles: int = 4

    @classmethod
    def from_config(cls, config) -> AugmentSettings:
        """config.augment (optional; defaults above)."""
        a = dict(config.get("augment") or {})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(a) - names)
        if unknown:
            raise UserError(
                f"unknown augment settings {unknown}; known: {sorted(names)}"
            )
        out = cls(**{k: (int(v) if k == "tiles" else float(v)) for k, v in a.items()})
        if out.tiles < 1:
            raise UserError("augment.tiles must be >= 1")
        return out


def colour_transform(key: jax.Array, x: jax.Array) -> jax.Array:
    """Random contrast, brightness, saturation and per-channel gains; in [-1, 1]."""
    kc, kb, ks, kg = jax.random.split(key, 4)
    contrast = jax.random.uniform(kc, (), minval=0.7, maxval=1.3)
    brightness = jax.random.uniform(kb, (), minval=-0.2, maxval=0.2)
    saturation = jax.random.uniform(ks, (), minval=0.5, maxval=1.5)
    gains = jax.random.uniform(kg, (3,), minval=0.85, maxval=1.15)
    mean = jnp.mean(x, axis=(0, 1))
    x = (x - mean) * contrast + mean + brightness
    gray = jnp.mean(x, axis=-1, keepdims=True)
    x = gray + saturation * (x - gray)
    x = (x + 1.0) * gains - 1.0
    return jnp.clip(x, -1.0, 1.0)


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


# -- one stage ----------------------------------------------------------------------


@flax.struct.dataclass
class ConStageData:
    """Constants of one ConSinGAN stage (not donated)."""

    real: jax.Array  # (h, w, 3) real image at this stage
    amps: jax.Array  # (s+1,) noise amplitudes of stages 0..s
    rec_inputs: tuple  # stage-0 input and fixed noises of stages 1..s (HWC)
    source: jax.Array  # (h0, w0, 3) image the augmentations transform


def grow(prev: dict, stage: int) -> dict:
    """Generator variables for `stage`: block `stage` added as a copy of block
    stage-1 (in every collection that has it) unless `prev` already has it."""
    out = {}
    new, last = f"block_{stage}", f"block_{stage - 1}"
    for col, tree in prev.items():
        tree = dict(tree)
        if col != consingan.CONSTS and last in tree and new not in tree:
            tree[new] = tree[last]
        out[col] = tree
    return out


def make_stage_fns(
    spec: ModelSpec,
    sizes,
    stage: int,
    ts: TrainSettings,
    aug: AugmentSettings | None = None,
    head_input: str | None = None,
) -> StageFns:
    """init_state, iteration, d_step and g_step of one ConSinGAN stage.

    init_state(key, prev_g_vars, prev_d_vars): without previous variables (stage
    0) G, D and the reconstruction-noise key are initialised; otherwise the
    previous generator grows by a copy of its last block (`grow`) and the critic
    is copied. Optimiser states are always fresh.
    head_input: what enters the head during training: 'noise', 'augment' (of
    data.source) or 'source' (data.source as is); default by mode.
    """
    aug = aug or AugmentSettings()
    if head_input is None:
        head_input = "augment" if spec.mode in consingan.AUGMENT_MODES else "noise"
    gen, d_mod = make_generator(spec, stage), make_discriminator(spec, stage)
    tx_g = make_g_tx(spec, stage, ts)
    boundary_d = ts.lr_milestone * ts.iters * ts.d_steps
    tx_d = adam(ts.lr_d, ts.beta1, ts.beta2, boundary_d, ts.gamma, ts.adam_eps)

    def is_frozen(name: str) -> bool:
        return param_group(name, stage, spec.train_depth) is None

    def train_inputs(key, data: ConStageData) -> list:
        keys = jax.random.split(key, stage + 1)
        if head_input == "augment":
            z0 = augment(keys[0], data.source, spec.mode, aug)
        elif head_input == "source":
            z0 = data.source
        else:
            z0 = consingan.draw_noise(spec, keys[0], sizes[0], 0)
        rest = [
            consingan.draw_noise(spec, keys[s], sizes[s], s)
            for s in range(1, stage + 1)
        ]
        return [z0, *rest]

    def g_apply(g_vars, zs, amps):
        (out, _), upd = gen.apply(
            consingan.module_vars(g_vars),
            [z[None] for z in zs],
            amps,
            train=True,
            mutable=["batch_stats"],
        )
        return out[0], {**g_vars, **upd}

    def critic_fn(d_vars, params):
        return lambda x: d_mod.apply({**d_vars, "params": params}, x[None])[0]

    official = ts.update_rule == "consingan"

    def d_step(state: StageState, data: ConStageData):
        """One critic update: with a fresh fake ('fresh'), or ('consingan') with the
        iteration's fake, whose noise key stays fixed until the generator update."""
        if official:
            key, k_z = state.key, jax.random.split(state.key)[1]
            k_a = jax.random.fold_in(k_z, state.step)
        else:
            key, k_z, k_a = jax.random.split(state.key, 3)
        fake, g_vars = g_apply(state.g_vars, train_inputs(k_z, data), data.amps)
        fake = jax.lax.stop_gradient(fake)
        a = jax.random.uniform(k_a)
        params = state.d_vars["params"]

        def loss_fn(params):
            critic = critic_fn(state.d_vars, params)
            wgan = losses.critic_wgan(critic(data.real), critic(fake))
            xi = losses.interpolate(data.real, fake, a)
            if ts.gp_mode == "jvp":
                surrogate, gp = losses.penalty_surrogate(critic, xi)
            else:
                gp = surrogate = losses.gradient_penalty(critic, xi)
            return wgan + ts.lambda_gp * surrogate, (wgan + ts.lambda_gp * gp, gp)

        grads, (d_loss, gp) = jax.grad(loss_fn, has_aux=True)(params)
        updates, d_opt = tx_d.update(grads, state.d_opt, params)
        d_vars = {**state.d_vars, "params": optax_apply(params, updates)}
        new = state.replace(
            step=state.step + 1, g_vars=g_vars, d_vars=d_vars, d_opt=d_opt, key=key
        )
        return new, {"d_loss": d_loss, "gp": gp}

    def g_step(state: StageState, data: ConStageData):
        """Generator update(s) from the adversarial and reconstruction losses.

        'fresh': one update, with a fresh fake. 'consingan': the fake of this
        iteration's critic updates (same noise key), one gradient, applied g_steps
        times, as ConSinGAN's code does; the key then moves to the next iteration.
        """
        key, k_z = jax.random.split(state.key)
        zs = train_inputs(k_z, data)
        critic = critic_fn(state.d_vars, state.d_vars["params"])

        def loss_fn(params):
            # Frozen groups get no gradient at all (XLA then skips their backward
            # pass); their zero update comes from the optimiser's 'frozen' label.
            params = {
                n: jax.lax.stop_gradient(p) if is_frozen(n) else p
                for n, p in params.items()
            }
            v = {**state.g_vars, "params": params}
            fake, v = g_apply(v, zs, data.amps)
            rec, v = g_apply(v, list(data.rec_inputs), data.amps)
            adv = losses.generator_adv(critic(fake))
            rec_loss = losses.reconstruction(rec, data.real)
            tv = losses.total_variation(fake)
            total = adv + ts.alpha * rec_loss + ts.tv_weight * tv
            return total, (v, adv, rec_loss, tv)

        params = state.g_vars["params"]
        grads, (v, adv, rec_loss, tv) = jax.grad(loss_fn, has_aux=True)(params)
        g_opt = state.g_opt
        for _ in range(ts.g_steps if official else 1):
            updates, g_opt = tx_g.update(grads, g_opt, params)
            params = optax_apply(params, updates)
        g_vars = {**v, "params": params}
        step = state.step + (ts.g_steps if official else 1)
        new = state.replace(step=step, g_vars=g_vars, g_opt=g_opt, key=key)
        return new, {"g_adv": adv, "rec": rec_loss, "tv": tv}

    d_jit, g_jit = jax.jit(d_step), jax.jit(g_step)
    g_calls = 1 if official else ts.g_steps

    def iteration(state: StageState, data: ConStageData):
        """d_steps critic updates, then the generator update(s)."""
        for _ in range(ts.d_steps):
            state, md = d_jit(state, data)
        for _ in range(g_calls):
            state, mg = g_jit(state, data)
        return state, {**md, **mg}

    @jax.jit
    def init_state(key, prev_g_vars=None, prev_d_vars=None) -> StageState:
        k_init, k_train, k_rec = jax.random.split(key, 3)
        if prev_g_vars is None:
            if stage > 0:
                raise ValueError("stages > 0 start from the previous generator")
            # 'rbg' keys for the weights: a smaller init program (see train.py).
            k_init = jax.random.wrap_key_data(
                jax.random.bits(k_init, (4,), jnp.uint32), impl="rbg"
            )
            kg, kd = jax.random.split(k_init)
            zs = [
                jnp.zeros((1, *consingan.noise_shape(spec, sizes[0], 0)), jnp.float32)
            ]
            img = jnp.zeros((1, *sizes[0], 3), jnp.float32)
            g_vars = dict(gen.init(kg, zs, jnp.ones((1,)), train=False))
            g_vars[consingan.CONSTS] = {"rec_key": jax.random.key_data(k_rec)}
            d_vars = dict(d_mod.init(kd, img))
        else:
            g_vars = grow(prev_g_vars, stage)
            d_vars = dict(prev_d_vars)
        g_vars = jax.tree.map(jnp.asarray, g_vars)
        d_vars = jax.tree.map(jnp.asarray, d_vars)
        return StageState(
            step=jnp.zeros((), jnp.int32),
            g_vars=g_vars,
            d_vars=d_vars,
            g_opt=tx_g.init(g_vars["params"]),
            d_opt=tx_d.init(d_vars["params"]),
            key=k_train,
        )

    return StageFns(init_state, iteration, d_step, g_step, g_calls)


def stage0_rec_input(spec: ModelSpec, g_vars: dict, real0: jax.Array) -> jax.Array:
    """What the head reconstructs from: the real coarsest image, or (animation) a
    fixed noise map drawn from the stored reconstruction key."""
    if spec.mode == "animation":
        return consingan.rec_noise(spec, g_vars, real0.shape[:2], 0)
    return real0


def make_prepare(spec: ModelSpec, sizes, stage: int, noise_amp_base: float):
    """jit'd (g_vars, lower_amps, z0, real) -> (reconstruction inputs, noise amp)."""
    gen = make_generator(spec, stage)

    def prepare(g_vars, lower_amps, z0, real):
        zs = [z0] + [
            consingan.rec_noise(spec, g_vars, sizes[s], s) for s in range(1, stage + 1)
        ]
        if stage == 0:
            return tuple(zs), jnp.float32(1.0)
        amps = jnp.concatenate([lower_amps, jnp.zeros((1,), jnp.float32)])
        out, _ = gen.apply(consingan.module_vars(g_vars), [z[None] for z in zs], amps)
        rmse = jnp.sqrt(jnp.mean((out[0] - real) ** 2))
        return tuple(zs), noise_amp_base * rmse

    return jax.jit(prepare)


@dataclasses.dataclass
class ConPrograms:
    """The compiled programs of one ConSinGAN stage."""

    fns: StageFns
    init: Any  # compiled init_state(key, prev_g_vars, prev_d_vars)
    prepare: Any  # compiled make_prepare(...) (g_vars, lower_amps, z0, real)
    runners: dict  # iterations per call -> compiled runner (train.make_runner)
    sampler: Any  # compiled (keys, g_vars 0..s, amps, base) -> (images, attentions)
    compile_s: float


def plan_stages(spec, sizes, ts, aug, first, last, prev_g, prev_d, lower, z0):
    """Abstract state, data and program arguments of stages first..last.

    prev_g, prev_d: variables of stage first-1 (None at 0); lower: the generator
    variables of stages < first; z0: the stage-0 reconstruction input (None at 0).
    """
    key = jax.ShapeDtypeStruct((), jax.random.key(0).dtype)
    f32 = jnp.float32
    prev_g, prev_d = _abstract(prev_g), _abstract(prev_d)
    lower, z0 = [_abstract(v) for v in lower], _abstract(z0)
    source = jax.ShapeDtypeStruct((*sizes[0], 3), f32)
    plan = {}
    for s in range(first, last + 1):
        fns = make_stage_fns(spec, sizes, s, ts, aug)
        state = jax.eval_shape(fns.init_state, key, prev_g, prev_d)
        if s == 0:
            z0 = jax.eval_shape(
                functools.partial(stage0_rec_input, spec), state.g_vars, source
            )
        real = jax.ShapeDtypeStruct((*sizes[s], 3), f32)
        prep = make_prepare(spec, sizes, s, ts.noise_amp_base)
        prep_args = (state.g_vars, jax.ShapeDtypeStruct((s,), f32), z0, real)
        rec_inputs, _ = jax.eval_shape(prep, *prep_args)
        data = ConStageData(
            real=real,
            amps=jax.ShapeDtypeStruct((s + 1,), f32),
            rec_inputs=rec_inputs,
            source=source,
        )
        lower.append(state.g_vars)
        plan[s] = (fns, state, data, (key, prev_g, prev_d), prep, prep_args, lower[:])
        prev_g, prev_d = state.g_vars, state.d_vars
    return plan


def compile_stage(spec, sizes, ts, s: int, planned) -> ConPrograms:
    """Compiles one stage's programs from abstract shapes (in a worker thread)."""
    t0 = time.time()
    fns, state, data, init_args, prep, prep_args, variables = planned
    opts = ts.compiler_options
    init = fns.init_state.lower(*init_args).compile(compiler_options=opts)
    prepare = prep.lower(*prep_args).compile(compiler_options=opts)
    # min_pixels 0: every stage but the first fused (the critic updates share
    # one fake there; see train.resolve_compile_unit).
    runners = make_runner(fns, ts, state, data, s, min_pixels=0)
    sampler = None
    if ts.stage_samples > 0:
        f = sampling.make_sampler(spec, sizes, 0, s + 1, with_attention=True)
        keys = jax.ShapeDtypeStruct((ts.stage_samples,), jax.random.key(0).dtype)
        amps = jax.ShapeDtypeStruct((s + 1,), jnp.float32)
        base = jax.ShapeDtypeStruct((1, 1, 3), jnp.float32)
        sampler = (
            jax.jit(f)
            .lower(keys, tuple(variables), amps, base)
            .compile(compiler_options=opts)
        )
    return ConPrograms(fns, init, prepare, runners, sampler, time.time() - t0)


def train(config, workdir: str, stop_after: int | None = None, progress: bool = True):
    """Trains every unfinished ConSinGAN stage of the run in `workdir`; returns the Run.

    Same contract as `train.train` (which dispatches here for model.kind
    'consingan'): re-running resumes at the first unfinished stage and gives the
    same result as an uninterrupted run. As there, every stage's programs are
    compiled from abstract shapes in a worker thread while earlier stages train.
    """
    spec = ModelSpec.from_config(config)
    if spec.kind != "consingan":
        raise UserError(
            f"train_consingan needs model.kind 'consingan', got {spec.kind}"
        )
    ts = TrainSettings.from_config(config)
    aug = AugmentSettings.from_config(config)
    image, original_hw, _ = prepare_image(config)
    sizes = pyramid.stage_sizes_from_config(config, image.shape[:2], original_hw)
    num_stages = len(sizes)
    store = checkpoint.RunStore(workdir)
    store.check_or_write_metadata(
        checkpoint.run_metadata(config, spec, sizes, image), image
    )
    reals = pyramid.build(jnp.asarray(image), sizes)
    seed = int(config.seed)

    done = store.finished_stages(num_stages)
    run = store.load_run(upto=len(done)) if done else None
    g_list = list(run.g_vars) if run else []
    amps = [float(a) for a in run.noise_amps] if run else []
    z0 = jnp.asarray(run.z_rec) if run else None
    prev_d = store.load_d_vars(len(done) - 1) if done else None
    metrics_path = os.path.join(workdir, "metrics.jsonl")
    first = len(done)
    last = num_stages - 1 if stop_after is None else min(stop_after, num_stages - 1)
    t_run = time.time()
    plan = plan_stages(
        spec,
        sizes,
        ts,
        aug,
        first,
        last,
        g_list[-1] if g_list else None,
        prev_d,
        g_list,
        z0,
    )
    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="compile")
    try:
        futures = {
            s: pool.submit(compile_stage, spec, sizes, ts, s, plan[s])
            for s in range(first, last + 1)
        }
        for s in range(first, last + 1):
            t0 = time.time()
            progs = futures[s].result()
            wait_s = time.time() - t0
            prev_g = g_list[-1] if g_list else None
            state = progs.init(stage_key(seed, s), prev_g, prev_d)
            if s == 0:
                z0 = stage0_rec_input(spec, state.g_vars, reals[0])
            rec_inputs, amp = progs.prepare(
                state.g_vars, jnp.asarray(amps, jnp.float32).reshape(s), z0, reals[s]
            )
            amp = float(amp)
            data = ConStageData(
                real=reals[s],
                amps=jnp.asarray([*amps, amp], jnp.float32),
                rec_inputs=rec_inputs,
                source=reals[0],
            )
            state, train_s = train_stage(
                state,
                data,
                progs.runners,
                ts,
                s,
                num_stages,
                sizes[s],
                metrics_path,
                progress,
            )
            g_list.append(state.g_vars)
            amps.append(amp)
            prev_d = state.d_vars
            store.save_stage(s, state, z0, amp, sizes[s])
            finish_stage(
                progs,
                ts,
                s,
                sizes[s],
                amp,
                wait_s,
                train_s,
                t0,
                seed,
                g_list,
                amps,
                workdir,
                reals[s],
            )
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return finish_run(store, workdir, len(g_list), t_run)


# -- fine-tuning on a naive image ---------------------------------------------------


def fine_tune(
    config,
    workdir: str,
    naive_image_path: str,
    iters: int = 500,
    out_workdir: str | None = None,
    progress: bool = True,
):
    """Fine-tunes the LAST stage of a trained ConSinGAN run on a naive image.

    The run in `workdir` is left untouched: its files are copied to `out_workdir`
    (default `<workdir>_finetuned`, which must not exist yet), where the checkpoint
    of the last stage is replaced by the fine-tuned one; stages 0..S-2 are the
    same bytes. The last stage trains again for `iters` iterations (fresh
    optimisers, the run's own noise amplitudes and train window) with the naive
    image, resized to the coarsest stage, as the head's input: augmented as in
    training for harmonization / editing runs, as is otherwise. run.json records
    the naive image and the iterations under 'fine_tune'.

    Args:
      config: training settings to use (lr, steps, ...); None = the run's own.
    Returns:
      The fine-tuned Run (loaded from `out_workdir`).
    """
    src = checkpoint.RunStore(workdir)
    meta = src.read_metadata()
    run = src.load_run()
    src.close()
    run_config = ml_collections.ConfigDict(meta["config"])
    spec = ModelSpec.from_config(run_config)
    if spec.kind != "consingan":
        raise UserError(
            f"{workdir} holds a {spec.kind} run; fine-tuning is for ConSinGAN runs "
            "(train one with --config=configs/consingan.py:harmonization)"
        )
    num_stages = len(run.sizes)
    if run.num_stages < num_stages:
        raise UserError(
            f"{workdir} has {run.num_stages} of {num_stages} stages trained; finish "
            "training first (re-run python -m launch.train with the same --workdir)"
        )
    if int(iters) < 1:
        raise UserError(f"fine-tuning needs at least 1 iteration, got {iters}")
    config = ml_collections.ConfigDict(
        (config if config is not None else run_config).to_dict()
    )
    config.train.iters_per_stage = int(iters)
    ts = TrainSettings.from_config(config)
    aug = AugmentSettings.from_config(config)
    sizes = [tuple(hw) for hw in run.sizes]
    naive = image_io.load_image(resolve_path(naive_image_path))
    naive = jnp.clip(pyramid.resize(jnp.asarray(naive), sizes[-1]), -1.0, 1.0)
    source = jnp.clip(pyramid.resize(naive, sizes[0]), -1.0, 1.0)

    out = os.path.abspath(out_workdir or workdir.rstrip("/") + "_finetuned")
    if os.path.exists(out):
        raise UserError(
            f"{out} already exists; pass another output directory (--out) or delete it"
        )
    last = num_stages - 1
    ignore = shutil.ignore_patterns("stages", "samples", "metrics.jsonl")
    shutil.copytree(src.workdir, out, ignore=ignore)
    shutil.rmtree(os.path.join(out, "checkpoints", str(last)))
    meta["fine_tune"] = {
        "from": src.workdir,
        "naive_image": str(naive_image_path),
        "iters": int(iters),
        "stage": last,
    }
    with open(os.path.join(out, "run.json"), "w") as f:
        json.dump(meta, f, indent=2)

    old = checkpoint.RunStore(workdir)
    trained = old.load_stage(last)
    old.close()
    to_jnp = functools.partial(jax.tree.map, jnp.asarray)
    head_input = "augment" if spec.mode in consingan.AUGMENT_MODES else "source"
    fns = make_stage_fns(spec, sizes, last, ts, aug, head_input)
    key = jax.random.fold_in(stage_key(int(config.seed), last), FINE_TUNE_KEY)
    t0 = time.time()
    state = fns.init_state(key, to_jnp(trained["g_vars"]), to_jnp(trained["d_vars"]))
    real = pyramid.build(jnp.asarray(run.real), sizes)[last]
    amps = jnp.asarray(run.noise_amps, jnp.float32)
    z0 = jnp.asarray(run.z_rec)
    rec_inputs, _ = make_prepare(spec, sizes, last, ts.noise_amp_base)(
        state.g_vars, amps[:last], z0, real
    )
    data = ConStageData(real=real, amps=amps, rec_inputs=rec_inputs, source=source)
    runners = make_runner(fns, ts, state, data)
    compile_s = time.time() - t0
    metrics_path = os.path.join(out, "metrics.jsonl")
    state, train_s = train_stage(
        state, data, runners, ts, last, num_stages, sizes[last], metrics_path, progress
    )
    store = checkpoint.RunStore(out)
    store.save_stage(last, state, z0, float(run.noise_amps[last]), sizes[last])
    store.close()
    append_jsonl(
        metrics_path,
        {
            "event": "fine_tune_done",
            "stage": last,
            "iters": int(iters),
            "compile_s": round(compile_s, 3),
            "train_s": round(train_s, 3),
        },
    )
    return checkpoint.load_run(out)
