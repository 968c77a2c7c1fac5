"""One-page HTML reports of a run and of a comparison of runs.

`write_run_report(workdir)` writes RUN/report.html: what the run is (method,
image, stages trained), its evaluation row when `launch.evaluate` or
`launch.compare` evaluated it (`find_evaluation`), stage sizes and timings, the
loss plots (plots.py), 16 samples, the stage grids, attention maps and
reconstructions written during training, and the config. `write_comparison_report`
writes OUT/report.html of `launch.compare`: the metric table, one row of samples
per method and the runs' losses overlaid.

A page is one self-contained HTML5 file: images inline as base64 PNG, pixel
pictures upscaled by nearest neighbour to cells of at least `MIN_CELL` px (and
drawn with `image-rendering: pixelated`), every section, table and figure with
an id (`SECTION_IDS`, `stage-02-attention`, `samples-agan3`, ...) so tests and
readers can find them.
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

from agan_jax import evaluation, image_io, plots
from agan_jax.errors import UserError
from agan_jax.train.log import (
    MIN_CELL,
    cell_factor,
    stage_image_names,
    upscale,
    visible_grid,
)

REPORT_FILE = "report.html"
RUN_SAMPLES = 16
# Section ids of a run's page, in order.
SECTION_IDS = ("summary", "evaluation", "stages", "losses", "samples", "stage-grids")
SECTION_IDS += ("config",)

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f2f2f2; } td.key, th.key { text-align: left; }
figure { margin: 0.8em 0; overflow-x: auto; }
figcaption { font-size: 0.85em; color: #555; }
img.pixels { image-rendering: pixelated; }
img.plot { max-width: 100%; }
p.note { color: #777; font-style: italic; }
"""


# -- building blocks --------------------------------------------------------------
def png_uri(image: np.ndarray) -> str:
    """A data URI of an HWC image (float in [-1, 1], or uint8) as PNG."""
    x = np.asarray(image)
    pixels = x if x.dtype == np.uint8 else image_io.to_uint8(x)
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def file_uri(path: str, factor: int = 1) -> str:
    """A data URI of a PNG file, upscaled `factor` times (nearest)."""
    if factor <= 1:
        with open(path, "rb") as f:
            return "data:image/png;base64," + base64.b64encode(f.read()).decode()
    with Image.open(path) as im:
        pixels = np.asarray(im.convert("RGB"))
    return png_uri(upscale(pixels, factor))


def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def figure(fig_id: str, uri: str, caption: str, pixels: bool = True) -> str:
    """<figure id=...> with one inline image and its caption."""
    cls = "pixels" if pixels else "plot"
    return (
        f'<figure id="{_esc(fig_id)}"><img class="{cls}" src="{uri}" '
        f'alt="{_esc(caption)}"><figcaption>{_esc(caption)}</figcaption></figure>'
    )


def table(table_id: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """<table id=...> with a header row; the first column left-aligned."""

    def row(cells, tag):
        key = ' class="key"'
        tds = "".join(
            f"<{tag}{key if i == 0 else ''}>{_esc(c)}</{tag}>"
            for i, c in enumerate(cells)
        )
        return f"<tr>{tds}</tr>"

    body = "".join(row(r, "td") for r in rows)
    return (
        f'<table id="{_esc(table_id)}"><thead>{row(header, "th")}</thead>'
        f"<tbody>{body}</tbody></table>"
    )


def section(section_id: str, title: str, body: str) -> str:
    return f'<section id="{_esc(section_id)}"><h2>{_esc(title)}</h2>{body}</section>'


def note(text: str) -> str:
    return f'<p class="note">{_esc(text)}</p>'


def page(title: str, body: str) -> str:
    """A whole HTML5 document."""
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{_esc(title)}</h1>{body}"
        f'<p class="note">written {_esc(when)} by agan_jax</p></body></html>\n'
    )


