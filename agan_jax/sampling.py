"""Vmap'd sampling from a trained Run, at any size and from any start stage.

A `Sampler` wraps a `Run` and holds its compiled functions in a visible cache
(`Sampler.cache`: one entry per function, batch size and output size), so repeated
calls compile nothing. Sample i of a batch equals the same key drawn alone: one
`jax.vmap` over keys, generators in inference mode (BatchNorm running statistics).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence

import jax
import jax.numpy as jnp

from agan_jax import compiler
from agan_jax.errors import UserError
from agan_jax.forward import pyramid_forward, rec_noises, stage_noises
from agan_jax.run import Run

Size = tuple[int, int]


def scaled_sizes(sizes: Sequence[Size], scale: tuple[float, float]) -> list[Size]:
    """Every stage's size times (scale_h, scale_w), rounded, at least 1 pixel."""
    sh, sw = float(scale[0]), float(scale[1])
    if sh <= 0 or sw <= 0:
        raise UserError(f"scale must be positive, got {scale}; use e.g. 1.5")
    return [(max(1, round(h * sh)), max(1, round(w * sw))) for h, w in sizes]


def make_sampler(
    spec, sizes: Sequence[Size], start: int, stop: int, with_attention: bool = False
):
    """Returns f(keys, variables, amps, base) -> images (n, h, w, 3) [, attentions].

    `base` is the output of stage start-1 (ignored when start == 0). One vmap over
    keys; BatchNorm in inference mode, so each sample equals itself drawn alone.
    """

    def one(key, variables, amps, base):
        noises = stage_noises(spec, key, sizes, start, stop)
        x = None if start == 0 else base
        out, attns = pyramid_forward(
            spec, variables, sizes, amps, noises, x, start, stop
        )
        return (out, attns) if with_attention else out

    return jax.vmap(one, in_axes=(0, None, None, None))


def default_batch_size() -> int:
    """Samples per vmap'd call when not given: 4 on CPU, 256 elsewhere.

    On the 2-core CPU (AGAN, 6 stages, 48x64) batches of 1-4 drew 27 samples/s,
    16 and more 10-13 samples/s (`python -m launch.bench`): larger batches only
    spill the caches there. Accelerators want large batches.
    """
    return 4 if jax.default_backend() == "cpu" else 256


class Sampler:
    """Sampling and reconstruction of one Run, compiled once per shape.

    `cache` maps a key (what, batch size, sizes, ...) to a jitted function;
    `compiled(key, make)` is how applications add theirs.
    """

    def __init__(self, run: Run):
        self.run = run
        self.cache: dict[Hashable, Callable] = {}

    def compiled(self, key: Hashable, make: Callable[[], Callable]) -> Callable:
        """`self.cache[key]`, built by `make()` (a function to jit) on first use."""
        if key not in self.cache:
            self.cache[key] = jax.jit(make(), compiler_options=compiler.options())
        return self.cache[key]

    def check_stage(self, stage: int, name: str, low: int = 0) -> None:
        """UserError unless low <= stage < the number of trained stages."""
        n = self.run.num_stages
        if not low <= stage < n:
            raise UserError(
                f"{name}={stage} is outside [{low}, {n - 1}] for this run of {n} "
                "trained stages; pick a stage in that range"
            )

    def reconstruct(self, stop: int | None = None) -> jax.Array:
        """The reconstruction of the training image at stage stop-1 (default: the
        finest trained stage)."""
        run = self.run
        stop = run.num_stages if stop is None else stop
        spec, sizes = run.spec, run.sizes

        def make():
            def fn(variables, amps, z_rec):
                noises = rec_noises(spec, z_rec, sizes, stop)
                out, _ = pyramid_forward(
                    spec, variables, sizes, amps, noises, None, 0, stop
                )
                return out

            return fn

        fn = self.compiled(("reconstruct", stop), make)
        return fn(run.g_vars[:stop], jnp.asarray(run.noise_amps), run.z_rec)

    def sample(
        self,
        key: jax.Array,
        n: int,
        start_stage: int = 0,
        scale: tuple[float, float] = (1.0, 1.0),
        batch_size: int = 0,
        with_attention: bool = False,
    ):
        """Draws `n` samples (n, h, w, 3), float32 in about [-1, 1].

        Stages below `start_stage` reproduce the training image (reconstruction
        noise, at the training size); from `start_stage` on, fresh noise at `scale`
        times the training size. Samples are computed in vmap'd batches of at
        most `batch_size` (0: `default_batch_size()`); sample i uses key
        `jax.random.split(key, n)[i]`, whatever the batch size. With
        `with_attention`, also returns the attention maps of every attention stage
        run (a list of (n, h, w, 3) arrays; empty for SinGAN and ConSinGAN).
        """
        run = self.run
        if n < 1:
            raise UserError(f"number of samples must be >= 1, got {n}")
        if batch_size < 0:
            raise UserError(f"batch_size must be >= 0 (0: default), got {batch_size}")
        self.check_stage(start_stage, "start_stage")
        sizes = scaled_sizes(run.sizes[: run.num_stages], scale)
        stop = run.num_stages
        base = jnp.zeros((1, 1, 3), jnp.float32)
        if start_stage > 0:
            base = self.reconstruct(start_stage)
        batch = min(n, batch_size or default_batch_size())
        fn = self.compiled(
            ("sample", batch, start_stage, tuple(sizes), with_attention),
            lambda: make_sampler(run.spec, sizes, start_stage, stop, with_attention),
        )
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
                jnp.concatenate([o[1][j] for o in outs])[:n]
                for j in range(len(outs[0][1]))
            ]
            return images, attns
        return jnp.concatenate(outs)[:n]


def as_sampler(run_or_sampler: Run | Sampler) -> Sampler:
    """A Sampler as given, or a new one (with an empty cache) over a Run."""
    if isinstance(run_or_sampler, Sampler):
        return run_or_sampler
    if not isinstance(run_or_sampler, Run):
        raise TypeError(f"expected a Run or a Sampler, got {type(run_or_sampler)}")
    return Sampler(run_or_sampler)


def sample(run: Run | Sampler, key: jax.Array, n: int, **kwargs):
    """`Sampler.sample` of a Run or Sampler (a Run compiles anew on each call: keep
    a Sampler to sample the same run repeatedly)."""
    return as_sampler(run).sample(key, n, **kwargs)


def reconstruct(run: Run | Sampler, stop: int | None = None) -> jax.Array:
    """`Sampler.reconstruct` of a Run or Sampler."""
    return as_sampler(run).reconstruct(stop)
