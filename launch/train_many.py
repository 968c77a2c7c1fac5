"""Train one model per image of a folder, images of one size as one program.

  python -m launch.train_many --images=../shared/images --workdir=runs/set \
      --config=configs/agan.py --config.data.fit=48x64
  python -m launch.train_many --images='photos/*.jpg' --workdir=runs/set \
      --config=configs/singan.py:tiny

Each image trains into WORKDIR/<image stem>/, an ordinary run directory that
launch.sample, launch.evaluate and every application read. Images whose
pyramids have the same stage sizes train together: one compiled program per
stage for up to train.models_per_call models (0: auto), sharded over this
process's devices; `--config.data.fit=HxW` gives every image that size, so the
whole folder is one group. Model i of a group equals its image trained alone by
launch.train with the same seed.

Re-running the same command resumes every image at its first unfinished stage
and skips finished ones. An unusable image is reported and skipped (listed with
its reason in WORKDIR/summary.json); the rest train. A finished run keeps its
directory: an image added later whose stem is taken trains into
<file name>_<ext> (noted in summary.json). Exit status: 0 (every usable image
trained), 1 (an image failed or was skipped), 2 (bad flags, no usable image, or
the workdir in use by another train_many, whose pid the message names), 130
Ctrl-C.

Several hosts: start the same command on every host with --num_processes=N
--process_id=I (or --distributed under srun or mpirun, which set both); each
process trains every N-th image on its own devices into the shared workdir
(docs/many.md). The processes share nothing but the workdir.
"""

from __future__ import annotations

import sys

from absl import flags
from ml_collections import config_flags

from launch import common

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    "configs/agan.py",
    "Training config file (with :variant).",
    lock_config=True,
)
_IMAGES = flags.DEFINE_string(
    "images", None, "A folder of images, a glob, or a comma-separated list."
)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Folder of the runs (one per image); resumed if it holds some."
)
_STOP_AFTER = flags.DEFINE_integer(
    "stop_after_stage", None, "Stop after training this stage (resume later)."
)
_QUIET = flags.DEFINE_bool("quiet", False, "No progress bars.")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", 1, "Processes splitting the folder (one per host)."
)
_PROCESS_ID = flags.DEFINE_integer("process_id", 0, "This process's index.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed",
    False,
    "Take the process id and count from srun (SLURM_PROCID, SLURM_NTASKS) or "
    "mpirun (OMPI_COMM_WORLD_*, PMI_*).",
)


def main(argv: list[str]) -> None:
    del argv
    from agan_jax.errors import UserError
    from agan_jax.train import many

    if not _IMAGES.value or not _WORKDIR.value:
        raise UserError(
            "--images and --workdir are required, e.g. --images=photos/ "
            "--workdir=runs/set"
        )
    if _DISTRIBUTED.value:
        process = many.process_from_environment()
    else:
        process = many.Process(_PROCESS_ID.value, _NUM_PROCESSES.value)
    entries = many.train_many(
        _CONFIG.value,
        _IMAGES.value,
        _WORKDIR.value,
        stop_after=_STOP_AFTER.value,
        progress=not _QUIET.value,
        process=process,
    )
    counts = {}
    for e in entries:
        counts[e.status] = counts.get(e.status, 0) + 1
    print(
        f"{_WORKDIR.value}: "
        + ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    )
    if counts.get("skipped") or counts.get("failed"):
        sys.exit(1)


if __name__ == "__main__":
    common.run(main)
