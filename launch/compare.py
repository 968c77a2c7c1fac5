"""Train SinGAN and AGAN(1-3) on one image and evaluate them together (Table 1).

python -m launch.compare --image=data/colusseum.png --size=cpu --out=runs/compare
python -m launch.compare --image=my.jpg --size=tiny --out=/tmp/c --methods=singan,agan3

Each method trains into OUT/<method> with configs/<family>.py:<schedule>,<size>
(sizes: tiny = seconds, for tests; cpu = 64 px, 200 iterations per stage; gpu =
the paper's 250 px, 2000 iterations). Re-running the same command resumes
unfinished runs and skips finished ones; then every run is evaluated together as
launch.evaluate does (OUT/evaluation.json, OUT/table.md, OUT/contact_sheet.png)
and the table is printed. OUT/report.html shows the table, one row of samples
per method and the losses overlaid (OUT/plots/losses.png); each run gets its
own OUT/<method>/report.html (launch.report). ConSinGAN joins the default methods once
configs/consingan.py exists.

OUT/frontier.png plots patch SWD against diversity, every method a point (one
panel per image with --images; OUT/frontier.json holds the points drawn).
--train_seeds=0,1 trains every method once per seed (config.seed; seed 0 into
OUT/<method>, seed k into OUT/<method>.seed<k>): the table has a row per run,
the plot each method's seeds and their mean +- std.

Ablations: a method is BASE[-MODIFIER...], BASE one of the methods above, each
modifier switching one component on its own (agan_jax/methods.py; the run goes to
OUT/<method>, the table's `run` column names it):
  no-tv         TV loss off (loss.tv_weight=0)
  tv-sum        the paper's summed TV (loss.tv_reduction=sum)
  tv-pytorch    the TVLoss of most PyTorch code, 2 x our mean (tv_reduction=pytorch)
  tv-from-1     no TV at stage 0, TV from stage 1 on (loss.tv_from_stage=1)
  no-attention  SinGAN's residual generator (model.kind=singan), keeping the
                base's schedule and TV loss
  no-warm       every stage from fresh weights (model.warm_start=False)
  res-blend     G_A proposes x + tanh(G_A(...)) instead of the paper's
                tanh(G_A(...)) (model.blend=residual; not the paper's)
  min-step      stages less than 1.1x the stage kept below merged (pyramid.min_step)
  noise-floor   noise amplitude >= 0.02 above stage 0 (loss.noise_amp_floor)
  iters-by-step iterations per stage scaled by the log of its size step
                (train.iters_by_step)
  geometric, cos, quad, circ   the pyramid schedule (pyramid.schedule)
e.g. --methods=singan,agan3,agan3-no-tv,agan3-no-attention,singan-circ,agan3-no-warm

A folder (Table 1 over images): --images=DIR (a glob or a comma list too) trains
every method over the folder with the grouped trainer (launch.train_many: runs in
OUT/<method>/<image>/), evaluates each image's runs together in
OUT/images/<image>/ (evaluation.json, table.md, contact_sheet.png) and writes per
method the mean ± std over images of patch SWD, diversity, contrast, saturation,
SSIM, RMSE (and SIFID with weights) to OUT/summary.md and OUT/summary.json:
  python -m launch.compare --images=../shared/images --size=cpu --out=runs/table1 \
      --methods=singan,agan1,agan2,agan3,consingan
"""

from __future__ import annotations

import os
import sys
import time

from absl import flags

from agan_jax.methods import (
    MODIFIERS,
    SIZES,
    available_methods,
    describe,
    method_config,
    parse_method,
)
from launch import common

_IMAGE = flags.DEFINE_string("image", None, "The training image.")
_IMAGES = flags.DEFINE_string(
    "images", None, "Instead of --image: a folder (glob, comma list) of images."
)
_SIZE = flags.DEFINE_enum("size", "cpu", list(SIZES), "Config size variant.")
_OUT = flags.DEFINE_string("out", None, "Output folder: OUT/<method> runs + tables.")
_METHODS = flags.DEFINE_list(
    "methods",
    None,
    "Methods among singan,agan1,agan2,agan3,consingan (default: all whose config "
    "exists), each optionally followed by ablation modifiers, BASE[-MODIFIER...]: "
    + "; ".join(f"{m}: {describe(m)}" for m in MODIFIERS)
    + ". E.g. agan3-no-tv, agan3-no-attention, singan-circ, agan3-tv-sum-no-warm.",
)
_ITERS = flags.DEFINE_integer(
    "iters_per_stage", None, "Override train.iters_per_stage of every method."
)
_NUM = flags.DEFINE_integer("num_samples", 50, "Samples per run for the metrics.")
_WEIGHTS = flags.DEFINE_string(
    "inception_weights", None, "Inception-v3 weights (.pth/.npz); enables SIFID."
)
_SEED = flags.DEFINE_integer("seed", 0, "Evaluation seed (sampling, SWD).")
_PROGRESS = flags.DEFINE_bool("progress", False, "Show per-stage progress bars.")
_TRAIN_SEEDS = flags.DEFINE_list(
    "train_seeds",
    ["0"],
    "Training seeds (config.seed) of every method: seed 0 trains into "
    "OUT/<method>, seed k into OUT/<method>.seed<k>; with several, "
    "OUT/frontier.png shows each method's spread.",
)


