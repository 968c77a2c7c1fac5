"""Train a single-image GAN.

  python -m launch.train --config=configs/agan.py --workdir=runs/agan
  python -m launch.train --config=configs/singan.py:tiny --workdir=/tmp/t \
      --config.data.image=path/to/image.jpg --config.train.iters_per_stage=50

Re-running the same command in the same workdir resumes at the first unfinished
stage. One training at a time per workdir (WORKDIR/.lock); settings may change
until stage 0 is saved. Exit status: 0 trained (or nothing left to train), 2 bad
input, a locked or unwritable workdir, a failed save or a diverged stage (the
message says which stages are saved and what to change), 130 Ctrl-C.
"""

from __future__ import annotations

from absl import flags
from ml_collections import config_flags

from launch import common

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    "configs/agan.py",
    "Training config file (with :variant).",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Run directory (resumed if it holds a run)."
)
_STOP_AFTER = flags.DEFINE_integer(
    "stop_after_stage", None, "Stop after training this stage (resume later)."
)
_QUIET = flags.DEFINE_bool("quiet", False, "No progress bars.")


def main(argv: list[str]) -> None:
    del argv
    from agan_jax import train
    from agan_jax.errors import UserError

    if not _WORKDIR.value:
        raise UserError(
            "--workdir is required: the run directory, e.g. --workdir=runs/x"
        )
    try:
        train.train(
            _CONFIG.value,
            _WORKDIR.value,
            stop_after=_STOP_AFTER.value,
            progress=not _QUIET.value,
        )
    except train.TrainingDiverged as e:
        common.fail(str(e))
    print(f"trained run in {_WORKDIR.value}")


if __name__ == "__main__":
    common.run(main)
