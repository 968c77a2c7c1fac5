"""Stage training: one compiled iteration function per stage, and the stage loop.

One iteration = `d_steps` critic updates, then `g_steps` generator updates, each
with a fresh fake (fresh noise at this stage and a fresh sample of the frozen
stages below). The iteration is compiled once per stage; `steps_per_call`
iterations run per compiled call (1: a jitted step with donated state; k > 1: a
`lax.scan` of k steps). Metrics stay on the device until a log point.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import logging
import math
import os
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from agan_jax import checkpoint, compiler, image_io, losses, pyramid, sampling
from agan_jax.errors import UserError
from agan_jax.models import ModelSpec, make_discriminator, make_generator
from agan_jax.state import StageData, StageState, adam, warm_start

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite."""


UPDATE_RULES = ("fresh", "consingan")


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """Plain-Python training hyperparameters, read from the config once."""

    iters: int = 2000
    d_steps: int = 3
    g_steps: int = 3
    lr_g: float = 5e-4
    lr_d: float = 5e-4
    beta1: float = 0.5
    beta2: float = 0.999
    adam_eps: float = 1e-8
    lr_milestone: float = 0.8
    gamma: float = 0.1
    lambda_gp: float = 0.1
    alpha: float = 10.0
    tv_weight: float = 0.0
    noise_amp_base: float = 0.1
    gp_mode: str = "jvp"  # "jvp" (fast, same gradient) or "double_grad" (reference)
    steps_per_call: int = 1
    compile_unit: str = "auto"  # "auto", "update" or "iteration" (see make_runner)
    # "fresh" (SPEC 6): every update draws its own noise and generator gradient;
    # "consingan": ConSinGAN's own rule (train_consingan.py), one noise draw and one
    # generator gradient per iteration, that gradient applied g_steps times.
    update_rule: str = "fresh"
    xla_opt_level: int = -1  # XLA backend optimisation level; -1: see compiler.py
    log_every: int = 25
    stage_samples: int = 0  # samples in the grid written after each stage

    @property
    def compiler_options(self) -> dict | None:
        """Options for every `.compile()` of training (agan_jax.compiler)."""
        return compiler.options(self.xla_opt_level)

    @classmethod
    def from_config(cls, config) -> TrainSettings:
        """Reads config.train, config.loss and config.noise_amp_base."""
        t, lo = config.train, config.loss
        spc = int(t.steps_per_call) or default_steps_per_call()
        settings = cls(
            iters=int(t.iters_per_stage),
            d_steps=int(t.d_steps),
            g_steps=int(t.g_steps),
            lr_g=float(t.lr_g),
            lr_d=float(t.lr_d),
            beta1=float(t.beta1),
            beta2=float(t.beta2),
            adam_eps=float(t.get("adam_eps", 1e-8)),
            lr_milestone=float(t.lr_milestone),
            gamma=float(t.gamma),
            lambda_gp=float(lo.lambda_gp),
            alpha=float(lo.alpha),
            tv_weight=float(lo.tv_weight),
            noise_amp_base=float(config.noise_amp_base),
            gp_mode=str(t.get("gp_mode", "jvp")),
            steps_per_call=spc,
            log_every=max(1, int(t.log_every)),
            stage_samples=max(0, int(t.get("stage_samples", 0))),
            compile_unit=check_compile_unit(str(t.get("compile_unit", "auto"))),
            update_rule=resolve_update_rule(config),
            xla_opt_level=int(t.get("xla_backend_opt_level", -1)),
        )
        if settings.iters < 1 or settings.d_steps < 1 or settings.g_steps < 1:
            raise UserError("train.iters_per_stage, d_steps and g_steps must be >= 1")
        if settings.gp_mode not in ("jvp", "double_grad"):
            raise UserError("train.gp_mode must be 'jvp' or 'double_grad'")
        if settings.xla_opt_level not in (-1, 0, 1, 2, 3):
            raise UserError(
                "train.xla_backend_opt_level must be -1 (auto) or 0..3, "
                f"got {settings.xla_opt_level}"
            )
        if settings.update_rule not in UPDATE_RULES:
            raise UserError(
                f"train.update_rule must be one of {UPDATE_RULES}, "
                f"got {settings.update_rule!r}"
            )
        return settings


