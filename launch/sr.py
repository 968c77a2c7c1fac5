"""Super-resolution with the finest generator of a trained run (SinGAN SR).

python -m launch.sr --workdir=runs/agan_cpu --factor=4 --out=out/sr

Upsamples the training image (or --image) by the finest stage's scale factor and
applies the finest generator, repeatedly, to exactly round(factor x size). Writes
sr.png, input.png and bicubic.png (the plain bicubic upsampling, for comparison).
"""

from __future__ import annotations

import os

from absl import flags

from launch import common

_WORKDIR = flags.DEFINE_string("workdir", None, "A trained run directory.")
_FACTOR = flags.DEFINE_float("factor", 4.0, "Upsampling factor, in (1, 16].")
_IMAGE = flags.DEFINE_string("image", None, "Input image (default: training image).")
_NOISE = flags.DEFINE_float("noise_scale", 1.0, "Noise x finest amplitude (0: none).")
_SEED = flags.DEFINE_integer("seed", 0, "Noise seed.")
_OUT = flags.DEFINE_string("out", None, "Output folder (default WORKDIR/sr).")


def main(argv: list[str]) -> None:
    del argv
    import jax
    import numpy as np

    from agan_jax import applications, checkpoint, image_io, pyramid, sampling
    from agan_jax.errors import UserError

    if not _WORKDIR.value:
        raise UserError("--workdir is required: a trained run directory")
    sampler = sampling.Sampler(checkpoint.load_run(_WORKDIR.value))
    image = image_io.load_image(_IMAGE.value, flag="--image") if _IMAGE.value else None
    result = applications.super_resolve(
        sampler,
        _FACTOR.value,
        jax.random.key(_SEED.value),
        image=image,
        noise_scale=_NOISE.value,
    )
    x = np.asarray(sampler.run.real) if image is None else image
    out = _OUT.value or os.path.join(_WORKDIR.value, "sr")
    h, w = result.output.shape[:2]
    image_io.save_image(os.path.join(out, "sr.png"), result.output)
    image_io.save_image(os.path.join(out, "input.png"), x)
    bicubic = np.clip(np.asarray(pyramid.resize(x, (h, w))), -1, 1)
    image_io.save_image(os.path.join(out, "bicubic.png"), bicubic)
    print(
        f"wrote {h}x{w} super-resolution of {x.shape[0]}x{x.shape[1]} "
        f"({len(result.sizes)} steps) to {out}"
    )


if __name__ == "__main__":
    common.run(main)
