"""Evaluate trained runs: sample once, compute every metric, tabulate, contact sheet.

One row per run (a JSON-ready dict, see `evaluate_samples`): the method (from
run.json's kind and schedule), its stage count, the training time read from the
run's metrics.jsonl, and the metrics of `agan_jax.metrics` computed on
`num_samples` samples drawn in one vmap'd call, each against the run's training
image: patch SWD, pixel diversity, contrast, saturation, SSIM, RMSE (means over
the samples) and, when Inception weights are given, SIFID (mean, median, std over
the samples).

Runs evaluated together must be of the same training image (run.json
`image_hash`); `evaluate_runs` refuses others, naming the runs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from agan_jax import checkpoint, image_io, metrics, sampling
from agan_jax.errors import UserError
from agan_jax.models import families
from agan_jax.run import Run

SWD_PATCH = 7
SWD_MAX_LEVELS = 3
SIFID_LAYER = 64

# (header, row key, format) of the markdown table.
TABLE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("run", "run"),
    ("method", "method"),
    ("schedule", "schedule"),
    ("stages", "stages"),
    ("train time", "train_seconds"),
    ("SWD ↓", "swd"),
    ("diversity", "diversity"),
    ("contrast", "contrast"),
    ("saturation", "saturation"),
    ("SSIM", "ssim"),
    ("RMSE", "rmse"),
    ("SIFID ↓", "sifid"),
)


def method_name(meta: dict) -> str:
    """The paper's name of a run: SinGAN, AGAN(1|2|3) by schedule, ConSinGAN."""
    kind = str(meta.get("kind", "?"))
    if kind not in families.FAMILIES:
        return kind
    return families.get(kind).display_name(str(meta.get("schedule", "")))


def read_train_seconds(workdir: str) -> float | None:
    """Training wall time of a run from its metrics.jsonl; None without records.

    The log is split at `run_done` records (one per train invocation). A finished
    invocation counts its `run_done` seconds, or the sum of its stages' `stage_s`
    when that is larger (an interrupted invocation whose stages were logged before
    the resume that closed the segment). Stages logged after the last `run_done`
    (a run still training, or killed) count their `stage_s`. A resume that finds
    every stage done adds about 0 s.
    """
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return None
    total, segment, seen = 0.0, 0.0, False
    with open(path) as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
            event = rec.get("event")
            if event == "stage_done":
                segment += float(rec.get("stage_s", 0.0))
                seen = True
            elif event == "run_done":
                total += max(float(rec.get("seconds", 0.0)), segment)
                segment = 0.0
                seen = True
    return total + segment if seen else None


def format_seconds(seconds: float | None) -> str:
    """'-', '42 s', '12.3 min' or '1.50 h'."""
    if seconds is None:
        return "-"
    if seconds < 100:
        return f"{seconds:.0f} s"
    if seconds < 6000:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def swd_levels(hw: tuple[int, int], patch: int = SWD_PATCH) -> int:
    """Pyramid levels for patch SWD: up to 3, while the coarsest keeps a patch."""
    levels = 1
    while levels < SWD_MAX_LEVELS and min(hw) >> levels >= patch:
        levels += 1
    return levels


def read_meta(workdir: str) -> dict:
    """A run directory's run.json (UserError when it holds no run)."""
    store = checkpoint.RunStore(workdir)
    return store.read_metadata()


def load_finished_run(workdir: str) -> Run:
    """Loads a run whose every stage is trained; UserError otherwise."""
    run = checkpoint.load_run(workdir)
    total = int(run.meta.get("num_stages", run.num_stages))
    if run.num_stages < total:
        raise UserError(
            f"{workdir} has {run.num_stages} of {total} stages trained; finish it "
            "first (re-run its train command with the same --workdir to resume)"
        )
    if run.real is None:
        raise UserError(
            f"{workdir} holds no training image (real.npy missing); re-train the run"
        )
    return run


def draw_samples(run: Run, num_samples: int, key: jax.Array) -> np.ndarray:
    """`num_samples` samples (N, H, W, 3) in one vmap'd call, clipped to [-1, 1]."""
    if num_samples < 2:
        raise UserError(
            f"--num_samples must be at least 2 (pixel diversity needs 2), got "
            f"{num_samples}"
        )
    images = sampling.sample(run, key, num_samples)
    return np.clip(np.asarray(images, np.float32), -1.0, 1.0)


