"""Samples of the frozen stages below a training stage, drawn as data.

Under SinGAN's update rule every critic update of stage s trains on a fresh
sample of the frozen stages 0..s-1 (official SinGAN's train.py draws it inside
its update loop). Run inside each update program, that forward pass makes the
program, and its compile time, grow with the stage index. Here the loop draws
the samples of a whole compiled call just before the call, with one program per
frozen stage j (stage j's generator on a batch of samples, vmap'd), and the
update program takes them in `StageState.lower` (`updates.fed_lower`): stage
j's program compiles once per batch size and serves every stage above it.

The samples are the ones an update would draw itself: update `slot` of
iteration i uses the key `updates.update_keys(key, i, slot)[0]` and stage j's
noise from fold_in(that key, j), as the families' own lower sample
(models/singan.py) and the sampler (`forward.stage_noises`) do.
"""

from __future__ import annotations

import threading
from typing import Any

import jax
import jax.numpy as jnp

from agan_jax.sampling import reconstruct_by_stage, stage0_given_noise, stage_program
from agan_jax.state import abstract
from agan_jax.train.group import Models
from agan_jax.train.updates import update_keys


def call_keys(key, step, k: int, slots: int, per_iter: int):
    """The lower-sample keys of a call of k iterations starting at update
    `step` (k x slots keys): iteration i's slots at (i mod k) x slots, the
    position `updates.fed_lower` reads them from."""
    i0 = step // per_iter
    its = i0 + (jnp.arange(k) - i0) % k
    slot = jnp.arange(slots)
    keys = jax.vmap(lambda i: jax.vmap(lambda t: update_keys(key, i, t)[0])(slot))(its)
    return keys.reshape(k * slots)


