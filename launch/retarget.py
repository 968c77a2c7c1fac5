"""Samples at several sizes (retargeting) in one grid image.

python -m launch.retarget --workdir=runs/agan_cpu --scales_h=1,2 --scales_w=1,1.5 \
    --out=out/retarget

Row i holds scale_h[i], column j scale_w[j] (each the output size over the training
size, every stage scaled alike). Writes grid.png and sample_HxW.png per cell. Every
size compiles once.
"""

from __future__ import annotations

import os

from absl import flags

from launch import common

_WORKDIR = flags.DEFINE_string("workdir", None, "A trained run directory.")
_SCALES_H = flags.DEFINE_list("scales_h", ["1", "2"], "Height scales (rows).")
_SCALES_W = flags.DEFINE_list("scales_w", ["1", "1.5"], "Width scales (columns).")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
_OUT = flags.DEFINE_string("out", None, "Output folder (default WORKDIR/retarget).")


def _floats(name: str, values: list[str]) -> list[float]:
    from agan_jax.errors import UserError

    try:
        return [float(v) for v in values]
    except ValueError as e:
        raise UserError(f"--{name} must be numbers separated by commas ({e})") from e


def main(argv: list[str]) -> None:
    del argv
    import jax

    from agan_jax import applications, checkpoint, image_io, sampling
    from agan_jax.errors import UserError

    if not _WORKDIR.value:
        raise UserError("--workdir is required: a trained run directory")
    sampler = sampling.Sampler(checkpoint.load_run(_WORKDIR.value))
    applications.check_complete(sampler)
    grid, samples = applications.retarget_grid(
        sampler,
        jax.random.key(_SEED.value),
        _floats("scales_h", _SCALES_H.value),
        _floats("scales_w", _SCALES_W.value),
    )
    out = _OUT.value or os.path.join(_WORKDIR.value, "retarget")
    image_io.save_image(os.path.join(out, "grid.png"), grid)
    for (sh, sw), img in samples.items():
        image_io.save_image(os.path.join(out, f"sample_{sh:g}x{sw:g}.png"), img)
    print(f"wrote a {len(samples)}-cell retargeting grid to {out}/grid.png")


if __name__ == "__main__":
    common.run(main)
