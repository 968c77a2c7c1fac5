"""Fine-tune the last stage of a trained ConSinGAN run on a naive image.

  python -m launch.train --config=configs/consingan.py:harmonization \
      --config.data.image=data/scream.jpg --workdir=runs/scream_h
  python -m launch.finetune --workdir=runs/scream_h --naive=data/scream_naive.jpg
  python -m launch.harmonize --workdir=runs/scream_h_finetuned ...

Writes a new run directory (default WORKDIR_finetuned): a copy of the run whose
last stage's checkpoint is the fine-tuned one; the trained run stays as it was.
The new directory is locked while it is written (a second fine-tuning into it
exits 2 naming the first's pid) and removed again if fine-tuning fails. Exit
status: 0 done, 2 bad input or a diverged fine-tuning, 130 Ctrl-C.
"""

from __future__ import annotations

from absl import flags

from launch import common

_WORKDIR = flags.DEFINE_string("workdir", None, "A trained ConSinGAN run directory.")
_NAIVE = flags.DEFINE_string("naive", None, "The naive image (cut-and-paste).")
_ITERS = flags.DEFINE_integer("iters", 500, "Fine-tuning iterations.")
_OUT = flags.DEFINE_string(
    "out", None, "New run directory (default WORKDIR_finetuned)."
)
_QUIET = flags.DEFINE_bool("quiet", False, "No progress bar.")


def main(argv: list[str]) -> None:
    del argv
    from agan_jax.errors import UserError
    from agan_jax.train import finetune

    if not _WORKDIR.value or not _NAIVE.value:
        raise UserError("--workdir (a trained run) and --naive (an image) are required")
    from agan_jax.train import TrainingDiverged

    try:
        run = finetune.fine_tune(
            None,
            _WORKDIR.value,
            _NAIVE.value,
            iters=_ITERS.value,
            out_workdir=_OUT.value,
            progress=not _QUIET.value,
        )
    except TrainingDiverged as e:
        common.fail(str(e))
    print(f"fine-tuned run in {run.workdir}")


if __name__ == "__main__":
    common.run(main)
