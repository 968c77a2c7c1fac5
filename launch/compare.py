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

Ablations: a method is BASE[-MODIFIER...], BASE one of the methods above, each
modifier switching one AGAN component on its own (the run goes to OUT/<method>,
the table's `run` column names it):
  no-tv         TV loss off (loss.tv_weight=0)
  tv-sum        the paper's summed TV (loss.tv_reduction=sum)
  tv-pytorch    the TVLoss of most PyTorch code, 2 x our mean (tv_reduction=pytorch)
  no-attention  SinGAN's residual generator (model.kind=singan), keeping the
                base's schedule and TV loss
  no-warm       every stage from fresh weights (model.warm_start=False)
  res-blend     G_A proposes x + tanh(G_A(...)) instead of the paper's
                tanh(G_A(...)) (model.blend=residual; not the paper's)
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

from launch import common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# method -> (config module, schedule argument or "")
METHODS: dict[str, tuple[str, str]] = {
    "singan": ("singan", ""),
    "agan1": ("agan", "cos"),
    "agan2": ("agan", "quad"),
    "agan3": ("agan", "circ"),
    "consingan": ("consingan", ""),
}
SIZES = {"cpu": "", "tiny": "tiny", "gpu": "gpu"}
SCHEDULES = ("geometric", "cos", "quad", "circ")
# modifier -> (group: one modifier per group, what it does)
MODIFIERS: dict[str, tuple[str, str]] = {
    "no-tv": ("tv", "TV loss off (loss.tv_weight=0)"),
    "tv-sum": ("tv", "the paper's summed TV (loss.tv_reduction=sum)"),
    "tv-pytorch": ("tv", "PyTorch's TVLoss, 2 x mean (loss.tv_reduction=pytorch)"),
    "no-attention": ("generator", "SinGAN's residual generator (model.kind=singan)"),
    "no-warm": ("warm", "every stage from fresh weights (model.warm_start=False)"),
    "res-blend": ("blend", "G_A's proposal x + tanh(G_A(..)) (model.blend=residual)"),
    **{s: ("schedule", f"the {s} pyramid (pyramid.schedule={s})") for s in SCHEDULES},
}
# Modifiers that change AGAN's generator: (field, value, what it does).
AGAN_ONLY = {
    "no-attention": (
        ("model", "kind"),
        "singan",
        "swaps AGAN's attention generator for SinGAN's",
    ),
    "res-blend": (("model", "blend"), "residual", "changes AGAN's attention blend"),
}
# Families whose stages honour model.warm_start (models/singan.py's StageModel);
# ConSinGAN grows its generator from the trained blocks.
WARM_START_KINDS = ("singan", "agan")

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
    + "; ".join(f"{m}: {what}" for m, (_, what) in MODIFIERS.items())
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


def available_methods() -> list[str]:
    """The methods whose config file exists, in table order."""
    return [
        m
        for m, (mod, _) in METHODS.items()
        if os.path.exists(os.path.join(ROOT, "configs", f"{mod}.py"))
    ]


def parse_method(method: str) -> tuple[str, list[str]]:
    """Splits BASE[-MODIFIER...] into the base method and its modifiers (each a
    key of MODIFIERS, at most one per group); UserError naming the valid ones."""
    from agan_jax.errors import UserError

    base, _, rest = method.partition("-")
    if base not in available_methods():
        raise UserError(
            f"unknown method {method!r}; choose from "
            f"{', '.join(available_methods())}, optionally followed by modifiers "
            f"-MODIFIER (one of {', '.join(MODIFIERS)}), e.g. agan3-no-tv"
        )
    modifiers: list[str] = []
    longest_first = sorted(MODIFIERS, key=len, reverse=True)
    while rest:
        found = next(
            (m for m in longest_first if rest == m or rest.startswith(m + "-")),
            None,
        )
        if found is None:
            raise UserError(
                f"unknown modifier {rest!r} in method {method!r}; valid modifiers: "
                f"{', '.join(MODIFIERS)} (e.g. {base}-no-tv-cos)"
            )
        group = MODIFIERS[found][0]
        clash = [m for m in modifiers if MODIFIERS[m][0] == group]
        if clash:
            raise UserError(
                f"method {method!r} has two {group} modifiers ({clash[0]}, {found}); "
                "give at most one"
            )
        modifiers.append(found)
        rest = rest[len(found) + 1 :]
    return base, modifiers


def apply_modifier(config, modifier: str, method: str) -> None:
    """Changes the fields of `config` that `modifier` switches (UserError when it
    does not apply to the base's config, or would change nothing)."""
    from agan_jax.errors import UserError

    if modifier in SCHEDULES:
        field, value = ("pyramid", "schedule"), modifier
    elif modifier in AGAN_ONLY:
        field, value, what = AGAN_ONLY[modifier]
        if config.model.kind != "agan":
            raise UserError(
                f"{method}: {modifier!r} {what}; this base trains "
                f"model.kind={config.model.kind}"
            )
    elif modifier == "no-warm":
        if config.model.kind not in WARM_START_KINDS:
            raise UserError(
                f"{method}: 'no-warm' applies to {', '.join(WARM_START_KINDS)}; "
                f"{config.model.kind} grows its generator from the trained blocks"
            )
        field, value = ("model", "warm_start"), False
    else:  # the TV modifiers
        if config.loss.tv_weight == 0:
            raise UserError(
                f"{method}: {modifier!r} changes the TV loss, which this base does "
                "not use (loss.tv_weight=0); use an AGAN base, e.g. agan3-"
                f"{modifier}"
            )
        if modifier == "no-tv":
            field, value = ("loss", "tv_weight"), 0.0
        else:
            field, value = ("loss", "tv_reduction"), modifier.removeprefix("tv-")
    section, name = field
    if config[section][name] == value:
        raise UserError(
            f"{method}: modifier {modifier!r} changes nothing ({section}.{name} is "
            f"already {value!r}); drop it"
        )
    config[section][name] = value


def method_config(method: str, size: str, image: str, iters: int | None):
    """The training config of one method, BASE[-MODIFIER...], at one size on
    `image`: the base's config with every modifier's fields switched."""
    import importlib

    from agan_jax.errors import UserError

    base, modifiers = parse_method(method)
    mod_name, schedule = METHODS[base]
    arg = ",".join(t for t in (schedule, SIZES[size]) if t)
    config = importlib.import_module(f"configs.{mod_name}").get_config(arg or None)
    for modifier in modifiers:
        apply_modifier(config, modifier, method)
    config.data.image = image
    if iters is not None:
        if iters < 1:
            raise UserError(f"--iters_per_stage must be at least 1, got {iters}")
        config.train.iters_per_stage = iters
    return config


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

    from agan_jax import evaluation
    from agan_jax.errors import UserError
    from agan_jax.train import many

    paths = many.find_images(_IMAGES.value)
    configs = {
        m: method_config(m, _SIZE.value, paths[0], _ITERS.value) for m in methods
    }
    t_all = time.time()
    usable = None
    for i, method in enumerate(methods):
        say(f"[{i + 1}/{len(methods)}] {method}: training the folder ...")
        entries = many.train_many(
            configs[method],
            _IMAGES.value,
            os.path.join(_OUT.value, method),
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
        workdirs = [os.path.join(_OUT.value, m, name) for m in methods]
        evals, table = evaluation.evaluate_to_dir(
            workdirs,
            os.path.join(_OUT.value, "images", name),
            num_samples=_NUM.value,
            seed=_SEED.value,
            inception_params=params,
        )
        per_image[name] = {m: e.row for m, e in zip(methods, evals, strict=True)}
        say(f"\n{name}\n{table}")
    stats = summary_rows(per_image, methods)
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
        f"summary.md, summary.json and images/<image>/ to {os.path.abspath(_OUT.value)}"
    )


def main(argv: list[str]) -> None:
    del argv
    from agan_jax import evaluation, image_io, inception, report, train
    from agan_jax.errors import UserError

    if bool(_IMAGE.value) == bool(_IMAGES.value):
        raise UserError(
            "give --image (one training image, e.g. data/colusseum.png) or --images "
            "(a folder of them), not both"
        )
    if not _OUT.value:
        raise UserError("--out is required: the folder for the runs and the table")
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
    configs = {m: method_config(m, _SIZE.value, image, _ITERS.value) for m in methods}
    params = None
    if _WEIGHTS.value:  # fail before hours of training, not after
        params = inception.load_inception_weights(_WEIGHTS.value)

    t_all = time.time()
    workdirs = []
    for i, method in enumerate(methods):
        workdir = os.path.join(_OUT.value, method)
        workdirs.append(workdir)
        tag = f"[{i + 1}/{len(methods)}] {method}"
        done = finished(workdir)
        if done is not None:
            say(f"{tag}: already trained ({done} stages) in {workdir}, skipped")
        else:
            say(f"{tag}: training into {workdir} ...")
        t0 = time.time()
        try:
            run = train.train(configs[method], workdir, progress=_PROGRESS.value)
        except train.TrainingDiverged as e:
            print(f"error: {method}: {e}", file=sys.stderr)
            raise SystemExit(1) from None
        if done is None:
            say(
                f"{tag}: {run.num_stages} stages trained in "
                f"{evaluation.format_seconds(time.time() - t0)}"
            )
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
    say(table)
    say(
        f"\nevaluation {evaluation.format_seconds(time.time() - t_eval)}, total "
        f"{evaluation.format_seconds(time.time() - t_all)}; wrote evaluation.json, "
        f"table.md and contact_sheet.png (rows: "
        + ", ".join(e.row["method"] for e in evals)
        + f") to {os.path.abspath(_OUT.value)}; open {page}"
    )


if __name__ == "__main__":
    common.run(main)