def train_seeds() -> list[int]:
    """--train_seeds as distinct integers >= 0 (UserError otherwise)."""
    from agan_jax.errors import UserError

    try:
        seeds = [int(s) for s in _TRAIN_SEEDS.value]
    except ValueError:
        seeds = []
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise UserError(
            f"--train_seeds={','.join(_TRAIN_SEEDS.value)}: give distinct integers "
            ">= 0, e.g. --train_seeds=0,1"
        )
    return seeds


def run_configs(methods: list[str], image: str) -> dict:
    """{run folder name: config} of every method at every training seed."""
    from agan_jax import frontier

    out = {}
    for m in methods:
        for seed in train_seeds():
            config = method_config(m, _SIZE.value, image, _ITERS.value)
            config.seed = seed
            out[frontier.run_name(m, seed)] = config
    return out


def finished(workdir: str) -> int | None:
    """Stage count of a fully trained run in `workdir`, else None."""
    import json

    from agan_jax import checkpoint

    meta_path = os.path.join(workdir, "run.json")
    if not os.path.exists(meta_path):
        return None
    with open(meta_path) as f:
        total = int(json.load(f).get("num_stages", -1))
    store = checkpoint.RunStore(workdir)
    try:
        done = len(store.finished_stages())
    finally:
        store.close()
    return done if done == total else None


def say(message: str) -> None:
    """One progress line, flushed (for logs written through nohup)."""
    print(message, flush=True)


# Columns of the folder summary: (header, evaluation row key).
SUMMARY_COLUMNS = (
    ("SWD ↓", "swd"),
    ("diversity", "diversity"),
    ("contrast", "contrast"),
    ("saturation", "saturation"),
    ("SSIM", "ssim"),
    ("RMSE", "rmse"),
    ("SIFID ↓", "sifid"),
)


def summary_rows(per_image: dict[str, dict[str, dict]], methods: list[str]):
    """Per method: {key: (mean, std, n)} over images of each summary column (a
    SIFID row's own mean counts as the image's value)."""
    import numpy as np

    out = {}
    for m in methods:
        stats = {}
        for _, key in SUMMARY_COLUMNS:
            values = [
                rows[m][key]["mean"] if isinstance(rows[m][key], dict) else rows[m][key]
                for rows in per_image.values()
                if rows[m].get(key) is not None
            ]
            if values:
                v = np.asarray(values, np.float64)
                stats[key] = (float(v.mean()), float(v.std()), len(values))
        out[m] = stats
    return out