def resolve_update_rule(config) -> str:
    """train.update_rule; 'auto': 'consingan' for ConSinGAN without BatchNorm, else
    'fresh'. With BatchNorm, ConSinGAN's rule (one gradient applied 3 times)
    diverged at 64 px (reconstruction MSE 0.20 and 0.58 at stages 4 and 5, against
    0.0007 with 'fresh'), so BatchNorm runs (harmonization, editing) keep 'fresh'."""
    rule = str(config.train.get("update_rule", "auto"))
    if rule != "auto":
        return rule
    m = config.model
    no_bn = not bool(m.get("batch_norm", True))
    return "consingan" if m.get("kind") == "consingan" and no_bn else "fresh"


def default_steps_per_call() -> int:
    """Iterations per compiled call when the config says 0 (auto).

    CPU: 1. With jax 0.10.2 on a 2-core CPU a lax.scan around this step ran 8x
    slower per iteration than the same step jitted alone (SPEC 6). Accelerators:
    10, to remove launch gaps between iterations (not measured in this repo yet).
    """
    return 1 if jax.default_backend() == "cpu" else 10


def check_compile_unit(unit: str) -> str:
    if unit not in ("auto", "update", "iteration"):
        raise UserError(
            f"train.compile_unit must be 'auto', 'update' or 'iteration', got {unit!r}"
        )
    return unit


# SinGAN / AGAN on CPU fuse an iteration into one compiled call from this stage
# size up (see resolve_compile_unit).
CPU_ITERATION_MIN_PIXELS = 62 * 82


def resolve_compile_unit(
    unit: str,
    stage: int | None = None,
    pixels: int | None = None,
    min_pixels: int = CPU_ITERATION_MIN_PIXELS,
) -> str:
    """'auto' -> 'update' or 'iteration' for one stage; other units as given.

    Accelerators: 'iteration'. CPU: 'update' for stage 0 (`stage` None counts as
    0), whose compile is waited for, and for stages under `min_pixels`; otherwise
    'iteration'. Measured on the 2-core CPU with LLVM O1 (docs/performance.md,
    "Compile unit"): a fused iteration runs 12-17% faster than 6 update calls but
    compiles 3-4 s longer, which competes with training for the 2 cores; whole
    SinGAN runs gained from 62x82 px up (max_size 128: 820 -> 777 s) and lost when
    every later stage was fused (max_size 64: 177 -> 187 s). ConSinGAN fuses every
    later stage (min_pixels 0): there the 3 critic updates share one fake, which
    XLA computes once in the fused program (max_size 64: 281 -> 206 s).
    """
    check_compile_unit(unit)
    if unit != "auto":
        return unit
    if jax.default_backend() != "cpu":
        return "iteration"
    if not stage or (pixels is not None and pixels < min_pixels):
        return "update"
    return "iteration"


# ----------------------------------------------------------------------------
# The compiled iteration of one stage.


def check_update_rule(spec: ModelSpec, ts: TrainSettings) -> None:
    """SinGAN and AGAN train with the 'fresh' rule only."""
    if ts.update_rule != "fresh":
        raise UserError(
            f"train.update_rule={ts.update_rule!r} is ConSinGAN's rule; "
            f"{spec.kind} trains with 'fresh' (drop the override)"
        )


class StageFns(NamedTuple):
    """The pure functions of one stage."""

    init_state: Any  # (key, prev_g_vars=None, prev_d_vars=None) -> StageState
    iteration: Any  # (state, data) -> (state, metrics): d_steps + g_steps updates
    d_step: Any  # (state, data) -> (state, metrics): one critic update
    g_step: Any  # (state, data) -> (state, metrics): one generator update
    g_calls: int = 0  # g_step calls per iteration; 0: ts.g_steps (one update each)


