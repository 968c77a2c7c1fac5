"""Harmonize a naive composite with a trained run (SinGAN harmonization).

python -m launch.harmonize --workdir=runs/scream --naive=data/scream_naive.jpg \
    --mask=data/scream_naive_mask.jpg --start_stage=3 --out=out/harmonize
python -m launch.harmonize --workdir=runs/scream --naive=... --mask=... --sweep

The naive image is injected at --start_stage (1..S-1), the output blended into the
training image through the dilated and blurred mask. Writes output_stageN.png (raw),
harmonized_stageN.png (blended), soft_mask.png and, with --sweep, sweep.png (the
naive image, then the blend of every stage side by side).
"""

from __future__ import annotations

import os

from absl import flags

from launch import common

_WORKDIR = flags.DEFINE_string("workdir", None, "A trained run directory.")
_NAIVE = flags.DEFINE_string("naive", None, "The naive (or edited) image file.")
_MASK = flags.DEFINE_string("mask", None, "Mask file: white where the image changed.")
_START = flags.DEFINE_integer("start_stage", None, "Injection stage n in [1, S-1].")
_SWEEP = flags.DEFINE_bool("sweep", False, "Inject at every stage 1..S-1.")
_SEED = flags.DEFINE_integer("seed", 0, "Noise seed.")
_OUT = flags.DEFINE_string("out", None, "Output folder (default WORKDIR/<mode>).")


def run_blend(mode: str) -> None:
    """The harmonization / editing launcher body; mode is 'harmonize' or 'edit'."""
    import jax

    from agan_jax import applications, checkpoint, image_io, sampling
    from agan_jax.errors import UserError

    recipe = applications.HARMONIZATION if mode == "harmonize" else applications.EDITING
    name = "harmonized" if mode == "harmonize" else "edited"
    for flag, value in (("workdir", _WORKDIR), ("naive", _NAIVE), ("mask", _MASK)):
        if not value.value:
            raise UserError(f"--{flag} is required")
    if _START.value is None and not _SWEEP.value:
        raise UserError("give --start_stage=N (1..S-1) or --sweep for every stage")
    sampler = sampling.Sampler(checkpoint.load_run(_WORKDIR.value))
    applications.check_complete(sampler)
    if _START.value is not None:
        applications.check_inject_stage(sampler, _START.value)
    naive, mask, notes = applications.load_naive_and_mask(
        sampler, _NAIVE.value, _MASK.value
    )
    for note in notes:
        print(note)
    out = _OUT.value or os.path.join(_WORKDIR.value, mode)
    key = jax.random.key(_SEED.value)
    if _SWEEP.value:
        results, strip = applications.sweep(sampler, naive, mask, key, recipe)
        image_io.save_image(os.path.join(out, "sweep.png"), strip)
    else:
        results = [applications.blend(sampler, naive, mask, _START.value, key, recipe)]
    for b in results:
        image_io.save_image(os.path.join(out, f"output_stage{b.stage}.png"), b.output)
        image_io.save_image(os.path.join(out, f"{name}_stage{b.stage}.png"), b.blended)
    image_io.save_image(os.path.join(out, "naive.png"), results[0].naive)
    image_io.save_image(
        os.path.join(out, "soft_mask.png"), results[0].soft_mask, value_range=(0, 1)
    )
    stages = ",".join(str(b.stage) for b in results)
    h, w = results[0].output.shape[:2]
    print(f"wrote {mode} results for stage(s) {stages} ({h}x{w}) to {out}")


def main(argv: list[str]) -> None:
    del argv
    run_blend("harmonize")


if __name__ == "__main__":
    common.run(main)
