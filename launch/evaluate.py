"""Evaluate trained runs of one image: metrics table, evaluation.json, contact sheet.

python -m launch.evaluate --workdirs=runs/singan,runs/agan --num_samples=50 \
    --out=runs/eval [--inception_weights=inception_v3.pth] [--seed=0] \
    [--samples=official_singan=path/to/its/samples]

Writes OUT/evaluation.json (every value, per-sample SIFIDs), OUT/table.md and
OUT/contact_sheet.png (a row per run: training image, then its first samples),
and prints the markdown table. See docs/evaluation.md.

python -m launch.evaluate --workdirs=runs/agan --per_stage --out=runs/diag
    [--num_samples=16]
prints and writes instead a table per run, one row per trained stage (sample std
against the real image's, mean attention, noise amplitude, reconstruction RMSE):
OUT/per_stage.md and OUT/per_stage.json (agan_jax/diagnostics.py).
"""

from __future__ import annotations

import os

from absl import flags

from launch import common

_WORKDIRS = flags.DEFINE_list(
    "workdirs", None, "Trained run directories, comma-separated."
)
_NUM = flags.DEFINE_integer("num_samples", 50, "Samples per run (at least 2).")
_OUT = flags.DEFINE_string("out", None, "Output folder.")
_WEIGHTS = flags.DEFINE_string(
    "inception_weights",
    None,
    "torchvision Inception-v3 state dict (.pth) or .npz of it; enables SIFID.",
)
_SEED = flags.DEFINE_integer("seed", 0, "Sampling and SWD-projection seed.")
_K = flags.DEFINE_integer("sheet_samples", 8, "Samples per row of the contact sheet.")
_SAMPLES = flags.DEFINE_multi_string(
    "samples",
    [],
    "LABEL=DIR: a folder of samples from another program (e.g. the official "
    "SinGAN's) or of launch.sample, at the training size, evaluated against the "
    "first run's training image as the row LABEL. Read: the .png/.jpg files named "
    "by a number (sample_000000.png, 0.png, gen_sample_0.png); grid.png, "
    "manifest.json and other files are ignored. Every folder is checked before "
    "any run is sampled. Repeatable.",
)
_PER_STAGE = flags.DEFINE_bool(
    "per_stage",
    False,
    "Instead of the metrics: per-stage diagnostics of every run (sample std vs the "
    "real image's at each stage, mean attention C, noise amplitude, reconstruction "
    "RMSE), printed and written to OUT/per_stage.md and OUT/per_stage.json.",
)


def main(argv: list[str]) -> None:
    del argv
    from agan_jax import evaluation
    from agan_jax.errors import UserError

    if not _WORKDIRS.value:
        raise UserError(
            "--workdirs is required: trained run directories, comma-separated"
        )
    if not _OUT.value:
        raise UserError(
            "--out is required: the folder for evaluation.json and the sheet"
        )
    evaluation.check_out_dir(_OUT.value, make=False)  # before any work
    if _PER_STAGE.value:
        from agan_jax import diagnostics

        if _SAMPLES.value:
            raise UserError("--samples is not used with --per_stage; drop one")
        print(
            diagnostics.write_per_stage(
                _WORKDIRS.value, _OUT.value, num_samples=_NUM.value, seed=_SEED.value
            )
        )
        print(
            f"\nwrote per_stage.md and per_stage.json to {os.path.abspath(_OUT.value)}"
        )
        return
    pairs = []
    for item in _SAMPLES.value:
        label, sep, folder = item.partition("=")
        if not sep or not label or not folder:
            raise UserError(f"--samples={item!r}: give LABEL=DIR, e.g. official=out/s")
        pairs.append((label, folder))
    # The labels and folders are checked (evaluation.load_sample_dirs) before any
    # run is sampled.
    evals, table = evaluation.evaluate_to_dir(
        _WORKDIRS.value,
        _OUT.value,
        num_samples=_NUM.value,
        seed=_SEED.value,
        inception_weights=_WEIGHTS.value,
        k=_K.value,
        sample_dirs=pairs,
    )
    print(table)
    rows = ", ".join(f"{i + 1} {e.row['run']}" for i, e in enumerate(evals))
    print(
        f"\nwrote evaluation.json, table.md and contact_sheet.png (rows: {rows}) "
        f"to {os.path.abspath(_OUT.value)}"
    )


if __name__ == "__main__":
    common.run(main)
