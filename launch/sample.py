"""Draw samples from a trained run: PNGs, a grid, optional attention maps.

python -m launch.sample --workdir=runs/agan --num_samples=64 --out=runs/agan/samples
python -m launch.sample --workdir=runs/agan --scale_w=1.5 --start_stage=1
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
_ATTN = flags.DEFINE_bool("attention", False, "Also save AGAN attention maps.")


def main(argv: list[str]) -> None:
    del argv
    import jax
    import numpy as np

    from agan_jax import checkpoint, image_io, sampling
    from agan_jax.errors import UserError

    if not _WORKDIR.value:
        raise UserError("--workdir is required: a trained run directory")
    run = checkpoint.load_run(_WORKDIR.value)
    out = _OUT.value or os.path.join(_WORKDIR.value, "samples")
    images, attns = sampling.sample(
        run,
        jax.random.key(_SEED.value),
        _NUM.value,
        start_stage=_START.value,
        scale=(_SCALE_H.value, _SCALE_W.value),
        batch_size=_BATCH.value,
        with_attention=True,
    )
    images = np.asarray(images)
    for i, im in enumerate(images):
        image_io.save_image(os.path.join(out, f"sample_{i:04d}.png"), im)
    image_io.save_grid(os.path.join(out, "grid.png"), images)
    if _ATTN.value:
        for s, a in zip(
            range(run.num_stages - len(attns), run.num_stages), attns, strict=True
        ):
            image_io.save_grid(
                os.path.join(out, f"attention_stage_{s:02d}.png"), np.asarray(a) * 2 - 1
            )
    h, w = images.shape[1:3]
    print(f"wrote {len(images)} samples of {h}x{w} and grid.png to {out}")


if __name__ == "__main__":
    common.run(main)
