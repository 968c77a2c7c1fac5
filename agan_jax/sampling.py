"""Vmap'd sampling from a trained Run, at any size and from any start stage.

A `Sampler` wraps a `Run` and holds its compiled functions in a visible cache
(`Sampler.cache`: one entry per function, batch size and output size), so repeated
calls compile nothing. SinGAN and AGAN runs sample through one program per stage
(`stage_program`, the programs training draws its frozen stages with), which
every start stage and the reconstruction share, or through one program for the
whole pyramid (`make_sampler`; ConSinGAN's single generator always): which one
by backend (`default_per_stage`). Sample i of a batch equals the same key drawn
alone: one `jax.vmap` over keys, generators in inference mode (BatchNorm running
statistics).

One key derivation: sample i of `key` uses `stream_key(key, i) =
jax.random.fold_in(key, i)`, in `Sampler.sample` as in streamed sampling
(`Sampler.draw`, `Sampler.stream`, `launch.sample`). It depends on nothing but i:
not on the number of samples, the batch size or where a resumed run starts, so
the first k of n samples are the k samples of the same key.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from agan_jax.errors import UserError
from agan_jax.forward import draw_noise, pyramid_forward, rec_noises, stage_noises
from agan_jax.models import families
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


def stage_program(spec, sizes, j: int):
    """f(keys, x, variables, amp) -> (images, attention maps): frozen stage j on
    a batch of samples: noise fold_in(key, j) of each sample's key, x the batch of
    stage j-1's outputs (None at stage 0), inference BatchNorm."""
    below = [None] * j

    def one(key, x, variables, amp):
        z = draw_noise(spec, jax.random.fold_in(key, j), sizes[j], j)
        return pyramid_forward(
            spec,
            [*below, variables],
            sizes,
            [*([0.0] * j), amp],
            [*below, z],
            x,
            j,
            j + 1,
        )

    def lower_stage(keys, x, variables, amp):  # the name compile logs show
        return jax.vmap(one, in_axes=(0, 0, None, None))(keys, x, variables, amp)

    return lower_stage


def stage0_given_noise(spec, sizes):
    """f(z, variables, amp) -> images: stage 0 on a batch of given noise maps
    (the reconstruction's z*)."""

    def lower_rec0(z, variables, amp):
        def one(z):
            out, _ = pyramid_forward(spec, [variables], sizes, [amp], [z], None, 0, 1)
            return out

        return jax.vmap(one)(z)

    return lower_rec0


def reconstruct_by_stage(rec0, stage, variables, amps, z_rec, stop: int):
    """The reconstruction at stage stop-1 from per-stage programs: `rec0`
    (`stage0_given_noise`'s) on z*, then `stage(j)` (`stage_program`'s, batch 1)
    for stages 1..stop-1 with noise amplitude 0: their noise times 0, exactly
    the reconstruction's zero noise. `amps`: host values (no indexing program)."""
    x = rec0(z_rec[None], variables[0], amps[0])
    keys, zero = jax.random.split(jax.random.key(0), 1), np.float32(0.0)
    for j in range(1, stop):
        x, _ = stage(j)(keys, x, variables[j], zero)
    return x[0]


def in_batches(fn: Callable, keys: jax.Array, batch: int, *args):
    """fn(keys[i:i+batch], *args) over all keys in turns, the last call padded
    with copies of the last key; the outputs (any pytree of arrays with the
    sample axis first) concatenated and cut back to len(keys). With
    `make_sampler`'s functions, sample i is the one keys[i] draws alone."""
    n = keys.shape[0]
    pad = -n % batch
    if pad:
        keys = jnp.concatenate([keys, jnp.broadcast_to(keys[-1:], (pad,))])
    outs = [fn(keys[i : i + batch], *args) for i in range(0, n + pad, batch)]
    return jax.tree.map(lambda *xs: jnp.concatenate(xs)[:n], *outs)


def stream_key(key: jax.Array, i) -> jax.Array:
    """The key of sample i in streamed sampling: `jax.random.fold_in(key, i)`."""
    return jax.random.fold_in(key, i)


def stream_keys(key: jax.Array, indices) -> jax.Array:
    """`stream_key(key, i)` for every i of `indices` (one array of keys)."""
    return jax.vmap(lambda i: stream_key(key, i))(jnp.asarray(indices, jnp.int32))


def make_indexed_sampler(
    spec, sizes: Sequence[Size], start: int, stop: int, with_attention: bool = False
):
    """Returns f(key, indices, variables, amps, base) -> images [, attentions].

    Sample j of the batch is sample `indices[j]` of the stream: key
    `stream_key(key, indices[j])`, then `make_sampler`'s function.
    """
    inner = make_sampler(spec, sizes, start, stop, with_attention)

    def fn(key, indices, variables, amps, base):
        keys = stream_keys(key, indices)
        return inner(keys, variables, amps, base)

    return fn


