"""Draw samples from a trained run, streamed to disk: PNGs (or one .npy), a grid
of the first 64, optional attention maps.

python -m launch.sample --workdir=runs/agan --num_samples=64 --out=runs/agan/samples
python -m launch.sample --workdir=runs/agan --scale_w=1.5 --start_stage=1
python -m launch.sample --workdir=runs/agan --num_samples=100000 --format=npy

Samples are written batch by batch as they are drawn (memory does not grow with
--num_samples), each file whole (written under a temporary name, then renamed).
Sample i depends only on --seed and i, so a re-run of the same command continues
where a killed one stopped; the folder's manifest.json refuses another seed, run,
start stage, scale or format (use another --out, or --overwrite). An unfinished
run is refused unless --allow_partial.
"""

from __future__ import annotations

import os

from absl import flags

from launch import common

_WORKDIR = flags.DEFINE_string("workdir", None, "A trained run directory.")
_NUM = flags.DEFINE_integer("num_samples", 16, "Number of samples.")
_START = flags.DEFINE_integer("start_stage", 0, "First stage that gets fresh noise.")
_SCALE_H = flags.DEFINE_float("scale_h", 1.0, "Output height / training height.")
_SCALE_W = flags.DEFINE_float("scale_w", 1.0, "Output width / training width.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
_OUT = flags.DEFINE_string("out", None, "Output folder (default WORKDIR/samples).")
_BATCH = flags.DEFINE_integer(
    "batch_size", 0, "Samples per vmap'd call (0: 4 on CPU, 256 on accelerators)."
)
_ATTN = flags.DEFINE_bool(
    "attention", False, "Also save AGAN attention maps (of the first 64 samples)."
)
_FORMAT = flags.DEFINE_enum(
    "format",
    "png",
    ["png", "npy"],
    "png: sample_%06d.png files; npy: one uint8 (N, h, w, 3) samples.npy.",
)
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "Replace the samples another request left in --out."
)
_PARTIAL = flags.DEFINE_bool(
    "allow_partial", False, "Sample an unfinished run from the stages it has."
)
_QUIET = flags.DEFINE_bool("quiet", False, "No progress bar.")


def main(argv: list[str]) -> None:
    del argv
    from agan_jax import checkpoint, sampling, streaming
    from agan_jax.errors import UserError

    if not _WORKDIR.value:
        raise UserError("--workdir is required: a trained run directory")
    out = _OUT.value or os.path.join(_WORKDIR.value, "samples")
    streaming.check_out(out)
    run = checkpoint.load_run(_WORKDIR.value)
    total = len(run.sizes)
    if run.num_stages < total and not _PARTIAL.value:
        raise UserError(
            f"{_WORKDIR.value} has {run.num_stages} of {total} stages trained; finish "
            "training first (re-run python -m launch.train with the same --workdir), "
            f"or pass --allow_partial to sample the {run.num_stages} saved stage(s)"
        )
    result = streaming.write_samples(
        sampling.Sampler(run),
        _SEED.value,
        _NUM.value,
        out,
        start_stage=_START.value,
        scale=(_SCALE_H.value, _SCALE_W.value),
        batch_size=_BATCH.value,
        fmt=_FORMAT.value,
        attention=_ATTN.value,
        overwrite=_OVERWRITE.value,
        progress=not _QUIET.value,
    )
    h, w = result.size
    rate = result.drawn / result.seconds if result.seconds > 0 else 0.0
    print(
        f"wrote {result.drawn} new samples of {h}x{w} ({result.total} in all) and "
        f"grid.png to {out} in {result.seconds:.1f} s ({rate:.1f} samples/s)"
    )


if __name__ == "__main__":
    common.run(main)
