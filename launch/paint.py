"""Paint-to-image: inject a paint into a trained run.

python -m launch.paint --workdir=runs/stone --paint=data/stone_paint.png \
    --start_stage=2 --quantize --out=out/paint

The paint is resized to the training size, optionally quantised to the training
image's 5-colour k-means palette (--quantize), and injected at --start_stage.
Writes paint.png (as injected), output.png and, with --quantize, palette.png.
"""

from __future__ import annotations

import os

from absl import flags

from launch import common

_WORKDIR = flags.DEFINE_string("workdir", None, "A trained run directory.")
_PAINT = flags.DEFINE_string("paint", None, "The paint image file.")
_START = flags.DEFINE_integer("start_stage", 1, "Injection stage n in [1, S-1].")
_QUANTIZE = flags.DEFINE_bool("quantize", False, "Quantise to the 5-colour palette.")
_SEED = flags.DEFINE_integer("seed", 0, "Noise seed.")
_OUT = flags.DEFINE_string("out", None, "Output folder (default WORKDIR/paint).")


def main(argv: list[str]) -> None:
    del argv
    import jax
    import numpy as np

    from agan_jax import applications, checkpoint, image_io, sampling
    from agan_jax.errors import UserError

    if not _WORKDIR.value or not _PAINT.value:
        raise UserError("--workdir and --paint are required")
    sampler = sampling.Sampler(checkpoint.load_run(_WORKDIR.value))
    applications.check_complete(sampler)
    applications.check_inject_stage(sampler, _START.value)
    paint = image_io.load_image(_PAINT.value, flag="--paint")
    result = applications.paint_to_image(
        sampler,
        paint,
        _START.value,
        jax.random.key(_SEED.value),
        quantize=_QUANTIZE.value,
    )
    out = _OUT.value or os.path.join(_WORKDIR.value, "paint")
    image_io.save_image(os.path.join(out, "paint.png"), result.paint)
    image_io.save_image(os.path.join(out, "output.png"), result.output)
    if result.palette is not None:
        swatch = np.repeat(np.repeat(result.palette[None], 16, 0), 16, 1)
        image_io.save_image(os.path.join(out, "palette.png"), swatch)
    h, w = result.output.shape[:2]
    print(f"wrote paint-to-image output ({h}x{w}, stage {_START.value}) to {out}")


if __name__ == "__main__":
    common.run(main)