def evaluate_samples(
    run: Run,
    samples: np.ndarray,
    inception_params: Any = None,
    swd_seed: int = 0,
) -> dict[str, Any]:
    """Every metric of `samples` (N, H, W, 3) against the run's training image.

    Returns a JSON-ready row: workdir, run (directory name), method, kind,
    schedule, stages, image_hash, image_size, num_samples, train_seconds (None if
    unknown), swd (+ swd_levels, swd_seed), diversity, contrast, saturation (None
    for a grey training image), ssim, rmse, and sifid
    (`metrics.summarize` of the per-sample values at layer 64, or None).
    """
    real = np.asarray(run.real, np.float32)
    samples = np.asarray(samples, np.float32)
    if samples.shape[1:] != real.shape:
        raise UserError(
            f"samples of {run.workdir} are {samples.shape[1:3]} but its training "
            f"image is {real.shape[:2]}; evaluate fully trained runs at scale 1"
        )
    meta = run.meta or {}
    workdir = run.workdir or ""
    levels = swd_levels(real.shape[:2])
    row: dict[str, Any] = {
        "workdir": workdir,
        "run": os.path.basename(os.path.normpath(workdir)) if workdir else "",
        "method": method_name(meta),
        "kind": meta.get("kind"),
        "schedule": meta.get("schedule"),
        "stages": run.num_stages,
        "image_hash": meta.get("image_hash"),
        "image_path": meta.get("image_path"),
        "image_size": [int(real.shape[0]), int(real.shape[1])],
        "num_samples": int(samples.shape[0]),
        "train_seconds": read_train_seconds(workdir) if workdir else None,
        "swd": metrics.patch_swd(
            real, samples, swd_seed, patch=SWD_PATCH, levels=levels
        ),
        "swd_levels": levels,
        "swd_seed": int(swd_seed),
        "diversity": metrics.pixel_diversity(samples, real),
        "contrast": metrics.contrast(samples, real),
        "saturation": metrics.saturation(samples, real),
        "ssim": metrics.ssim(samples, real),
        "rmse": metrics.rmse(samples, real),
        "sifid": None,
        "sifid_layer": None,
    }
    if inception_params is not None:
        values = metrics.sifid(real, samples, inception_params, layer=SIFID_LAYER)
        row["sifid"] = metrics.summarize(values)
        row["sifid_layer"] = SIFID_LAYER
    return row


def evaluate_run(
    run: Run,
    num_samples: int,
    key: jax.Array,
    inception_params: Any = None,
    swd_seed: int = 0,
) -> dict[str, Any]:
    """Samples `run` once (one vmap) and returns its row (see `evaluate_samples`)."""
    samples = draw_samples(run, num_samples, key)
    return evaluate_samples(run, samples, inception_params, swd_seed)


def check_same_image(metas: Sequence[tuple[str, dict]]) -> None:
    """UserError unless every (workdir, run.json) shares one image_hash."""
    groups: dict[str, list[str]] = {}
    paths: dict[str, str] = {}
    for workdir, meta in metas:
        h = str(meta.get("image_hash"))
        groups.setdefault(h, []).append(workdir)
        paths.setdefault(h, str(meta.get("image_path", "?")))
    if len(groups) > 1:
        parts = [
            f"{', '.join(dirs)} (image {paths[h]}, hash {h[:12]})"
            for h, dirs in groups.items()
        ]
        raise UserError(
            "runs of different training images cannot share one table: "
            + "; ".join(parts)
            + ". Evaluate each image's runs separately"
        )


@dataclasses.dataclass
class RunEvaluation:
    """One evaluated run: its row, the loaded run and the samples drawn."""

    row: dict[str, Any]
    run: Run
    samples: np.ndarray


def evaluate_runs(
    workdirs: Sequence[str],
    num_samples: int,
    key: jax.Array,
    inception_params: Any = None,
    swd_seed: int = 0,
) -> list[RunEvaluation]:
    """Evaluates runs of one image; every run is sampled with the same `key`.

    The run.json files are checked first (same image, see `check_same_image`),
    before any checkpoint is loaded.
    """
    if not workdirs:
        raise UserError("no run directories given; pass --workdirs=run1,run2")
    check_same_image([(w, read_meta(w)) for w in workdirs])
    runs = [load_finished_run(w) for w in workdirs]
    out = []
    for run in runs:
        samples = draw_samples(run, num_samples, key)
        row = evaluate_samples(run, samples, inception_params, swd_seed)
        out.append(RunEvaluation(row, run, samples))
    return out


