"""What training writes beside its checkpoints: metrics.jsonl and stage grids."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from agan_jax import image_io


def append_jsonl(path: str, record: dict) -> None:
    """Appends one JSON line."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


# fold_in constant of the stage grids' sampling keys (from the run's seed).
GRID_KEY = 20_000


def write_stage_images(sampler, n: int, seed: int, g_vars, amps, workdir: str, s, real):
    """A grid of n samples after stage s (real image first) and attention maps."""
    key = jax.random.fold_in(jax.random.key(seed), GRID_KEY + s)
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
