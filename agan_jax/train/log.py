"""What training writes beside its checkpoints: metrics.jsonl and stage grids.

After each stage (with `train.stage_samples` > 0) `stages/` gets the stage's
sample grid (the training image first), AGAN's attention maps and the
reconstruction of the training image (real | reconstruction), each upscaled by
nearest neighbour so a cell is at least `MIN_CELL` px high; the same images go to
the run's metric writer (TensorBoard).
"""

from __future__ import annotations

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np

from agan_jax import image_io
from agan_jax.forward import pyramid_forward, rec_noises
from agan_jax.sampling import default_batch_size, in_batches, stream_keys

# Smallest cell height of a picture meant to be looked at (px): grids of 25-64 px
# stages are upscaled by an integer factor, nearest neighbour.
MIN_CELL = 128


def append_jsonl(path: str, record: dict) -> None:
    """Appends one JSON line."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def drop_records(path: str, first_stage: int) -> int:
    """Removes from a metrics.jsonl the records of stages >= `first_stage` (the
    stages a resume trains again: a killed attempt's records of them would
    otherwise appear twice) and a last line cut short by a kill. Rewrites the
    file (atomically) only when something goes; returns the lines dropped."""
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        lines = f.readlines()
    keep = []
    for line in lines:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not line.endswith("\n"):
            continue  # the last line of a killed write
        stage = rec.get("stage") if isinstance(rec, dict) else None
        if isinstance(stage, int) and stage >= first_stage:
            continue
        keep.append(line)
    dropped = len(lines) - len(keep)
    if dropped:
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(keep)
        os.replace(tmp, path)
    return dropped


def cell_factor(height: int, min_cell: int = MIN_CELL) -> int:
    """The integer factor that makes a `height` px cell at least `min_cell` high."""
    return max(1, math.ceil(min_cell / max(1, int(height))))


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """HWC (or HW) image `factor` times larger, nearest neighbour."""
    x = np.asarray(image)
    return x.repeat(factor, axis=0).repeat(factor, axis=1) if factor > 1 else x


def visible_grid(images, ncols: int | None = None, min_cell: int = MIN_CELL):
    """`image_io.make_grid` of NHWC images, upscaled so cells are >= min_cell high."""
    images = np.asarray(images, np.float32)
    grid = image_io.make_grid(images, ncols=ncols)
    return upscale(grid, cell_factor(images.shape[1], min_cell))


def stage_image_names(stage: int) -> dict[str, str]:
    """File names in stages/ of one stage's pictures, by kind."""
    return {
        "samples": f"stage_{stage:02d}.png",
        "attention": f"stage_{stage:02d}_attention.png",
        "reconstruction": f"stage_{stage:02d}_reconstruction.png",
    }


def make_reconstructor(spec, sizes, stop: int):
    """f(variables 0..stop-1, amps, z_rec) -> the reconstruction of the training
    image at stage stop-1 (as `Sampler.reconstruct`, for a run still training)."""

    def reconstruct(variables, amps, z_rec):
        noises = rec_noises(spec, z_rec, sizes, stop)
        out, _ = pyramid_forward(spec, variables, sizes, amps, noises, None, 0, stop)
        return out

    return reconstruct


# fold_in constant of the stage grids' sampling keys (from the run's seed).
GRID_KEY = 20_000


def grid_batch(n: int) -> int:
    """Samples per call of a stage grid's sampler (compiled for this many keys;
    write_stage_images calls it in turns): 1 on CPU, where a grid is drawn for
    peak memory, not speed (calls of 4 samples raised ConSinGAN's peak RSS, calls
    of 1 did not, at about the same samples/s: docs/performance.md); up to
    `default_batch_size()` elsewhere."""
    return min(n, 1 if jax.default_backend() == "cpu" else default_batch_size())


def write_stage_images(
    sampler,
    n: int,
    seed: int,
    g_vars,
    amps,
    workdir: str,
    s,
    real,
    writer=None,
    reconstruction=None,
    step: int = 0,
):
    """A grid of n samples after stage s (real image first), attention maps and
    (given) the reconstruction, in stages/ and to `writer` (a MetricWriter) at
    `step`; every picture upscaled to cells of at least MIN_CELL px."""
    key = jax.random.fold_in(jax.random.key(seed), GRID_KEY + s)
    keys = stream_keys(key, np.arange(n))
    base = jnp.zeros((1, 1, 3), jnp.float32)
    args = (tuple(g_vars), jnp.asarray(amps, jnp.float32), base)
    images, attns = in_batches(sampler, keys, grid_batch(n), *args)
    images = np.asarray(images)
    real = np.asarray(real, np.float32)
    pictures = {"samples": visible_grid(np.concatenate([real[None], images]))}
    if attns:
        pictures["attention"] = visible_grid(np.asarray(attns[-1]) * 2.0 - 1.0)
    if reconstruction is not None:
        rec = np.clip(np.asarray(reconstruction, np.float32), -1.0, 1.0)
        pictures["reconstruction"] = visible_grid(np.stack([real, rec]), ncols=2)
    names = stage_image_names(s)
    for kind, picture in pictures.items():
        image_io.save_image(os.path.join(workdir, "stages", names[kind]), picture)
        if writer is not None:
            writer.image(s, step, kind, picture)