def summary_table(stats: dict[str, dict], images: int) -> str:
    """Markdown: per method, mean ± std over `images` images."""
    header = "| method | images | " + " | ".join(h for h, _ in SUMMARY_COLUMNS) + " |"
    lines = [header, "|" + "---|" * (len(SUMMARY_COLUMNS) + 2)]
    for m, st in stats.items():
        cells = [
            f"{st[k][0]:.4f} ± {st[k][1]:.4f}" if k in st else "-"
            for _, k in SUMMARY_COLUMNS
        ]
        lines.append(f"| {m} | {images} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def compare_folder(methods: list[str], params) -> None:
    """--images: every method over the folder, evaluated per image, summarised."""
    import json

    from agan_jax import evaluation, frontier
    from agan_jax.errors import UserError
    from agan_jax.train import many

    paths = many.find_images(_IMAGES.value)
    configs = run_configs(methods, paths[0])
    runs = list(configs)
    t_all = time.time()
    usable = None
    for i, (run, config) in enumerate(configs.items()):
        say(f"[{i + 1}/{len(runs)}] {run}: training the folder ...")
        entries = many.train_many(
            config,
            _IMAGES.value,
            os.path.join(_OUT.value, run),
            progress=_PROGRESS.value,
            log=say,
        )
        ok = {e.name for e in entries if e.status in ("trained", "done")}
        usable = ok if usable is None else usable & ok
    names = sorted(usable or ())
    if not names:
        raise UserError(
            f"no image of --images={_IMAGES.value} trained for every method"
        )
    per_image = {}
    for name in names:
        workdirs = [os.path.join(_OUT.value, r, name) for r in runs]
        evals, table = evaluation.evaluate_to_dir(
            workdirs,
            os.path.join(_OUT.value, "images", name),
            num_samples=_NUM.value,
            seed=_SEED.value,
            inception_params=params,
        )
        per_image[name] = {r: e.row for r, e in zip(runs, evals, strict=True)}
        say(f"\n{name}\n{table}")
    frontier.write_frontier(per_image, _OUT.value)
    stats = summary_rows(per_image, runs)
    text = summary_table(stats, len(names))
    with open(os.path.join(_OUT.value, "summary.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(_OUT.value, "summary.json"), "w") as f:
        json.dump(
            {
                "images": names,
                "num_samples": _NUM.value,
                "seed": _SEED.value,
                "summary": {
                    m: {
                        k: dict(zip(("mean", "std", "n"), v, strict=True))
                        for k, v in st.items()
                    }
                    for m, st in stats.items()
                },
                "per_image": per_image,
            },
            f,
            indent=1,
            default=str,
        )
    say(f"\nmean ± std over {len(names)} images\n{text}")
    say(
        f"\ntotal {evaluation.format_seconds(time.time() - t_all)}; wrote "
        f"summary.md, summary.json, {frontier.FRONTIER_PNG} and images/<image>/ to "
        f"{os.path.abspath(_OUT.value)}"
    )


def train_runs(configs: dict) -> list[str]:
    """Trains (or resumes, or skips when finished) every run into OUT/<run>;
    returns their folders."""
    from agan_jax import evaluation, train

    workdirs = []
    for i, (name, config) in enumerate(configs.items()):
        workdir = os.path.join(_OUT.value, name)
        workdirs.append(workdir)
        tag = f"[{i + 1}/{len(configs)}] {name}"
        done = finished(workdir)
        if done is not None:
            say(f"{tag}: already trained ({done} stages) in {workdir}, skipped")
        else:
            say(f"{tag}: training into {workdir} ...")
        t0 = time.time()
        try:
            run = train.train(config, workdir, progress=_PROGRESS.value)
        except train.TrainingDiverged as e:
            print(f"error: {name}: {e}", file=sys.stderr)
            raise SystemExit(1) from None
        if done is None:
            say(
                f"{tag}: {run.num_stages} stages trained in "
                f"{evaluation.format_seconds(time.time() - t0)}"
            )
    return workdirs


def main(argv: list[str]) -> None:
    del argv
    from agan_jax import evaluation, frontier, image_io, inception, report
    from agan_jax.errors import UserError

    if bool(_IMAGE.value) == bool(_IMAGES.value):
        raise UserError(
            "give --image (one training image, e.g. data/colusseum.png) or --images "
            "(a folder of them), not both"
        )
    if not _OUT.value:
        raise UserError("--out is required: the folder for the runs and the table")
    train_seeds()  # a bad --train_seeds fails before any training
    if _IMAGES.value:
        methods = _METHODS.value or available_methods()
        for m in methods:
            parse_method(m)  # unknown methods fail before any training
        params = None
        if _WEIGHTS.value:
            params = inception.load_inception_weights(_WEIGHTS.value)
        compare_folder(methods, params)
        return
    image = image_io.resolve_path(_IMAGE.value)
    image_io.load_image(image, flag="--image")  # a missing or bad image fails here
    methods = _METHODS.value or available_methods()
    configs = run_configs(methods, image)
    params = None
    if _WEIGHTS.value:  # fail before hours of training, not after
        params = inception.load_inception_weights(_WEIGHTS.value)

    t_all = time.time()
    workdirs = train_runs(configs)
    t_eval = time.time()
    say(f"evaluating {len(workdirs)} runs ({_NUM.value} samples each) ...")
    evals, table = evaluation.evaluate_to_dir(
        workdirs,
        _OUT.value,
        num_samples=_NUM.value,
        seed=_SEED.value,
        inception_weights=_WEIGHTS.value,
        inception_params=params,
    )
    for e in evals:
        report.write_run_report(
            e.run.workdir,
            samples=e.samples[: report.RUN_SAMPLES],
            evaluation_row=e.row,
        )
    page = report.write_comparison_report(
        _OUT.value,
        [e.row for e in evals],
        [e.run.real for e in evals],
        [e.samples for e in evals],
    )
    stem = os.path.splitext(os.path.basename(image))[0]
    rows = {name: e.row for name, e in zip(configs, evals, strict=True)}
    frontier.write_frontier({stem: rows}, _OUT.value)
    say(table)
    say(
        f"\nevaluation {evaluation.format_seconds(time.time() - t_eval)}, total "
        f"{evaluation.format_seconds(time.time() - t_all)}; wrote evaluation.json, "
        f"table.md, {frontier.FRONTIER_PNG} and contact_sheet.png (rows: "
        + ", ".join(e.row["method"] for e in evals)
        + f") to {os.path.abspath(_OUT.value)}; open {page}"
    )


if __name__ == "__main__":
    common.run(main)