class Batch(NamedTuple):
    """One batch of a stream: sample indices (b,), images (b, h, w, 3) float32
    in about [-1, 1], and the attention maps (a list, one (b, h, w, 3) array per
    attention stage) or None when not asked for."""

    indices: np.ndarray
    images: np.ndarray
    attentions: list[np.ndarray] | None


def default_per_stage() -> bool:
    """Whether a `Sampler` runs SinGAN and AGAN through per-stage programs when
    not told: on accelerators, where programs spanning the whole pyramid took
    most of a stage's compile (docs/performance.md, "GPU compile time"); not on
    CPU, where the whole-pyramid program drew AGAN samples about 10% faster and
    its first samples 0.5 s sooner (docs/performance.md, "What is left of AGAN's
    time, and the sampler's compile")."""
    return jax.default_backend() != "cpu"


def default_batch_size() -> int:
    """Samples per vmap'd call when not given: 4 on CPU, 256 elsewhere.

    On the 2-core CPU batches of more than 4 drew fewer samples per second
    (docs/performance.md, "What changed"): larger batches only spill the caches
    there. Accelerators want large batches.
    """
    return 4 if jax.default_backend() == "cpu" else 256


class Sampler:
    """Sampling and reconstruction of one Run, compiled once per shape.

    `cache` maps a key (what, batch size, sizes, ...) to a jitted function;
    `compiled(key, make)` is how applications add theirs.
    """

    def __init__(self, run: Run, per_stage: bool | None = None):
        self.run = run
        self.cache: dict[Hashable, Callable] = {}
        # Compiled as the run's training was (train.xla_backend_opt_level: O0 for
        # the tiny configs).
        self.options = run.settings.train.compiler_options
        # per_stage (None: `default_per_stage()`), for families with a generator
        # per stage (SinGAN, AGAN): one program per stage, output size, input
        # size and batch size, shared by every start stage and by the
        # reconstruction. Otherwise (and always for ConSinGAN's one generator)
        # one program for the whole pyramid per call shape.
        if per_stage is None:
            per_stage = default_per_stage()
        self.per_stage = per_stage and families.of(run.spec).stage_generators
        # Host values: programs take them as arguments, stage j's as amps[j],
        # with no indexing program on the device.
        self.amps = np.asarray(run.noise_amps, np.float32)

    def compiled(self, key: Hashable, make: Callable[[], Callable]) -> Callable:
        """`self.cache[key]`, built by `make()` (a function to jit) on first use."""
        if key not in self.cache:
            self.cache[key] = jax.jit(make(), compiler_options=self.options)
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
        if self.per_stage:
            return self._reconstruct_by_stage(stop)
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
        return fn(run.g_vars[:stop], self.amps, run.z_rec)

    def _stage(
        self, j: int, batch: int, sizes, in_hw, with_attention: bool = False
    ) -> Callable:
        """Stage j's program (`stage_program`) for `batch` samples of sizes[j]
        from inputs of in_hw (None at stage 0); its attention maps are outputs
        only `with_attention` (else an empty list)."""

        def make():
            program = stage_program(self.run.spec, sizes, j)
            if with_attention:
                return program

            def stage_images(keys, x, variables, amp):
                return program(keys, x, variables, amp)[0], []

            return stage_images

        key = ("stage", j, batch, tuple(sizes[j]), in_hw, with_attention)
        return self.compiled(key, make)

    def _reconstruct_by_stage(self, stop: int) -> jax.Array:
        """`reconstruct` from the per-stage programs (`reconstruct_by_stage`)."""
        run = self.run
        sizes = [tuple(s) for s in run.sizes]
        rec0 = self.compiled(("rec0",), lambda: stage0_given_noise(run.spec, sizes))
        return reconstruct_by_stage(
            rec0,
            lambda j: self._stage(j, 1, sizes, sizes[j - 1]),
            run.g_vars,
            self.amps,
            run.z_rec,
            stop,
        )

    def _pyramid(self, batch: int, start: int, sizes, with_attention: bool):
        """f(keys, variables, amps, base) -> images [, attention maps] for
        `batch` keys from stage `start` on (`make_sampler`'s function): the
        per-stage programs in turn, or one whole-pyramid program."""
        run, stop = self.run, self.run.num_stages
        sizes = [tuple(s) for s in sizes]
        if not self.per_stage:
            return self.compiled(
                ("sample", batch, start, tuple(sizes), with_attention),
                lambda: make_sampler(run.spec, sizes, start, stop, with_attention),
            )

        def fn(keys, variables, amps, base):
            x, attns = None, []
            if start > 0:
                x = jnp.broadcast_to(base, (batch, *base.shape))
            for j in range(start, stop):
                in_hw = None if x is None else tuple(x.shape[1:3])
                x, a = self._stage(j, batch, sizes, in_hw, with_attention)(
                    keys, x, variables[j], amps[j]
                )
                attns += list(a)
            return (x, attns) if with_attention else x

        return fn

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
        `stream_key(key, i)`, whatever the batch size and n. With
        `with_attention`, also returns the attention maps of every attention stage
        run (a list of (n, h, w, 3) arrays; empty for SinGAN and ConSinGAN).
        """
        run = self.run
        if n < 1:
            raise UserError(f"number of samples must be >= 1, got {n}")
        _check_batch_size(batch_size)
        sizes, base = self._prepare(start_stage, scale)
        batch = min(n, batch_size or default_batch_size())
        fn = self._pyramid(batch, start_stage, sizes, with_attention)
        keys = stream_keys(key, np.arange(n))
        return in_batches(fn, keys, batch, run.g_vars, self.amps, base)

    def _prepare(
        self, start_stage: int, scale: tuple[float, float]
    ) -> tuple[list[Size], jax.Array]:
        """The scaled stage sizes and the input of stage start_stage (the
        reconstruction below it; a dummy at stage 0)."""
        run = self.run
        self.check_stage(start_stage, "start_stage")
        sizes = scaled_sizes(run.sizes[: run.num_stages], scale)
        base = jnp.zeros((1, 1, 3), jnp.float32)
        if start_stage > 0:
            base = self.reconstruct(start_stage)
        return sizes, base

    def _indexed(self, batch: int, start_stage: int, sizes, with_attention: bool):
        """f(key, indices, variables, amps, base): `_pyramid`'s function on the
        stream keys of `indices` (`make_indexed_sampler`'s)."""
        run = self.run
        if not self.per_stage:
            return self.compiled(
                ("draw", batch, start_stage, tuple(sizes), with_attention),
                lambda: make_indexed_sampler(
                    run.spec, sizes, start_stage, run.num_stages, with_attention
                ),
            )
        keys_of = self.compiled(("stream_keys",), lambda: stream_keys)
        inner = self._pyramid(batch, start_stage, sizes, with_attention)

        def fn(key, indices, variables, amps, base):
            return inner(keys_of(key, indices), variables, amps, base)

        return fn

    def draw(
        self,
        key: jax.Array,
        indices: Sequence[int],
        *,
        start_stage: int = 0,
        scale: tuple[float, float] = (1.0, 1.0),
        with_attention: bool = False,
    ):
        """Samples `indices` of the stream of `key` in one vmap'd call: sample i
        uses `stream_key(key, i)` (compiled once per number of indices).

        Returns images (len(indices), h, w, 3) [, attention maps as in `sample`].
        """
        idx = _as_indices(indices)
        if idx.size < 1:
            raise UserError("draw needs at least one sample index")
        sizes, base = self._prepare(start_stage, scale)
        fn = self._indexed(idx.size, start_stage, sizes, with_attention)
        return fn(key, idx, self.run.g_vars, self.amps, base)

    def stream(
        self,
        key: jax.Array,
        indices: Iterable[int],
        *,
        start_stage: int = 0,
        scale: tuple[float, float] = (1.0, 1.0),
        batch_size: int = 0,
        with_attention: bool = False,
    ) -> Iterator[Batch]:
        """Samples `indices` (any iterable of ints, consumed lazily) of the stream
        of `key` in batches of `batch_size` (0: `default_batch_size()`), as numpy
        `Batch`es, one at a time: memory does not grow with the number of samples.

        Every batch has the same shape, so the function compiles once: the last
        batch is padded with its own last index and the padding dropped. The next
        batch is dispatched before the current one is handed over, so the device
        computes while the caller writes. Sample i equals `draw(key, [i])`.
        """
        _check_batch_size(batch_size)
        batch = batch_size or default_batch_size()
        sizes, base = self._prepare(start_stage, scale)
        fn = self._indexed(batch, start_stage, sizes, with_attention)
        run = self.run

        def finish(idx: np.ndarray, count: int, out) -> Batch:
            if with_attention:
                images, attns = out
                attns = [np.asarray(a)[:count] for a in attns]
            else:
                images, attns = out, None
            return Batch(idx[:count], np.asarray(images)[:count], attns)

        pending = None
        it = iter(indices)
        while True:
            chunk = [int(i) for _, i in zip(range(batch), it, strict=False)]
            if not chunk:
                break
            count = len(chunk)
            idx = _as_indices(chunk + [chunk[-1]] * (batch - count))
            out = fn(key, idx, run.g_vars, self.amps, base)
            if pending is not None:
                yield finish(*pending)
            pending = (idx, count, out)
        if pending is not None:
            yield finish(*pending)


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 0:
        raise UserError(f"batch_size must be >= 0 (0: default), got {batch_size}")


def _as_indices(indices) -> np.ndarray:
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= 2**31):
        raise UserError(
            f"sample indices must be in [0, 2**31), got {idx.min()}..{idx.max()}"
        )
    return idx.astype(np.int32)


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
