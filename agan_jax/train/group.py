"""Several models trained by one stage loop: the model axis.

A group is K runs whose pyramids have the same stage sizes and settings (images
of one size, train/many.py). Each stage compiles once for the whole group, in
one of two modes (`train.group_mode`, auto by backend):

- 'vmap': states, stage data and keys are stacked on a leading axis and every
  stage function is `jax.vmap`'d over it, so one compiled call advances all K
  models (batch norm statistics stay per image). The axis is sharded over a mesh
  of the devices (`jax.sharding` named shardings, axis name 'models'); K is
  padded to a multiple of the device count with copies of the last model, whose
  results are dropped. Accelerators, where one small stage leaves the device idle.
- 'shared': the models are held side by side (a tuple) and every model calls
  the same compiled single-model programs: the group shares the compilation,
  and each model computes bit for bit what `launch.train` computes for it alone.
  The CPU, where a vmap'd iteration ran slower per model than the single-model
  one (docs/performance.md, "Many images").

vmap'd programs are not bit-identical to single-model ones (XLA batches the
convolutions as grouped ones and sums in another order), and Adam turns a
float-noise gradient (a conv bias before BatchNorm, whose true gradient is 0)
into a full +-lr step, so vmap'd weights drift from a single run's within a few
iterations while the losses agree (tests/test_many.py).

A single run is held unbatched (`Models()`): no vmap, no tuple.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from agan_jax.train.updates import StageFns

AXIS = "models"
GROUP_MODES = ("auto", "vmap", "shared")


def resolve_group_mode(mode: str) -> str:
    """'auto' -> 'shared' on CPU, 'vmap' on accelerators (module docstring)."""
    if mode not in GROUP_MODES:
        raise ValueError(f"group mode must be one of {GROUP_MODES}, got {mode!r}")
    if mode != "auto":
        return mode
    return "shared" if jax.default_backend() == "cpu" else "vmap"


def model_mesh(devices=None) -> Mesh:
    """A one-axis mesh ('models') over `devices` (default: this process's)."""
    devices = jax.local_devices() if devices is None else devices
    return Mesh(np.asarray(devices), (AXIS,))


@dataclasses.dataclass(frozen=True)
class Models:
    """How the models of one stage loop are held.

    count: real models; mode: 'single' (one model, unbatched), 'vmap' (stacked on
    a leading axis of `size`, count padded to the mesh) or 'shared' (a tuple of
    `count` trees); mesh: the devices a vmap'd axis is sharded over.
    """

    count: int = 1
    mode: str = "single"
    size: int = 1
    mesh: Mesh | None = None

    @classmethod
    def group(cls, count: int, mode: str = "auto", mesh: Mesh | None = None):
        """`count` models in `mode` (vmap: padded to a multiple of the mesh)."""
        mode = resolve_group_mode(mode)
        if mode == "shared":
            return cls(count, mode, count)
        n = 1 if mesh is None else mesh.devices.size
        return cls(count, mode, -(-count // n) * n, mesh)

    @property
    def batched(self) -> bool:
        """Whether there is a model axis (a group, vmap'd or shared)."""
        return self.mode != "single"

    @property
    def sharding(self) -> NamedSharding | None:
        if self.mesh is None or self.mode != "vmap":
            return None
        return NamedSharding(self.mesh, PartitionSpec(AXIS))

    def stack(self, trees: list) -> Any:
        """The models' trees as the loop holds them."""
        if self.mode == "single":
            (tree,) = trees
            return tree
        if self.mode == "shared":
            return tuple(trees)
        trees = list(trees) + [trees[-1]] * (self.size - len(trees))
        out = jax.tree.map(lambda *xs: jnp.stack(xs), *trees)
        return out if self.sharding is None else jax.device_put(out, self.sharding)

    def map(self, fn) -> Any:
        """fn(i) of every real model i, held as this Models holds trees: how the
        loop builds a batched input in one call."""
        return self.stack([fn(i) for i in range(self.count)])

    def repeat(self, tree) -> Any:
        """The same tree for every model."""
        return self.stack([tree] * self.count)

    def take(self, tree, i: int) -> Any:
        """Model i's tree."""
        if self.mode == "single" or tree is None:
            return tree
        if self.mode == "shared":
            return tree[i]
        return jax.tree.map(lambda x: x[i], tree)

    def field(self, tree, name: str) -> Any:
        """Every model's attribute `name` of a held dataclass (a StageState)."""
        if self.mode == "shared":
            return tuple(getattr(t, name) for t in tree)
        return getattr(tree, name)

    def replace(self, state, **fields) -> Any:
        """A held dataclass (a StageState) with `fields` replaced, each value
        held as this Models holds trees."""
        if self.mode != "shared":
            return state.replace(**fields)
        return tuple(
            t.replace(**{k: v[i] for k, v in fields.items()})
            for i, t in enumerate(state)
        )

    def split(self, tree) -> list:
        """Every real model's tree, in order."""
        return [self.take(tree, i) for i in range(self.count)]

    def abstract(self, tree) -> Any:
        """Abstract argument shapes of a compiled program, from one model's."""
        if self.mode != "vmap":
            return tree
        return jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(
                (self.size, *x.shape), x.dtype, sharding=self.sharding
            ),
            tree,
        )

    def fns(self, fns: StageFns) -> StageFns:
        """A stage's functions over the model axis (vmap'd in 'vmap' mode)."""
        if self.mode != "vmap":
            return fns
        mesh = self.mesh if self.mesh is not None and self.mesh.size > 1 else None

        def v(f):
            """f vmap'd; over several devices each maps its own shard of the model
            axis (shard_map): XLA's SPMD partitioner, given the vmap'd program
            sharded, zeroed the conv-kernel gradients of the models on device 1
            (jax 0.10.2, CPU; tests/test_many.py)."""
            batched = jax.vmap(f)
            if mesh is None:
                return batched
            spec = PartitionSpec(AXIS)
            return jax.shard_map(
                batched, mesh=mesh, in_specs=spec, out_specs=spec, check_vma=False
            )

        def rec_draw(key, i):
            return v(lambda k: fns.rec_draw(k, i))(key)

        # init_state stays single-model: its 'rbg' weight keys (models/family.py)
        # draw other numbers in every vmap'd row but the first; `each` calls it
        # once per model.
        return fns._replace(
            iteration=v(fns.iteration),
            d_step=v(fns.d_step),
            g_step=v(fns.g_step),
            prepare=jax.jit(v(fns.prepare)),
            rec_draw=None if fns.rec_draw is None else jax.jit(rec_draw),
            rolled=None if fns.rolled is None else v(fns.rolled),
        )

    def each(self, program, *args):
        """A single-model program called once per model, its outputs held as
        this Models holds trees (stacked and sharded under 'vmap')."""
        if self.mode != "vmap":
            return self.call(program, *args)
        return self.stack(
            [program(*(self.take(a, i) for a in args)) for i in range(self.count)]
        )

    def call(self, program, *args):
        """A compiled program applied to the models' arguments (each held as
        this Models holds trees; None for an absent one). 'shared': one call per
        model, its outputs regathered as tuples over the models."""
        if self.mode != "shared":
            return program(*args)
        outs = [program(*(self.take(a, i) for a in args)) for i in range(self.count)]
        if not isinstance(outs[0], tuple):
            return tuple(outs)
        return tuple(tuple(o[j] for o in outs) for j in range(len(outs[0])))

    def runner(self, run):
        """A compiled runner (state, data) -> (state, metrics) over the models:
        metrics with a last model axis, as a vmap'd runner returns them."""
        if self.mode != "shared":
            return run

        def shared(state, data):
            states, metrics = self.call(run, state, data)
            return states, {
                k: jnp.stack([m[k] for m in metrics], -1) for k in metrics[0]
            }

        return shared
