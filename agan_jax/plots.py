"""Loss plots from metrics.jsonl, without TensorBoard: one PNG per run or comparison.

`write_losses(workdirs, path)` draws one panel per logged quantity (`PANELS`:
critic loss and its WGAN term, gradient penalty, generator adversarial,
reconstruction and TV losses, learning rates, noise amplitude, seconds per
iteration); in each panel the stages stand side by side along x (x = iteration,
stage k after stage k-1, dotted lines between stages) and several runs are
overlaid, one colour each. Training draws `plots/losses.png` in the run
directory after stages and at its end (train/loop.py), `python -m launch.plot`
redraws it for any finished or running run. matplotlib (Agg canvas, no pyplot
state) is imported only when a figure is drawn.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Iterable, Sequence

from agan_jax.errors import UserError

# (panel title, record keys drawn in it (solid, dashed), log scale allowed)
PANELS: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("critic loss (WGAN + λ·GP)", ("d_loss",), False),
    ("critic WGAN term: E[D(fake)] − E[D(real)]", ("d_wgan",), False),
    ("gradient penalty", ("gp",), True),
    ("generator adversarial loss", ("g_adv",), False),
    ("reconstruction loss (MSE)", ("rec",), True),
    ("TV loss", ("tv",), True),
    ("learning rate: critic (solid), generator (dashed)", ("lr_d", "lr_g"), True),
    ("noise amplitude", ("noise_amp",), True),
    ("seconds per iteration", ("s_per_iter",), True),
)
KEYS = tuple(k for _, keys, _ in PANELS for k in keys)
STYLES = ("-", "--")
# A panel is drawn on a log scale when its values span at least this ratio.
LOG_RATIO = 10.0
LOSSES_PNG = os.path.join("plots", "losses.png")
COLUMNS = 3


def read_records(path: str) -> list[dict]:
    """The JSON records of a metrics.jsonl (a line cut short by a kill is skipped)."""
    out = []
    with open(path) as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
    return out


def read_run(workdir: str) -> list[dict]:
    """A run directory's metrics.jsonl records; UserError when it holds no run."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.isfile(path):
        what = "holds no run" if os.path.isdir(workdir) else "does not exist"
        raise UserError(
            f"{workdir} {what} (no metrics.jsonl); pass a run directory written by "
            "python -m launch.train"
        )
    return read_records(path)


Series = dict[str, dict[int, tuple[list[int], list[float]]]]


def stage_series(records: Iterable[dict]) -> Series:
    """{key: {stage: (iterations, values)}} of the per-iteration records.

    A resumed stage logs its iterations again: the last record of a (stage,
    iteration) wins. Runs logged before a quantity was recorded per iteration get
    the stage's noise amplitude and seconds per iteration from its `stage_done`
    record, as a constant over the stage.
    """
    points: dict[tuple[int, int], dict] = {}
    done: dict[int, dict] = {}
    for rec in records:
        if rec.get("event") == "stage_done" and "stage" in rec:
            done[int(rec["stage"])] = rec
        elif "event" not in rec and "stage" in rec and "iter" in rec:
            points[(int(rec["stage"]), int(rec["iter"]))] = rec
    out: Series = {}
    for (stage, it), rec in sorted(points.items()):
        for key in KEYS:
            value = rec.get(key)
            if value is None and key == "noise_amp" and stage in done:
                value = done[stage].get("noise_amp")
            if value is None and key == "s_per_iter" and stage in done:
                ips = done[stage].get("iters_per_s")
                value = 1.0 / ips if ips else None
            if isinstance(value, int | float) and math.isfinite(value):
                its, values = out.setdefault(key, {}).setdefault(stage, ([], []))
                its.append(it)
                values.append(float(value))
    return out


def _offsets(runs: Sequence[Series]) -> list[int]:
    """x offset of every stage: the stages before it, at their longest, end to end."""
    length: dict[int, int] = {}
    for series in runs:
        for per_stage in series.values():
            for stage, (its, _) in per_stage.items():
                length[stage] = max(length.get(stage, 0), max(its))
    n = max(length, default=-1) + 1
    offsets = [0]
    for s in range(n):
        offsets.append(offsets[-1] + length.get(s, 0))
    return offsets