def make_stage_fns(spec: ModelSpec, sizes, stage: int, ts: TrainSettings):
    """Builds (init_vars, iteration) for one stage, closing over plain values only.

    Returns:
      init_vars(key) -> (g_vars, d_vars); iteration(state, data) -> (state, metrics).
    """
    check_update_rule(spec, ts)
    gens = [make_generator(spec, s) for s in range(stage + 1)]
    g_mod, d_mod = gens[stage], make_discriminator(spec, stage)
    h, w = sizes[stage]
    milestone = ts.lr_milestone * ts.iters
    tx_g = adam(
        ts.lr_g, ts.beta1, ts.beta2, milestone * ts.g_steps, ts.gamma, ts.adam_eps
    )
    tx_d = adam(
        ts.lr_d, ts.beta1, ts.beta2, milestone * ts.d_steps, ts.gamma, ts.adam_eps
    )

    def init_vars(key):
        # Weights are drawn with an 'rbg' key derived from the stage's threefry key:
        # the init program then compiled in 1.5 s instead of 4.9 s on this CPU.
        key = jax.random.wrap_key_data(
            jax.random.bits(key, (4,), jnp.uint32), impl="rbg"
        )
        kg, kd = jax.random.split(key)
        x = jnp.zeros((1, h, w, 3), jnp.float32)
        g_vars = g_mod.init(kg, x, x, 1.0, train=False)
        d_vars = d_mod.init(kd, x, train=False)
        return jax.tree.map(jnp.asarray, dict(g_vars)), jax.tree.map(
            jnp.asarray, dict(d_vars)
        )

    def lower_fake(data: StageData, key):
        """A fresh sample of the frozen stages below, upsampled to this stage."""
        if stage == 0:
            return jnp.zeros((h, w, 3), jnp.float32)
        noises = sampling.stage_noises(key, sizes, 0, stage)
        x, _ = sampling.run_stages(
            gens, data.lower_vars, sizes, data.lower_amps, noises, None, 0, stage
        )
        return pyramid.resize(x, (h, w))

    def gen_train(g_vars, prev, z, amp):
        (out, _), upd = g_mod.apply(
            g_vars, prev[None], z[None], amp, train=True, mutable=["batch_stats"]
        )
        return out[0], {**g_vars, **upd}

    def critic_fn(d_vars, params):
        def critic(x):
            out, _ = d_mod.apply(
                {**d_vars, "params": params},
                x[None],
                train=True,
                mutable=["batch_stats"],
            )
            return out[0]

        return critic

    def d_update(g_vars, d_vars, d_opt, data, prev, z, a):
        fake, g_vars = gen_train(g_vars, prev, z, data.noise_amp)
        fake = jax.lax.stop_gradient(fake)

        def loss_fn(params):
            critic = critic_fn(d_vars, params)
            wgan = losses.critic_wgan(critic(data.real), critic(fake))
            xi = losses.interpolate(data.real, fake, a)
            if ts.gp_mode == "jvp":
                surrogate, gp = losses.penalty_surrogate(critic, xi)
            else:
                gp = surrogate = losses.gradient_penalty(critic, xi)
            return wgan + ts.lambda_gp * surrogate, (wgan + ts.lambda_gp * gp, gp)

        grads, (d_loss, gp) = jax.grad(loss_fn, has_aux=True)(d_vars["params"])
        updates, d_opt = tx_d.update(grads, d_opt, d_vars["params"])
        d_vars = {**d_vars, "params": optax_apply(d_vars["params"], updates)}
        return g_vars, d_vars, d_opt, d_loss, gp

    def g_update(g_vars, d_vars, g_opt, data, prev, z):
        critic = critic_fn(d_vars, d_vars["params"])

        def loss_fn(params):
            v = {**g_vars, "params": params}
            fake, v = gen_train(v, prev, z, data.noise_amp)
            rec, v = gen_train(v, data.rec_prev, data.z_rec, data.noise_amp)
            adv = losses.generator_adv(critic(fake))
            rec_loss = losses.reconstruction(rec, data.real)
            tv = losses.total_variation(fake)
            total = adv + ts.alpha * rec_loss + ts.tv_weight * tv
            return total, (v, adv, rec_loss, tv)

        grads, (v, adv, rec_loss, tv) = jax.grad(loss_fn, has_aux=True)(
            g_vars["params"]
        )
        updates, g_opt = tx_g.update(grads, g_opt, g_vars["params"])
        g_vars = {**v, "params": optax_apply(g_vars["params"], updates)}
        return g_vars, g_opt, adv, rec_loss, tv

    def d_step(state: StageState, data: StageData):
        """One critic update with a fresh fake."""
        key, k_prev, k_z, k_a = jax.random.split(state.key, 4)
        prev = lower_fake(data, k_prev)
        z = sampling.draw_noise(k_z, (h, w), stage)
        a = jax.random.uniform(k_a)
        g_vars, d_vars, d_opt, d_loss, gp = d_update(
            state.g_vars, state.d_vars, state.d_opt, data, prev, z, a
        )
        new = state.replace(
            step=state.step + 1, g_vars=g_vars, d_vars=d_vars, d_opt=d_opt, key=key
        )
        return new, {"d_loss": d_loss, "gp": gp}

    def g_step(state: StageState, data: StageData):
        """One generator update with a fresh fake."""
        key, k_prev, k_z = jax.random.split(state.key, 3)
        prev = lower_fake(data, k_prev)
        z = sampling.draw_noise(k_z, (h, w), stage)
        g_vars, g_opt, adv, rec_loss, tv = g_update(
            state.g_vars, state.d_vars, state.g_opt, data, prev, z
        )
        new = state.replace(step=state.step + 1, g_vars=g_vars, g_opt=g_opt, key=key)
        return new, {"g_adv": adv, "rec": rec_loss, "tv": tv}

    # Traced once each, reused by the unrolled iteration (XLA inlines them). A
    # lax.fori_loop over the updates instead compiled 1.5x faster but ran 13x
    # slower per iteration on XLA CPU (jax 0.10.2, 49x64 px, 64 channels).
    d_jit, g_jit = jax.jit(d_step), jax.jit(g_step)

    def iteration(state: StageState, data: StageData):
        """d_steps critic updates, then g_steps generator updates."""
        for _ in range(ts.d_steps):
            state, md = d_jit(state, data)
        for _ in range(ts.g_steps):
            state, mg = g_jit(state, data)
        return state, {**md, **mg}

    @jax.jit
    def init_state(key, prev_g_vars=None, prev_d_vars=None) -> StageState:
        # One compiled program (eager init ran dozens of tiny compiles). Its outputs
        # are fresh buffers, so donating the state never donates a frozen stage's.
        k_init, k_train = jax.random.split(key)
        g_vars, d_vars = init_vars(k_init)
        g_vars = warm_start(g_vars, prev_g_vars)
        d_vars = warm_start(d_vars, prev_d_vars)
        return StageState(
            step=jnp.zeros((), jnp.int32),
            g_vars=g_vars,
            d_vars=d_vars,
            g_opt=tx_g.init(g_vars["params"]),
            d_opt=tx_d.init(d_vars["params"]),
            key=k_train,
        )

    return StageFns(init_state, iteration, d_step, g_step)


