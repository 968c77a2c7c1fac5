"""The pyramid forward pass, noise, reconstruction and vmap'd sampling.

A sample is a pure function of its key: stage s draws its noise from
`jax.random.fold_in(key, s)`, so sample i of a batch equals the same key drawn
alone, and generators run with BatchNorm running statistics (inference mode).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from agan_jax import compiler, pyramid
from agan_jax.errors import UserError
from agan_jax.models import ModelSpec, consingan, make_generator

Size = tuple[int, int]


def draw_noise(
    key: jax.Array, hw: Size, stage: int, spec: ModelSpec | None = None
) -> jax.Array:
    """Standard normal noise, HWC; stage 0 draws one channel shared by RGB (SinGAN).

    A ConSinGAN `spec` gives its own shapes (`consingan.noise_shape`).
    """
    if spec is not None and spec.kind == "consingan":
        return consingan.draw_noise(spec, key, hw, stage)
    h, w = hw
    if stage == 0:
        return jnp.broadcast_to(jax.random.normal(key, (h, w, 1)), (h, w, 3))
    return jax.random.normal(key, (h, w, 3))


def draw_noise_like(
    key: jax.Array, z: jax.Array, stage: int, spec: ModelSpec | None = None
) -> jax.Array:
    """Fresh noise of the kind and shape of the noise map z of `stage`."""
    if spec is not None and spec.kind == "consingan":
        return jax.random.normal(key, z.shape)
    return draw_noise(key, z.shape[:2], stage)


def stage_noises(
    key: jax.Array,
    sizes: Sequence[Size],
    start: int,
    stop: int,
    spec: ModelSpec | None = None,
):
    """Noise maps for stages [start, stop), stage s from fold_in(key, s); None below."""
    return [
        draw_noise(jax.random.fold_in(key, s), sizes[s], s, spec)
        if s >= start
        else None
        for s in range(stop)
    ]


def apply_stage(gen, variables, prev: jax.Array, z: jax.Array, amp) -> tuple:
    """One frozen generator on one HWC image (inference BatchNorm)."""
    out, attn = gen.apply(variables, prev[None], z[None], amp, train=False)
    return out[0], (None if attn is None else attn[0])


def run_stages(
    gens: Sequence[Any],
    variables: Sequence[Any],
    sizes: Sequence[Size],
    amps: jax.Array,
    noises: Sequence[jax.Array | None],
    x: jax.Array | None,
    start: int,
    stop: int,
) -> tuple[jax.Array, list]:
    """Runs stages [start, stop) of the pyramid.

    Args:
      x: the output of stage start-1 (any size: it is resized bicubically to the
        size of stage `start`), or None when start == 0.
    Returns:
      (output of stage stop-1, list of attention maps or None per stage run).
    """
    attns = []
    for s in range(start, stop):
        h, w = sizes[s]
        prev = (
            jnp.zeros((h, w, 3), jnp.float32) if s == 0 else pyramid.resize(x, (h, w))
        )
        x, attn = apply_stage(gens[s], variables[s], prev, noises[s], amps[s])
        attns.append(attn)
    return x, attns


def pyramid_forward(
    spec: ModelSpec,
    variables: Sequence[Any],
    sizes: Sequence[Size],
    amps: jax.Array,
    noises: Sequence[jax.Array | None],
    x: jax.Array | None,
    start: int,
    stop: int,
) -> tuple[jax.Array, list]:
    """The model-agnostic pyramid forward pass (dispatches on spec.kind).

    Same contract as `run_stages`; the entry point for applications. ConSinGAN
    runs go to `consingan.forward` (its noises come from `draw_noise(..., spec)`).
    """
    if spec.kind == "consingan":
        return consingan.forward(spec, variables, sizes, amps, noises, x, start, stop)
    gens = [make_generator(spec, s) for s in range(stop)]
    return run_stages(gens, variables, sizes, amps, noises, x, start, stop)


def rec_noises(
    z_rec: jax.Array,
    sizes: Sequence[Size],
    stop: int,
    spec: ModelSpec | None = None,
    variables: Sequence[Any] | None = None,
) -> list:
    """Reconstruction noise: the fixed z* at stage 0, zero above.

    ConSinGAN: its fixed noise maps above stage 0, drawn from the key stored in
    `variables[stop - 1]`; None without `variables` (the forward pass draws them).
    """
    if spec is not None and spec.kind == "consingan":
        if variables is None:
            return [z_rec] + [None] * (stop - 1)
        vs = variables[stop - 1]
        return [z_rec] + [
            consingan.rec_noise(spec, vs, sizes[s], s) for s in range(1, stop)
        ]
    return [z_rec] + [jnp.zeros((*sizes[s], 3), jnp.float32) for s in range(1, stop)]


def scaled_sizes(sizes: Sequence[Size], scale: tuple[float, float]) -> list[Size]:
    """Every stage's size times (scale_h, scale_w), rounded, at least 1 pixel."""
    sh, sw = float(scale[0]), float(scale[1])
    if sh <= 0 or sw <= 0:
        raise UserError(f"scale must be positive, got {scale}; use e.g. 1.5")
    return [(max(1, round(h * sh)), max(1, round(w * sw))) for h, w in sizes]