def write_page(path: str, text: str) -> str:
    """Writes a page atomically; returns its path."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


def markdown_to_table(table_id: str, markdown: str) -> str:
    """An HTML table of a markdown table (`evaluation.markdown_table`)."""
    lines = [ln.strip().strip("|") for ln in markdown.strip().splitlines()]
    cells = [[c.strip() for c in ln.split("|")] for ln in lines]
    return table(table_id, cells[0], cells[2:])


# -- what a run directory holds ---------------------------------------------------
def flatten(d: Mapping, prefix: str = "") -> list[tuple[str, Any]]:
    """[('train.lr_g', 0.0005), ...] of a nested dict, in its order."""
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        if isinstance(v, Mapping):
            out += flatten(v, f"{prefix}{k}.")
        else:
            out.append((f"{prefix}{k}", v))
    return out


def stage_records(records: Sequence[dict]) -> dict[int, dict]:
    """The last `stage_done` record of every stage."""
    return {
        int(r["stage"]): r
        for r in records
        if r.get("event") == "stage_done" and "stage" in r
    }


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}g}" if abs(x) < 1e-2 else f"{x:.{digits}f}"
    return str(x)


def read_evaluation_rows(path: str) -> list[dict]:
    """The rows of an evaluation.json ([] when unreadable)."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError):
        return []
    rows = data.get("runs") if isinstance(data, dict) else None
    return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []


def find_evaluation(workdir: str, paths: Sequence[str] = ()) -> tuple[dict, str] | None:
    """The newest evaluation row of the run in `workdir`, and its file.

    `launch.evaluate` writes OUT/evaluation.json for any --out and
    `launch.compare` OUT/evaluation.json beside OUT/<method>; the files looked at
    are `paths`, then evaluation.json in the run directory, its parent, and their
    subdirectories. A row is this run's when its workdir is this directory.
    """
    run = os.path.realpath(workdir)
    candidates = list(paths)
    for d in (run, os.path.dirname(run)):
        candidates.append(os.path.join(d, "evaluation.json"))
        try:
            subdirs = sorted(e.path for e in os.scandir(d) if e.is_dir())
        except OSError:
            subdirs = []
        candidates += [os.path.join(s, "evaluation.json") for s in subdirs]
    found = []
    for path in dict.fromkeys(candidates):
        if not os.path.isfile(path):
            continue
        for row in read_evaluation_rows(path):
            if os.path.realpath(str(row.get("workdir", ""))) == run:
                found.append((os.path.getmtime(path), row, path))
    if not found:
        return None
    _, row, path = max(found, key=lambda t: t[0])
    return row, path


def evaluation_table(table_id: str, rows: Sequence[dict]) -> str:
    """The metric table of `launch.evaluate` (evaluation.TABLE_COLUMNS)."""
    return markdown_to_table(table_id, evaluation.markdown_table(rows))


def _grid_factor(path: str, cell_h: int, n: int, ncols: int | None = None) -> int:
    """How much to upscale a saved grid of n cells of cell_h px so cells are
    >= MIN_CELL high (grids written before they were upscaled on disk)."""
    with Image.open(path) as im:
        height = im.height
    ncols = ncols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / ncols)
    scale = height / (rows * (cell_h + 2) + 2)  # make_grid's layout, pad 2
    return cell_factor(round(cell_h * scale))


def stage_figures(workdir: str, meta: dict, stages: Sequence[int]) -> list[str]:
    """Figures of the stage grids, attention maps and reconstructions on disk."""
    n = int(meta.get("config", {}).get("train", {}).get("stage_samples", 0) or 0)
    sizes = meta.get("sizes", [])
    out = []
    captions = {
        "samples": "training image, then samples after stage {s} ({h}x{w})",
        "attention": "attention maps of stage {s}",
        "reconstruction": "training image | reconstruction after stage {s}",
    }
    cells = {"samples": n + 1, "attention": n, "reconstruction": 2}
    for s in stages:
        h, w = sizes[s] if s < len(sizes) else (MIN_CELL, MIN_CELL)
        for kind, name in stage_image_names(s).items():
            path = os.path.join(workdir, "stages", name)
            if not os.path.isfile(path):
                continue
            ncols = 2 if kind == "reconstruction" else None
            factor = _grid_factor(path, h, max(1, cells[kind]), ncols)
            out.append(
                figure(
                    f"stage-{s:02d}-{kind}",
                    file_uri(path, factor),
                    captions[kind].format(s=s, h=h, w=w),
                )
            )
    return out