def optax_apply(params, updates):
    """params + updates, leafwise (optax.apply_updates without the dtype casts)."""
    return jax.tree.map(lambda p, u: p + u, params, updates)


def chunk_fn(iteration, k: int):
    """k iterations per call: the step itself (k == 1) or a lax.scan of k steps."""
    if k == 1:
        return iteration

    def run(state, data):
        return jax.lax.scan(lambda st, _: iteration(st, data), state, None, length=k)

    return run


def compile_chunk(iteration, k: int, state, data, options=None):
    """jit with donated state, compiled ahead of time for this stage's shapes."""
    return (
        jax.jit(chunk_fn(iteration, k), donate_argnums=(0,))
        .lower(state, data)
        .compile(compiler_options=options)
    )


# ----------------------------------------------------------------------------
# The stage loop.


def stage_key(seed: int, stage: int) -> jax.Array:
    """The PRNG key of one stage: resuming at any stage continues the same stream."""
    return jax.random.fold_in(jax.random.key(seed), stage)


def rec_noise(seed: int, hw) -> jax.Array:
    """The fixed reconstruction noise z* of stage 0."""
    return sampling.draw_noise(jax.random.fold_in(jax.random.key(seed), 10_000), hw, 0)


def prepare_image(config) -> tuple[np.ndarray, tuple[int, int], str]:
    """Loads the training image; returns (image, original (h, w), resolved path)."""
    path = resolve_path(config.data.image)
    image = image_io.load_image(path, config.data.max_size, config.data.min_size)
    from PIL import Image

    with Image.open(path) as im:
        original_hw = (im.height, im.width)
    return image, original_hw, path