@dataclasses.dataclass
class Run:
    """A trained (possibly partial) pyramid: everything sampling needs."""

    spec: ModelSpec
    sizes: list[Size]
    g_vars: list[Any]
    noise_amps: np.ndarray
    z_rec: np.ndarray
    real: np.ndarray | None = None
    config: Any = None
    meta: dict = dataclasses.field(default_factory=dict)
    workdir: str | None = None
    _cache: dict = dataclasses.field(default_factory=dict, repr=False)

    @property
    def num_stages(self) -> int:
        """Number of trained stages."""
        return len(self.g_vars)

    @property
    def gens(self) -> list:
        """The generator module of every trained stage."""
        return [make_generator(self.spec, s) for s in range(self.num_stages)]

    def reals(self) -> list[jax.Array]:
        """The real-image pyramid (needs the training image)."""
        if self.real is None:
            raise UserError("this run holds no training image; re-train it")
        return pyramid.build(jnp.asarray(self.real), self.sizes[: self.num_stages])


def _check_stage(run: Run, stage: int, name: str, low: int = 0) -> None:
    if not low <= stage < run.num_stages:
        raise UserError(
            f"{name}={stage} is outside [{low}, {run.num_stages - 1}] for this run "
            f"of {run.num_stages} trained stages; pick a stage in that range"
        )


def reconstruct(run: Run, stop: int | None = None) -> jax.Array:
    """The reconstruction of the training image at stage stop-1 (default: finest)."""
    stop = run.num_stages if stop is None else stop
    key = ("rec", stop)
    if key not in run._cache:
        spec, sizes = run.spec, run.sizes

        def fn(variables, amps, z_rec):
            noises = rec_noises(z_rec, sizes, stop, spec)
            out, _ = pyramid_forward(
                spec, variables, sizes, amps, noises, None, 0, stop
            )
            return out

        run._cache[key] = jax.jit(fn, compiler_options=compiler.options())
    return run._cache[key](run.g_vars[:stop], jnp.asarray(run.noise_amps), run.z_rec)


def make_sampler(
    gens: Sequence[Any] | ModelSpec,
    sizes: Sequence[Size],
    start: int,
    stop: int,
    with_attention: bool = False,
):
    """Returns f(keys, variables, amps, base) -> images (n, h, w, 3) [, attentions].

    `base` is the output of stage start-1 (ignored when start == 0). One vmap over
    keys; BatchNorm in inference mode, so each sample equals itself drawn alone.
    `gens`: the generator modules, or a ModelSpec (then `pyramid_forward`).
    """
    spec = gens if isinstance(gens, ModelSpec) else None

    def one(key, variables, amps, base):
        noises = stage_noises(key, sizes, start, stop, spec)
        x = None if start == 0 else base
        if spec is not None:
            out, attns = pyramid_forward(
                spec, variables, sizes, amps, noises, x, start, stop
            )
        else:
            out, attns = run_stages(
                gens, variables, sizes, amps, noises, x, start, stop
            )
        if with_attention:
            return out, [a for a in attns if a is not None]
        return out

    return jax.vmap(one, in_axes=(0, None, None, None))


def default_batch_size() -> int:
    """Samples per vmap'd call when not given: 4 on CPU, 256 elsewhere.

    On the 2-core CPU (AGAN, 6 stages, 48x64) batches of 1-4 drew 27 samples/s,
    16 and more 10-13 samples/s (`python -m launch.bench`): larger batches only
    spill the caches there. Accelerators want large batches.
    """
    return 4 if jax.default_backend() == "cpu" else 256


def sample(
    run: Run,
    key: jax.Array,
    n: int,
    start_stage: int = 0,
    scale: tuple[float, float] = (1.0, 1.0),
    batch_size: int = 0,
    with_attention: bool = False,
):
    """Draws `n` samples (n, h, w, 3) in [-1, 1]-ish float32.

    Stages below `start_stage` reproduce the training image (reconstruction noise,
    at the training size); from `start_stage` on, fresh noise at `scale` times the
    training size. Samples are computed in vmap'd batches of at most `batch_size`
    (one compile per batch size and output size; 0: `default_batch_size()`).
    Sample i uses key `jax.random.split(key, n)[i]`, whatever the batch size.
    With `with_attention`, also returns the attention maps of every attention
    stage run (a list of (n, h, w, 3) arrays; empty for SinGAN).
    """
    if n < 1:
        raise UserError(f"number of samples must be >= 1, got {n}")
    if batch_size < 0:
        raise UserError(f"batch_size must be >= 0 (0: default), got {batch_size}")
    _check_stage(run, start_stage, "start_stage")
    sizes = scaled_sizes(run.sizes[: run.num_stages], scale)
    stop = run.num_stages
    base = jnp.zeros((1, 1, 3), jnp.float32)
    if start_stage > 0:
        base = reconstruct(run, start_stage)
    batch = min(n, batch_size or default_batch_size())
    cache_key = ("sample", batch, start_stage, tuple(sizes), with_attention)
    if cache_key not in run._cache:
        f = make_sampler(run.spec, sizes, start_stage, stop, with_attention)
        run._cache[cache_key] = jax.jit(f, compiler_options=compiler.options())
    fn = run._cache[cache_key]
    keys = jax.random.split(key, n)
    pad = math.ceil(n / batch) * batch - n
    if pad:
        keys = jnp.concatenate([keys, jnp.broadcast_to(keys[-1:], (pad,))])
    amps = jnp.asarray(run.noise_amps)
    outs = [
        fn(keys[i : i + batch], run.g_vars, amps, base)
        for i in range(0, n + pad, batch)
    ]
    if with_attention:
        images = jnp.concatenate([o[0] for o in outs])[:n]
        attns = [
            jnp.concatenate([o[1][j] for o in outs])[:n] for j in range(len(outs[0][1]))
        ]
        return images, attns
    return jnp.concatenate(outs)[:n]


def load_run(workdir: str) -> Run:
    """Loads every finished stage of a trained run (see agan_jax.checkpoint)."""
    from agan_jax import checkpoint

    return checkpoint.load_run(workdir)