# -- the run page -----------------------------------------------------------------
def _summary(workdir: str, meta: dict, trained: int) -> str:
    total = int(meta.get("num_stages", len(meta.get("sizes", []))))
    seconds = evaluation.read_train_seconds(workdir)
    rows = [
        ("run directory", os.path.abspath(workdir)),
        ("method", evaluation.method_name(meta)),
        ("model kind", meta.get("kind", "-")),
        ("pyramid schedule", meta.get("schedule", "-")),
        ("training image", meta.get("image_path", "-")),
        ("stages trained", f"{trained} of {total}"),
        ("training time", evaluation.format_seconds(seconds)),
    ]
    if "fine_tune" in meta:
        rows.append(("fine-tuned", json.dumps(meta["fine_tune"])))
    return table("summary-table", ("", "value"), rows)


def _stage_table(meta: dict, done: dict[int, dict]) -> str:
    rows = []
    for s, (h, w) in enumerate(meta.get("sizes", [])):
        r = done.get(s, {})
        ips = r.get("iters_per_s")
        rows.append(
            (
                s,
                f"{h}x{w}",
                _fmt(r.get("noise_amp"), 4),
                _fmt(r.get("compile_s"), 1),
                _fmt(r.get("train_s"), 1),
                _fmt(r.get("stage_s"), 1),
                _fmt(ips, 2),
                _fmt(1.0 / ips, 3) if ips else "-",
            )
            if r
            else (s, f"{h}x{w}", "not trained", "", "", "", "", "")
        )
    header = ("stage", "size (HxW)", "noise amp", "compile s", "train s")
    header += ("stage s", "it/s", "s/it")
    return table("stages-table", header, rows)