def resolve_path(path: str) -> str:
    """A path as given, else relative to the project root (for the bundled data)."""
    if os.path.exists(path) or os.path.isabs(path):
        return path
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    alt = os.path.join(root, path)
    return alt if os.path.exists(alt) else path


@dataclasses.dataclass
class StagePrograms:
    """The compiled programs of one stage."""

    fns: StageFns
    init: Any  # compiled init_state(key, prev_g_vars, prev_d_vars)
    runners: dict  # iterations per call -> compiled runner (see make_runner)
    rec_prev: Any  # compiled (lower_vars, lower_amps, z_rec) -> rec input; None at 0
    sampler: Any  # compiled (keys, g_vars 0..s, amps, base) -> (images, attentions)
    compile_s: float


def _abstract(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(jnp.shape(x), x.dtype), tree)


def rec_prev_fn(spec: ModelSpec, sizes, s: int):
    """(lower_vars, lower_amps, z_rec) -> reconstruction of stage s-1 resized to s."""

    def fn(lower_vars, lower_amps, z_rec):
        noises = sampling.rec_noises(z_rec, sizes, s)
        x, _ = sampling.pyramid_forward(
            spec, lower_vars, sizes, lower_amps, noises, None, 0, s
        )
        return pyramid.resize(x, sizes[s])

    return fn


def plan_stages(spec, sizes, ts, first: int, last: int, prev_g, prev_d, lower):
    """Abstract shapes of every stage's state and data, before anything trains.

    Args:
      prev_g, prev_d: variables (or shapes) of stage first-1, None at stage 0.
      lower: generator variables (or shapes) of stages < first.
    Returns:
      {stage: (fns, state shapes, data shapes)} for stages first..last.
    """
    key = jax.ShapeDtypeStruct((), jax.random.key(0).dtype)
    f32 = jnp.float32
    prev_g, prev_d = _abstract(prev_g), _abstract(prev_d)
    lower = [_abstract(v) for v in lower]
    plan = {}
    for s in range(first, last + 1):
        fns = make_stage_fns(spec, sizes, s, ts)
        state = jax.eval_shape(fns.init_state, key, prev_g, prev_d)
        img = jax.ShapeDtypeStruct((*sizes[s], 3), f32)
        data = StageData(
            real=img,
            rec_prev=img,
            z_rec=img,
            noise_amp=jax.ShapeDtypeStruct((), f32),
            lower_vars=tuple(lower),
            lower_amps=jax.ShapeDtypeStruct((s,), f32),
        )
        plan[s] = (fns, state, data, (key, prev_g, prev_d))
        prev_g, prev_d = state.g_vars, state.d_vars
        lower.append(state.g_vars)
    return plan


def compile_stage(spec, sizes, ts, s: int, planned) -> StagePrograms:
    """Compiles one stage's programs from abstract shapes (runs in a worker thread)."""
    t0 = time.time()
    fns, state, data, init_args = planned
    opts = ts.compiler_options
    init = fns.init_state.lower(*init_args).compile(compiler_options=opts)
    runners = make_runner(fns, ts, state, data, s)
    rec = None
    if s > 0:
        z = jax.ShapeDtypeStruct((*sizes[0], 3), jnp.float32)
        rec = (
            jax.jit(rec_prev_fn(spec, sizes, s))
            .lower(data.lower_vars, data.lower_amps, z)
            .compile(compiler_options=opts)
        )
    sampler = None
    if ts.stage_samples > 0:
        n = ts.stage_samples
        gens = [make_generator(spec, i) for i in range(s + 1)]
        f = sampling.make_sampler(gens, sizes, 0, s + 1, with_attention=True)
        keys = jax.ShapeDtypeStruct((n,), jax.random.key(0).dtype)
        amps = jax.ShapeDtypeStruct((s + 1,), jnp.float32)
        variables = (*data.lower_vars, state.g_vars)
        base = jax.ShapeDtypeStruct((1, 1, 3), jnp.float32)
        sampler = (
            jax.jit(f).lower(keys, variables, amps, base).compile(compiler_options=opts)
        )
    return StagePrograms(fns, init, runners, rec, sampler, time.time() - t0)


