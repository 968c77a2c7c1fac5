"""Edit an image with a trained run: inject the edited image, blend through the mask.

python -m launch.edit --workdir=runs/stone --naive=data/stone_edit_1.png \
    --mask=data/stone_edit_1_mask.png --start_stage=3 --out=out/edit

Same flags and flow as launch.harmonize, with SinGAN's larger editing dilation.
Writes output_stageN.png (unmasked), edited_stageN.png (masked, blended into the
training image), soft_mask.png and, with --sweep, sweep.png.
"""

from __future__ import annotations

from launch import common, harmonize


def main(argv: list[str]) -> None:
    del argv
    harmonize.run_blend("edit")


if __name__ == "__main__":
    common.run(main)