# A sample image of a folder: a PNG or JPEG whose name is a number or ends in
# "_" and a number (sample_000000.png of launch.sample, 0.png of official SinGAN's
# random_samples.py, gen_sample_0.png of official ConSinGAN).
_SAMPLE_NAME = re.compile(r"^(?:.*_)?(\d+)\.(?:png|jpe?g)$", re.IGNORECASE)


def sample_files(folder: str) -> list[str]:
    """The sample images of `folder` (see `_SAMPLE_NAME`), in the order of their
    numbers; every other file (grid.png, manifest.json, ...) is ignored."""
    if not os.path.isdir(folder):
        raise UserError(
            f"sample folder not found: {folder}; pass a folder of sample images"
        )
    found = []
    for name in os.listdir(folder):
        m = _SAMPLE_NAME.match(name)
        if m and os.path.isfile(os.path.join(folder, name)):
            found.append((int(m.group(1)), name))
    return [name for _, name in sorted(found)]


def load_sample_dir(folder: str, hw: tuple[int, int]) -> np.ndarray:
    """The sample images of `folder` (`sample_files`) as (N, H, W, 3) in [-1, 1];
    a UserError when there are fewer than 2 or one has another size than hw."""
    names = sample_files(folder)
    if len(names) < 2:
        raise UserError(
            f"{folder} holds {len(names)} sample images; diversity needs >= 2 "
            "(read: .png/.jpg files named by a number, e.g. sample_000000.png or 0.png)"
        )
    images = [image_io.load_image(os.path.join(folder, n)) for n in names]
    bad = [n for n, im in zip(names, images, strict=True) if im.shape[:2] != hw]
    if bad:
        raise UserError(
            f"{len(bad)} images in {folder} (e.g. {bad[0]}) are not {hw[0]}x{hw[1]}, "
            "the training image's size; evaluate samples drawn at that size"
        )
    return np.stack(images)


def load_sample_dirs(
    sample_dirs: Sequence[tuple[str, str]], hw: tuple[int, int]
) -> list[np.ndarray]:
    """Every (label, folder) pair's samples (`load_sample_dir`), checked together
    before any run is sampled: labels must be distinct and not empty."""
    labels = [label for label, _ in sample_dirs]
    if any(not label for label in labels) or len(set(labels)) != len(labels):
        raise UserError(
            f"--samples labels must be distinct and not empty, got {labels}; "
            "name each folder's row differently"
        )
    return [load_sample_dir(folder, hw) for _, folder in sample_dirs]


def evaluate_sample_dir(
    run: Run,
    label: str,
    folder: str,
    inception_params: Any = None,
    swd_seed: int = 0,
    samples: np.ndarray | None = None,
) -> RunEvaluation:
    """Samples written by another program (a folder of images of the training
    image's size, `load_sample_dir`; or `samples` already loaded from it)
    evaluated against `run`'s training image, as a row whose `run` is `label`
    (e.g. the official SinGAN's samples of the same image)."""
    real = np.asarray(run.real, np.float32)
    if samples is None:
        samples = load_sample_dir(folder, real.shape[:2])
    row = evaluate_samples(run, samples, inception_params, swd_seed)
    row.update(
        workdir=os.path.abspath(folder),
        run=label,
        method="samples",
        kind=None,
        schedule=None,
        stages=None,
        train_seconds=None,
    )
    return RunEvaluation(row, run, samples)


def _cell(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if key == "train_seconds":
        return format_seconds(value)
    if key == "sifid":
        return "-" if value is None else f"{value['mean']:.4f} ± {value['std']:.4f}"
    if key == "swd":
        return f"{value:.4f}"
    if key in ("diversity", "contrast", "saturation", "ssim", "rmse"):
        return "-" if value is None else f"{value:.3f}"
    return "-" if value is None else str(value)


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """A markdown table, one line per row, columns `TABLE_COLUMNS`."""
    header = "| " + " | ".join(h for h, _ in TABLE_COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in TABLE_COLUMNS) + "|"
    lines = [header, rule]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row, k) for _, k in TABLE_COLUMNS) + " |")
    return "\n".join(lines)


