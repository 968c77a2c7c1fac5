"""Write a run's one-page HTML report: RUN/report.html.

python -m launch.report --workdir=runs/agan
python -m launch.report --workdir=runs/agan --evaluation=runs/eval/evaluation.json

The page (self-contained, images inline) shows the run's method and image, its
evaluation row when launch.evaluate or launch.compare evaluated it, stage sizes
and timings, the loss plots, --num_samples samples, the stage grids, attention
maps and reconstructions written during training, and the config. Works on a run
still training (its finished stages).
"""

from __future__ import annotations

from absl import flags

from launch import common

_WORKDIR = flags.DEFINE_string("workdir", None, "A run directory.")
_OUT = flags.DEFINE_string("out", None, "Page to write (default WORKDIR/report.html).")
_NUM = flags.DEFINE_integer("num_samples", 16, "Samples shown.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
_EVAL = flags.DEFINE_list(
    "evaluation",
    None,
    "evaluation.json files to look in first (default: the run's directory, its "
    "parent and their subdirectories).",
)


def main(argv: list[str]) -> None:
    del argv
    from agan_jax import report
    from agan_jax.errors import UserError

    if not _WORKDIR.value:
        raise UserError("--workdir is required: a run directory, e.g. runs/agan")
    if _NUM.value < 1:
        raise UserError(f"--num_samples must be at least 1, got {_NUM.value}")
    path = report.write_run_report(
        _WORKDIR.value,
        _OUT.value,
        num_samples=_NUM.value,
        seed=_SEED.value,
        evaluation_paths=_EVAL.value or (),
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    common.run(main)
