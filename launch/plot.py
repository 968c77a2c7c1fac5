"""Redraw the loss plots of one run, or of several runs overlaid, from metrics.jsonl.

python -m launch.plot --workdir=runs/agan          # -> runs/agan/plots/losses.png
python -m launch.plot --workdir=runs/singan,runs/agan --out=runs/losses.png
python -m launch.plot --workdir=runs/singan --workdir=runs/agan --out=cmp.png

Works on finished and running runs (training redraws RUN/plots/losses.png after
its stages and at its end). One panel per loss, stages side by side along x,
one colour per run.
"""

from __future__ import annotations

from absl import flags

from launch import common

_WORKDIR = flags.DEFINE_multi_string(
    "workdir", None, "Run directories (comma-separated, or the flag repeated)."
)
_OUT = flags.DEFINE_string(
    "out", None, "PNG to write (default WORKDIR/plots/losses.png for one run)."
)
_LABELS = flags.DEFINE_list(
    "labels", None, "Legend names of the runs (default: their directory names)."
)


def main(argv: list[str]) -> None:
    del argv
    from agan_jax import plots
    from agan_jax.errors import UserError

    workdirs = [w for value in _WORKDIR.value or [] for w in value.split(",") if w]
    if not workdirs:
        raise UserError("--workdir is required: a run directory, e.g. runs/agan")
    if _LABELS.value and len(_LABELS.value) != len(workdirs):
        raise UserError(
            f"--labels names {len(_LABELS.value)} runs but --workdir gives "
            f"{len(workdirs)}; give one label per run"
        )
    path = plots.write_losses(workdirs, _OUT.value, labels=_LABELS.value)
    print(f"wrote {path}")


if __name__ == "__main__":
    common.run(main)