def run_samples(workdir: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(samples (n, h, w, 3), training image) of the finished stages of a run."""
    import jax

    from agan_jax import checkpoint, sampling

    run = checkpoint.load_run(workdir)
    images = sampling.sample(run, jax.random.key(seed), n)
    real = run.real if run.real is not None else np.zeros(images.shape[1:])
    return np.clip(np.asarray(images, np.float32), -1, 1), np.asarray(real)


def run_page(
    workdir: str,
    samples: np.ndarray | None = None,
    real: np.ndarray | None = None,
    evaluation_row: dict | None = None,
    evaluation_path: str | None = None,
    sample_note: str = "",
) -> str:
    """The HTML of a run's report (see the module docstring)."""
    meta = evaluation.read_meta(workdir)
    records = plots.read_run(workdir)
    done = stage_records(records)
    trained = len([s for s in done if s < len(meta.get("sizes", []))])
    name = os.path.basename(os.path.normpath(workdir))
    parts = [section("summary", "Run", _summary(workdir, meta, trained))]

    if evaluation_row is not None:
        src = f" (from {evaluation_path})" if evaluation_path else ""
        body = evaluation_table("evaluation-table", [evaluation_row])
        body += note(f"{evaluation_row.get('num_samples', '?')} samples{src}")
    else:
        body = note(
            "not evaluated yet: python -m launch.evaluate "
            f"--workdirs={workdir} --out={os.path.join(workdir, 'eval')}"
        )
    parts.append(section("evaluation", "Evaluation", body))
    parts.append(section("stages", "Stage sizes and timings", _stage_table(meta, done)))

    try:
        # Drawn in memory: reading a run never writes into it (it may be on a
        # read-only disk, with the page going elsewhere).
        uri = (
            "data:image/png;base64,"
            + base64.b64encode(plots.losses_png([workdir])).decode()
        )
        body = figure("losses-plot", uri, "losses by stage", pixels=False)
    except UserError as e:
        body = note(str(e))
    parts.append(section("losses", "Losses", body))

    if samples is not None and len(samples):
        k = len(samples)
        grid = visible_grid(samples, ncols=math.ceil(math.sqrt(k)))
        body = figure("samples-grid", png_uri(grid), f"{k} samples {sample_note}")
        if real is not None:
            real_img = upscale(real, cell_factor(real.shape[0]))
            body += figure("training-image", png_uri(real_img), "training image")
    else:
        body = note(sample_note or "no stage trained yet: no samples")
    parts.append(section("samples", "Samples", body))

    figs = stage_figures(workdir, meta, sorted(done))
    body = "".join(figs) or note(
        "no stage grids: this run was trained with train.stage_samples=0"
    )
    parts.append(
        section("stage-grids", "Stage grids, attention, reconstructions", body)
    )

    config_rows = flatten(meta.get("config", {}))
    parts.append(
        section(
            "config", "Config", table("config-table", ("field", "value"), config_rows)
        )
    )
    return page(f"{name}: {evaluation.method_name(meta)}", "".join(parts))


def write_run_report(
    workdir: str,
    out: str | None = None,
    num_samples: int = RUN_SAMPLES,
    seed: int = 0,
    evaluation_paths: Sequence[str] = (),
    samples: np.ndarray | None = None,
    evaluation_row: dict | None = None,
) -> str:
    """Writes a run's report (default RUN/report.html); returns its path.

    Samples: `samples` as given, else `num_samples` drawn with key `seed` from the
    stages trained so far. The evaluation row: as given, else `find_evaluation`.
    """
    evaluation.read_meta(workdir)  # UserError when the directory holds no run
    if not os.path.isfile(os.path.join(workdir, "metrics.jsonl")):
        raise UserError(
            f"{workdir} holds no training log (metrics.jsonl); train the run first"
        )
    real = None
    sample_note = f"(seed {seed})"
    if samples is None:
        try:
            samples, real = run_samples(workdir, num_samples, seed)
        except UserError as e:
            samples, sample_note = None, str(e)
    else:
        sample_note = "(the evaluation's samples)"
    path_used = None
    if evaluation_row is None:
        found = find_evaluation(workdir, evaluation_paths)
        if found is not None:
            evaluation_row, path_used = found
    if real is None and samples is not None:
        real_path = os.path.join(workdir, "real.npy")
        real = np.load(real_path) if os.path.exists(real_path) else None
    text = run_page(workdir, samples, real, evaluation_row, path_used, sample_note)
    return write_page(out or os.path.join(workdir, REPORT_FILE), text)


# -- the comparison page ----------------------------------------------------------
def write_comparison_report(
    out: str,
    rows: Sequence[dict],
    reals: Sequence[np.ndarray],
    samples: Sequence[np.ndarray],
    k: int = 8,
) -> str:
    """OUT/report.html of a comparison: the metric table (rows of
    `evaluation.evaluate_samples`), one row of samples per method (the training
    image, then its first k samples) and the runs' losses overlaid (drawn to
    OUT/plots/losses.png). Returns the page's path."""
    if not rows or not (len(rows) == len(reals) == len(samples)):
        raise UserError("a comparison report needs one row, image and samples per run")
    workdirs = [str(r["workdir"]) for r in rows]
    labels = [f"{r['method']} ({r['run']})" for r in rows]
    parts = [section("metrics", "Metrics", evaluation_table("metrics-table", rows))]

    figs = []
    for row, real, s in zip(rows, reals, samples, strict=True):
        cells = np.concatenate([np.asarray(real, np.float32)[None], s[:k]])
        grid = visible_grid(np.clip(cells, -1, 1), ncols=len(cells))
        caption = f"{row['method']} ({row['run']}): training image, then samples"
        figs.append(figure(f"samples-{row['run']}", png_uri(grid), caption))
    parts.append(section("samples", "Samples, one row per method", "".join(figs)))

    try:
        png = plots.write_losses(
            workdirs, os.path.join(out, plots.LOSSES_PNG), labels=labels
        )
        body = figure(
            "losses-plot", file_uri(png), "losses, runs overlaid", pixels=False
        )
    except UserError as e:
        body = note(str(e))
    parts.append(section("losses", "Losses", body))

    links = "".join(
        f'<li><a href="{_esc(os.path.relpath(os.path.join(w, REPORT_FILE), out))}">'
        f"{_esc(label)}</a></li>"
        for w, label in zip(workdirs, labels, strict=True)
    )
    parts.append(section("runs", "Run reports", f"<ul>{links}</ul>"))
    title = f"Comparison: {os.path.basename(os.path.normpath(out)) or out}"
    return write_page(os.path.join(out, REPORT_FILE), page(title, "".join(parts)))