def _draw_panel(ax, panel, runs, offsets: list[int]) -> None:
    """One panel: every run's values of the panel's keys, stage by stage, the
    stage boundaries dotted and the stage numbers above."""
    from matplotlib import ticker

    name, panel_keys, log = panel
    values_seen: list[float] = []
    for r, (label, series) in enumerate(runs):
        first = True
        for key, style in zip(panel_keys, STYLES, strict=False):
            for stage, (its, values) in sorted(series.get(key, {}).items()):
                x = [offsets[stage] + i for i in its]
                ax.plot(
                    x,
                    values,
                    color=f"C{r % 10}",
                    ls=style,
                    lw=1.2,
                    marker="." if len(x) < 3 else None,
                    label=label if first else None,
                )
                first = False
                values_seen += values
    for x in offsets[1:-1]:
        ax.axvline(x, color="0.6", ls=":", lw=0.8)
    low = min(values_seen, default=0.0)
    if log and low > 0 and max(values_seen) >= LOG_RATIO * low:
        ax.set_yscale("log")
        # Plain numbers (0.03, 0.0001) at the decades: no mathtext, which is
        # slower to draw and wider than the margin.
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:.3g}"))
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_title(name, fontsize=10, pad=12)
    ax.set_xlim(0, max(offsets[-1], 1))
    ax.tick_params(which="both", labelsize=8)
    ax.grid(alpha=0.25)
    centres = [(a + b) / 2 for a, b in zip(offsets, offsets[1:], strict=False)]
    for s, c in enumerate(centres):  # stage numbers above the panel
        ax.text(
            c,
            1.01,
            f"s{s}",
            transform=ax.get_xaxis_transform(),
            fontsize=7,
            ha="center",
            va="bottom",
            color="0.35",
        )


def losses_figure(runs: Sequence[tuple[str, Series]], title: str = ""):
    """A matplotlib Figure (Agg canvas): a panel per quantity, runs overlaid."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    keys = [p for p in PANELS if any(k in s for _, s in runs for k in p[1])]
    if not keys:
        raise UserError(
            "no losses logged yet: the first record comes after train.log_every "
            "iterations of stage 0; try again later"
        )
    offsets = _offsets([s for _, s in runs])
    rows = math.ceil(len(keys) / COLUMNS)
    head = 0.5 if (title or len(runs) > 1) else 0.1  # inches above the panels
    height = 2.9 * rows + head
    fig = Figure(figsize=(5.2 * COLUMNS, height), dpi=100)
    FigureCanvasAgg(fig)
    # Fixed margins: tight_layout measured 3 s of a 4 s draw on the 2-core CPU.
    fig.subplots_adjust(
        left=0.06,
        right=0.99,
        bottom=0.55 / height,
        top=1 - (head + 0.35) / height,
        wspace=0.22,
        hspace=0.95 / 2.9,
    )
    axes = fig.subplots(rows, COLUMNS, squeeze=False).ravel()
    for ax, panel in zip(axes, keys, strict=False):
        _draw_panel(ax, panel, runs, offsets)
    for ax in axes[len(keys) :]:
        ax.set_visible(False)
    for ax in axes[max(0, len(keys) - COLUMNS) : len(keys)]:
        ax.set_xlabel("iteration (stages s0, s1, ... side by side)", fontsize=8)
    if len(runs) > 1:
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="upper right", fontsize=9, ncols=len(runs))
    if title:
        fig.suptitle(title, fontsize=11, x=0.01, y=1 - 0.08 / height, ha="left")
    return fig


def run_labels(workdirs: Sequence[str]) -> list[str]:
    """Short names of runs: their directory names, whole paths where those clash."""
    names = [os.path.basename(os.path.normpath(w)) or w for w in workdirs]
    if len(set(names)) < len(names):
        return [os.path.normpath(w) for w in workdirs]
    return names


def _figure_of(workdirs: Sequence[str], labels: Sequence[str] | None):
    if not workdirs:
        raise UserError("no run directory given; pass --workdir=RUN[,RUN2...]")
    labels = list(labels) if labels else run_labels(workdirs)
    runs = [
        (lab, stage_series(read_run(w)))
        for lab, w in zip(labels, workdirs, strict=True)
    ]
    return losses_figure(runs, labels[0] if len(runs) == 1 else "")


def losses_png(workdirs: Sequence[str], labels: Sequence[str] | None = None) -> bytes:
    """The losses figure of one or several runs as PNG bytes (nothing written:
    what a report of a read-only run inlines)."""
    buf = io.BytesIO()
    _figure_of(workdirs, labels).savefig(buf, format="png")
    return buf.getvalue()


def write_losses(
    workdirs: Sequence[str],
    path: str | None = None,
    labels: Sequence[str] | None = None,
) -> str:
    """Draws the losses of one or several runs into `path` (PNG); returns it.

    Default path: WORKDIR/plots/losses.png for one run; several runs need a
    path; an existing folder gets FOLDER/losses.png. The file is replaced
    atomically (a temporary file beside it, removed if anything fails), so a
    viewer never sees half of it.
    """
    if path is None:
        if len(workdirs) > 1:
            raise UserError(
                "several runs draw into one figure: pass --out=PATH.png for it"
            )
        if not workdirs:
            raise UserError("no run directory given; pass --workdir=RUN[,RUN2...]")
        path = os.path.join(workdirs[0], LOSSES_PNG)
    elif os.path.isdir(path):
        path = os.path.join(path, os.path.basename(LOSSES_PNG))
    save_png(_figure_of(workdirs, labels), path)
    return path


def save_png(fig, path: str, dpi=None) -> None:
    """Writes a figure to `path` whole: a hidden temporary file beside it, then
    renamed (removed if the write fails), so a reader never sees half a PNG."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".{name}.{os.getpid()}.tmp.png")
    try:
        fig.savefig(tmp, format="png", dpi=dpi)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