def contact_sheet(
    runs: Sequence[Run],
    samples: Sequence[np.ndarray],
    path: str,
    k: int = 8,
    min_cell: int = 96,
) -> np.ndarray:
    """Saves one PNG: a row per run, its training image then its first k samples.

    Cells are upscaled by an integer factor (nearest) to at least `min_cell` px
    high so small CPU-size images stay visible. Returns the grid (HWC, [-1, 1]).
    """
    if not runs or len(runs) != len(samples):
        raise UserError("contact_sheet needs one batch of samples per run")
    k = max(1, min(k, *(len(s) for s in samples)))
    cells = []
    for run, s in zip(runs, samples, strict=True):
        real = np.asarray(run.real, np.float32)
        s = np.asarray(s[:k], np.float32)
        if s.shape[1:] != real.shape:
            raise UserError(
                f"samples {s.shape[1:3]} and training image {real.shape[:2]} of "
                f"{run.workdir} differ in size"
            )
        cells.append(real[None])
        cells.append(s)
    images = np.concatenate(cells)
    if len({im.shape for im in images}) != 1:
        raise UserError("runs in one contact sheet must share one image size")
    factor = max(1, -(-min_cell // images.shape[1]))
    images = images.repeat(factor, axis=1).repeat(factor, axis=2)
    grid = image_io.make_grid(images, ncols=k + 1, pad=2 * factor)
    image_io.save_image(path, grid)
    return grid


def write_json(path: str, rows: Sequence[dict[str, Any]], extra: dict) -> None:
    """Writes {'runs': rows, **extra} as indented JSON."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump({**extra, "runs": list(rows)}, f, indent=2)


def check_out_dir(out: str, make: bool = True) -> None:
    """UserError unless `out` is a folder or can be made one (made here when
    `make`; without it, only checked: the launcher checks before any work and
    leaves nothing behind if the work then fails)."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise UserError(
            f"--out {os.path.abspath(out)} is a file; pass a folder for "
            "evaluation.json, table.md and contact_sheet.png (made if missing)"
        )
    if not make:
        parent = os.path.abspath(out)
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
            raise UserError(
                f"cannot make the --out folder {os.path.abspath(out)} ({parent} is "
                "not a writable folder); pass a folder in a writable place"
            )
        return
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise UserError(
            f"cannot make the --out folder {os.path.abspath(out)} ({e.strerror}); "
            "pass a folder in a writable place"
        ) from None


def evaluate_to_dir(
    workdirs: Sequence[str],
    out: str,
    num_samples: int = 50,
    seed: int = 0,
    inception_weights: str | None = None,
    inception_params: Any = None,
    k: int = 8,
    sample_dirs: Sequence[tuple[str, str]] = (),
) -> tuple[list[RunEvaluation], str]:
    """What `launch.evaluate` does: evaluation.json, contact_sheet.png, table.md.

    `sample_dirs`: (label, folder) pairs of samples written by other programs,
    evaluated against the first run's training image (`evaluate_sample_dir`),
    each a row named by its label; every folder is read and checked (at least 2
    sample images of the training size, `sample_files`) before any run is sampled.

    Inception weights (a path, or already loaded `inception_params`) are loaded
    before anything is sampled, so a bad file fails fast. Samples use
    `jax.random.key(seed)` for every run; patch SWD projections use `seed` too.
    Returns the evaluations and the markdown table. `out` is checked first and
    made only when there is something to write.
    """
    check_out_dir(out, make=False)
    if inception_params is None and inception_weights:
        from agan_jax import inception

        inception_params = inception.load_inception_weights(inception_weights)
    loaded = []
    if sample_dirs:
        if not workdirs:
            raise UserError("no run directories given; pass --workdirs=run1,run2")
        hw = tuple(read_meta(workdirs[0])["sizes"][-1])
        loaded = load_sample_dirs(sample_dirs, hw)
    evals = evaluate_runs(
        workdirs, num_samples, jax.random.key(seed), inception_params, swd_seed=seed
    )
    evals += [
        evaluate_sample_dir(evals[0].run, label, folder, inception_params, seed, s)
        for (label, folder), s in zip(sample_dirs, loaded, strict=True)
    ]
    rows = [e.row for e in evals]
    table = markdown_table(rows)
    os.makedirs(out, exist_ok=True)
    write_json(
        os.path.join(out, "evaluation.json"),
        rows,
        {
            "num_samples": num_samples,
            "seed": seed,
            "inception_weights": inception_weights,
            "table": table,
        },
    )
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(table + "\n")
    contact_sheet(
        [e.run for e in evals],
        [e.samples for e in evals],
        os.path.join(out, "contact_sheet.png"),
        k=k,
    )
    return evals, table