def train(config, workdir: str, stop_after: int | None = None, progress: bool = True):
    """Trains every unfinished stage of the run in `workdir`; returns the Run.

    Re-running with the same config and workdir resumes at the first unfinished
    stage. `stop_after` stops after that stage (for tests and staged launches).
    Every stage's programs are compiled from abstract shapes in a worker thread,
    so stage s+1 compiles while stage s trains.
    """
    if config.model.kind == "consingan":  # one growing generator: own stage loop
        from agan_jax import train_consingan

        return train_consingan.train(config, workdir, stop_after, progress)
    spec = ModelSpec.from_config(config)
    ts = TrainSettings.from_config(config)
    check_update_rule(spec, ts)
    image, original_hw, path = prepare_image(config)
    sizes = pyramid.stage_sizes_from_config(config, image.shape[:2], original_hw)
    num_stages = len(sizes)
    meta = checkpoint.run_metadata(config, spec, sizes, image)
    store = checkpoint.RunStore(workdir)
    store.check_or_write_metadata(meta, image)
    reals = pyramid.build(jnp.asarray(image), sizes)
    seed = int(config.seed)

    done = store.finished_stages(num_stages)
    run = store.load_run(upto=len(done)) if done else None
    g_vars = list(run.g_vars) if run else []
    amps = list(run.noise_amps) if run else []
    z_rec = rec_noise(seed, sizes[0])
    prev_d = store.load_d_vars(len(done) - 1) if done else None
    metrics_path = os.path.join(workdir, "metrics.jsonl")
    last = num_stages - 1 if stop_after is None else min(stop_after, num_stages - 1)
    first = len(done)
    t_run = time.time()
    plan = plan_stages(
        spec, sizes, ts, first, last, g_vars[-1] if g_vars else None, prev_d, g_vars
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
            lower_amps = jnp.asarray(amps, jnp.float32).reshape(s)
            if s == 0:
                rec_prev = jnp.zeros((*sizes[0], 3), jnp.float32)
                amp = 1.0
            else:
                rec_prev = progs.rec_prev(tuple(g_vars), lower_amps, z_rec)
                rmse = float(jnp.sqrt(jnp.mean((reals[s] - rec_prev) ** 2)))
                amp = ts.noise_amp_base * rmse
            data = StageData(
                real=reals[s],
                rec_prev=rec_prev,
                z_rec=z_rec if s == 0 else jnp.zeros((*sizes[s], 3), jnp.float32),
                noise_amp=jnp.float32(amp),
                lower_vars=tuple(g_vars),
                lower_amps=lower_amps,
            )
            state = progs.init(
                stage_key(seed, s), g_vars[-1] if g_vars else None, prev_d
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
            g_vars.append(state.g_vars)
            amps.append(amp)
            prev_d = state.d_vars
            store.save_stage(s, state, z_rec, amp, sizes[s])
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
                g_vars,
                amps,
                workdir,
                reals[s],
            )
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return finish_run(store, workdir, len(g_vars), t_run)


def finish_stage(
    progs, ts, s, hw, amp, wait_s, train_s, t0, seed, g_vars, amps, workdir, real
):
    """After stage s trained and was saved: its metrics record and sample grid."""
    append_jsonl(
        os.path.join(workdir, "metrics.jsonl"),
        {
            "event": "stage_done",
            "stage": s,
            "size": list(hw),
            "noise_amp": amp,
            "compile_s": round(progs.compile_s, 3),
            "compile_wait_s": round(wait_s, 3),
            "train_s": round(train_s, 3),
            "stage_s": round(time.time() - t0, 3),
            "iters_per_s": round(ts.iters / max(train_s, 1e-9), 3),
        },
    )
    if progs.sampler is not None:
        write_stage_images(
            progs.sampler, ts.stage_samples, seed, g_vars, amps, workdir, s, real
        )


def finish_run(store, workdir: str, num_trained: int, t_run: float):
    """Closes the store, records the run's end; the Run, or None if nothing trained."""
    store.close()
    append_jsonl(
        os.path.join(workdir, "metrics.jsonl"),
        {
            "event": "run_done",
            "stages": num_trained,
            "seconds": round(time.time() - t_run, 3),
        },
    )
    return checkpoint.RunStore(workdir).load_run() if num_trained else None


def make_runner(
    fns: StageFns,
    ts: TrainSettings,
    state,
    data,
    stage: int | None = None,
    min_pixels: int = CPU_ITERATION_MIN_PIXELS,
    options: dict | None = None,
):
    """Compiles this stage's step functions once; returns (run, iterations per run).

    compile_unit 'update': one compiled call per critic or generator update (two
    small programs, compiled in a fraction of the time of a whole iteration);
    'iteration': one call runs `steps_per_call` whole iterations; 'auto': by
    backend and stage size (resolve_compile_unit). `options`: XLA compile options
    instead of the settings' own (benchmarks of other options).
    """
    opts = ts.compiler_options if options is None else options
    h, w = data.real.shape[:2]
    unit = resolve_compile_unit(ts.compile_unit, stage, h * w, min_pixels)
    if unit == "update":
        d_fn, g_fn = (
            jax.jit(f, donate_argnums=(0,))
            .lower(state, data)
            .compile(compiler_options=opts)
            for f in (fns.d_step, fns.g_step)
        )

        g_calls = fns.g_calls or ts.g_steps

        def run_update(state, data):
            for _ in range(ts.d_steps):
                state, md = d_fn(state, data)
            for _ in range(g_calls):
                state, mg = g_fn(state, data)
            return state, {**md, **mg}

        return {1: run_update}
    k = max(1, min(ts.steps_per_call, ts.iters))
    runners = {k: compile_chunk(fns.iteration, k, state, data, opts)}
    if ts.iters % k:
        runners[1] = compile_chunk(fns.iteration, 1, state, data, opts)
    return runners


def train_stage(state, data, runners, ts, s, num_stages, hw, metrics_path, progress):
    """Runs one stage's iterations with compiled runners; returns (state, seconds)."""
    k = max(runners)
    bar = tqdm(
        total=ts.iters,
        desc=f"stage {s}/{num_stages - 1} {hw[0]}x{hw[1]}",
        disable=not progress,
        leave=True,
    )
    pending: list[tuple[int, Any]] = []
    done = 0
    t1 = time.time()

    def flush():
        for it, m in jax.device_get(pending):
            m = {key: np.asarray(v).reshape(-1)[-1].item() for key, v in m.items()}
            if not all(math.isfinite(v) for v in m.values()):
                bad = ", ".join(f"{key}={v}" for key, v in m.items())
                raise TrainingDiverged(
                    f"non-finite loss at stage {s}, iteration {it}: {bad}. Stages "
                    f"0..{s - 1} are saved; lower the learning rates "
                    "(--config.train.lr_g/lr_d) and re-run the same command to resume"
                )
            append_jsonl(metrics_path, {"stage": s, "iter": it, **m})
            bar.set_postfix(
                d=f"{m['d_loss']:.3f}", rec=f"{m['rec']:.4f}", refresh=False
            )
        pending.clear()

    while done < ts.iters:
        n = k if ts.iters - done >= k else 1
        step_fn = runners[n]
        state, metrics = step_fn(state, data)
        done += n
        bar.update(n)
        if done % ts.log_every < n or done == ts.iters:
            pending.append((done, metrics))
        if len(pending) >= 4 or done == ts.iters:
            flush()
    jax.block_until_ready(state)
    bar.close()
    return state, time.time() - t1


def append_jsonl(path: str, record: dict) -> None:
    """Appends one JSON line."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def write_stage_images(sampler, n: int, seed: int, g_vars, amps, workdir: str, s, real):
    """A grid of n samples after stage s (real image first) and AGAN attention maps."""
    key = jax.random.fold_in(jax.random.key(seed), 20_000 + s)
    keys = jax.random.split(key, n)
    base = jnp.zeros((1, 1, 3), jnp.float32)
    images, attns = sampler(keys, tuple(g_vars), jnp.asarray(amps, jnp.float32), base)
    out = os.path.join(workdir, "stages")
    image_io.save_grid(
        os.path.join(out, f"stage_{s:02d}.png"), np.concatenate([real[None], images])
    )
    if attns:
        image_io.save_grid(
            os.path.join(out, f"stage_{s:02d}_attention.png"),
            np.asarray(attns[-1]) * 2.0 - 1.0,
        )