class LowerStages:
    """The compiled per-stage programs of one stage loop, over its model axis
    (group.Models), each compiled once per batch size (from any thread:
    train/programs.py compiles the next stage's while one trains).
    """

    def __init__(self, spec, sizes, models: Models, options: dict | None = None):
        self.spec, self.sizes, self.models, self.options = spec, sizes, models, options
        self.programs: dict[tuple, Any] = {}
        self.locks: dict[tuple, threading.Lock] = {}
        self.lock = threading.Lock()  # guards `locks`

    def single(self) -> LowerStages:
        """The same programs for one model at a time (the stage grids'): this
        object unless the loop vmaps a model axis."""
        if self.models.mode != "vmap":
            return self
        with self.lock:
            if not hasattr(self, "_single"):
                self._single = LowerStages(
                    self.spec, self.sizes, Models(), self.options
                )
            return self._single

    def _vmapped(self, f):
        return jax.vmap(f) if self.models.mode == "vmap" else f

    def _compiled(self, name: tuple, f, *args):
        """Program `name`, compiled for these arguments (or their shapes) by
        the first thread that needs it; the others wait for that one."""
        with self.lock:
            lock = self.locks.setdefault(name, threading.Lock())
        with lock:
            if name not in self.programs:
                lowered = jax.jit(self._vmapped(f)).lower(*args)
                self.programs[name] = lowered.compile(compiler_options=self.options)
            return self.programs[name]

    def prepare(self, stop: int, n: int, lower_vars, slots: int, per_iter: int):
        """Compiles (when missing) what a call drawing n samples of stages
        0..stop-1 runs; `lower_vars`: one model's variables (or their shapes)."""
        b = self.models.abstract
        key = jax.ShapeDtypeStruct((), jax.random.key(0).dtype)
        step = jax.ShapeDtypeStruct((), jnp.int32)
        self._keys(n // slots, slots, per_iter, b(key), b(step))
        self._prepare_stages(stop, n, lower_vars)

    def _prepare_stages(self, stop: int, n: int, variables) -> None:
        """Compiles (when missing) the programs of stages 0..stop-1 for n
        samples; `variables`: one model's (or their shapes)."""
        b, f32 = self.models.abstract, jnp.float32
        keys = b(jax.ShapeDtypeStruct((n,), jax.random.key(0).dtype))
        amp, x = b(jax.ShapeDtypeStruct((), f32)), None
        for j in range(stop):
            self._stage(j, n, keys, b(x), b(abstract(variables[j])), amp)
            x = jax.ShapeDtypeStruct((n, *self.sizes[j], 3), f32)

    def prepare_grid(self, stop: int, n: int, variables) -> None:
        """Compiles (when missing) the programs of `sampler(stop, n)` and of
        `reconstruct(stop)` (one model); `variables`: stages 0..stop-1's (or
        their shapes)."""
        self._prepare_stages(stop, n, variables)
        self.prepare_reconstruct(stop, variables)

    def prepare_reconstruct(self, stop: int, variables) -> None:
        """Compiles (when missing) the programs of `reconstruct(stop)` (one
        model): z* through stage 0, stages 1..stop-1 on one sample."""
        f32 = jnp.float32
        amp = jax.ShapeDtypeStruct((), f32)
        z = jax.ShapeDtypeStruct((1, *self.sizes[0], 3), f32)
        self._rec0(z, abstract(variables[0]), amp)
        keys = jax.ShapeDtypeStruct((1,), jax.random.key(0).dtype)
        for j in range(1, stop):
            x = jax.ShapeDtypeStruct((1, *self.sizes[j - 1], 3), f32)
            self._stage(j, 1, keys, x, abstract(variables[j]), amp)

    def sampler(self, stop: int, n: int):
        """f(keys, variables, amps, base) -> (images, attention maps): stages
        0..stop-1 for n keys (`sampling.make_sampler`'s, with attention), made
        of the per-stage programs."""

        def sample(keys, variables, amps, base):
            del base
            x, attns = None, []
            for j in range(stop):
                args = (keys, x, variables[j], amps[j])
                x, a = self._stage(j, n, *args)(*args)
                attns += list(a)
            return x, attns

        return sample

    def reconstruct(self, stop: int):
        """f(variables, amps, z_rec) -> the reconstruction at stage stop-1
        (`train.log.make_reconstructor`'s), made of the per-stage programs
        (`sampling.reconstruct_by_stage`)."""

        def rec0(*args):
            return self._rec0(*args)(*args)

        def stage(j):
            return lambda *args: self._stage(j, 1, *args)(*args)

        def rec(variables, amps, z_rec):
            return reconstruct_by_stage(rec0, stage, variables, amps, z_rec, stop)

        return rec

    def _rec0(self, *args):
        return self._compiled(
            ("rec0",), stage0_given_noise(self.spec, self.sizes), *args
        )

    def _keys(self, k: int, slots: int, per_iter: int, *args):
        def lower_keys(key, step):
            return call_keys(key, step, k, slots, per_iter)

        return self._compiled(("keys", k, slots, per_iter), lower_keys, *args)

    def _stage(self, j: int, n: int, *args):
        return self._compiled(
            ("stage", j, n), stage_program(self.spec, self.sizes, j), *args
        )

    def draw(self, state, k: int, slots: int, per_iter: int, lower_vars, amps):
        """The lower samples of a call of k iterations from `state` (held over
        the model axis), at the size of the stage below: `StageState.lower`.

        lower_vars: stage j's generator variables as the loop holds them; amps:
        stage j's noise amplitude as the loop holds it (a 0-d array per model).
        """
        models, n = self.models, k * slots

        def one(*args):  # a program's arguments: one model's under 'shared'
            if models.mode != "shared":
                return args
            return tuple(models.take(a, 0) for a in args)

        key, step = models.field(state, "key"), models.field(state, "step")
        keys = models.call(self._keys(k, slots, per_iter, *one(key, step)), key, step)
        x = None
        for j, (v, amp) in enumerate(zip(lower_vars, amps, strict=True)):
            program = self._stage(j, n, *one(keys, x, v, amp))
            x, _ = models.call(program, keys, x, v, amp)
        return x
