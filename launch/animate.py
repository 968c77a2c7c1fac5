"""Animate a trained run: a random walk of the noise around the reconstruction.

python -m launch.animate --workdir=runs/lightning --frames=100 --fps=10 \
    --alpha=0.1 --beta=0.9 --start_stage=0 --out=out/animate

Writes animation.gif and frames.png (every tenth frame side by side). Stages below
--start_stage keep the reconstruction noise; alpha pulls the walk back to it, beta
keeps its velocity (SinGAN: alpha 0.1, beta 0.8..0.95).
"""

from __future__ import annotations

import os

from absl import flags

from launch import common

_WORKDIR = flags.DEFINE_string("workdir", None, "A trained run directory.")
_FRAMES = flags.DEFINE_integer("frames", 100, "Number of frames.")
_FPS = flags.DEFINE_float("fps", 10.0, "Frames per second of the GIF.")
_ALPHA = flags.DEFINE_float("alpha", 0.1, "Pull towards the reconstruction noise.")
_BETA = flags.DEFINE_float("beta", 0.9, "Momentum of the walk.")
_START = flags.DEFINE_integer("start_stage", 0, "First stage whose noise moves.")
_SEED = flags.DEFINE_integer("seed", 0, "Noise seed.")
_OUT = flags.DEFINE_string("out", None, "Output folder (default WORKDIR/animate).")


def main(argv: list[str]) -> None:
    del argv
    import jax
    from PIL import Image

    from agan_jax import applications, checkpoint, image_io, sampling
    from agan_jax.errors import UserError

    if not _WORKDIR.value:
        raise UserError("--workdir is required: a trained run directory")
    sampler = sampling.Sampler(checkpoint.load_run(_WORKDIR.value))
    frames = applications.animate(
        sampler,
        jax.random.key(_SEED.value),
        frames=_FRAMES.value,
        alpha=_ALPHA.value,
        beta=_BETA.value,
        start_stage=_START.value,
    )
    out = _OUT.value or os.path.join(_WORKDIR.value, "animate")
    path = os.path.join(out, "animation.gif")
    image_io.save_gif(path, frames, fps=_FPS.value)
    image_io.save_image(os.path.join(out, "frames.png"), image_io.strip(frames[::10]))
    with Image.open(path) as gif:
        stored = gif.n_frames
    h, w = frames.shape[1:3]
    print(f"wrote {len(frames)} frames of {h}x{w} to {path}")
    if stored != len(frames):
        print(
            f"note: the GIF stores {stored} frames: Pillow merged identical "
            "consecutive frames into longer ones (the playing time is unchanged)"
        )


if __name__ == "__main__":
    common.run(main)
