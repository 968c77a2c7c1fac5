"""The closeness-diversity picture of a comparison: patch SWD (x, lower = closer
to the training image's patches) against diversity (y) of every method, one
panel per training image (`launch.compare` writes OUT/frontier.png).

A method trained with several seeds is drawn as its seeds' points (small) and
their mean with a bar of +- one standard deviation on each axis; a method
trained once, as one point. What is drawn is returned and written beside the
plot (frontier.json), taken from the evaluation rows as they are.

Where a panel has SinGAN's point (method `singan`), its goal corner is shaded:
patch SWD at most 0.8x and diversity at least 0.9x SinGAN's (the mean over its
seeds), the target docs/evaluation.md measures the AGAN variants against
("AGAN variants that keep the diversity"). A method inside it is closer to the
training image than SinGAN without giving up more than a tenth of its diversity.
"""

from __future__ import annotations

import json
import os
import re
from statistics import fmean

from agan_jax import plots

FRONTIER_PNG = "frontier.png"
FRONTIER_JSON = "frontier.json"
# (patch SWD factor, diversity factor) of the goal corner, relative to REFERENCE.
GOAL = (0.8, 0.9)
REFERENCE = "singan"
_SEED_SUFFIX = re.compile(r"^(?P<method>.+)\.seed(?P<seed>\d+)$")


def run_name(method: str, seed: int) -> str:
    """The folder of `method` trained with training seed `seed` (the config's
    `seed` field): the method itself for seed 0 (the configs' default),
    METHOD.seed<k> otherwise."""
    return method if seed == 0 else f"{method}.seed{seed}"


def split_run_name(run: str) -> tuple[str, int]:
    """(method, seed) of a folder named by `run_name`."""
    m = _SEED_SUFFIX.match(run)
    return (m["method"], int(m["seed"])) if m else (run, 0)


def panel_points(rows: dict[str, dict]) -> dict[str, dict[str, list]]:
    """{method: {"seeds", "swd", "diversity"}} of evaluation rows keyed by their
    run's folder name (`run_name`), methods in the order they come."""
    out: dict[str, dict[str, list]] = {}
    for run, row in rows.items():
        method, seed = split_run_name(run)
        p = out.setdefault(method, {"seeds": [], "swd": [], "diversity": []})
        p["seeds"].append(seed)
        p["swd"].append(float(row["swd"]))
        p["diversity"].append(float(row["diversity"]))
    return out


def goal_corner(points: dict[str, dict[str, list]]) -> tuple[float, float] | None:
    """(largest patch SWD, smallest diversity) of the goal corner of one panel's
    `panel_points`: GOAL times REFERENCE's mean over its seeds; None when the
    panel lacks REFERENCE."""
    p = points.get(REFERENCE)
    if p is None:
        return None
    return GOAL[0] * fmean(p["swd"]), GOAL[1] * fmean(p["diversity"])


def _shade_goal(ax, corner: tuple[float, float]) -> None:
    """Shades x <= corner[0], y >= corner[1], with the limits widened to show it."""
    from matplotlib.patches import Rectangle

    swd_max, div_min = corner
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    x0, x1 = min(x0, swd_max - 0.05 * (x1 - x0)), max(x1, swd_max)
    y0, y1 = min(y0, div_min), max(y1, div_min + 0.05 * (y1 - y0))
    ax.add_patch(
        Rectangle(
            (x0, div_min),
            swd_max - x0,
            y1 - div_min,
            facecolor="tab:green",
            alpha=0.12,
            edgecolor="tab:green",
            linestyle="--",
            label=f"goal: SWD <= {GOAL[0]}x, diversity >= {GOAL[1]}x {REFERENCE}",
        )
    )
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)


def _draw_panel(
    ax, title: str, points: dict[str, dict[str, list]], order: list[str]
) -> None:
    """One image's methods, each in its colour of `order` (the same method
    has the same colour in every panel), labelled by name."""
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    for method, p in points.items():
        colour = f"C{order.index(method) % 10}"
        x, y = np.asarray(p["swd"]), np.asarray(p["diversity"])
        ax.annotate(
            method,
            (x.mean(), y.mean()),
            xytext=(4, 4),
            textcoords="offset points",
            fontsize=7,
            color=colour,
        )
        if len(x) > 1:
            ax.scatter(x, y, s=12, color=colour, alpha=0.5)
            ax.errorbar(
                x.mean(),
                y.mean(),
                xerr=x.std(),
                yerr=y.std(),
                fmt="o",
                color=colour,
                capsize=3,
                label=f"{method} ({len(x)} seeds)",
            )
        else:
            ax.plot(x, y, "o", color=colour, label=method)
    corner = goal_corner(points)
    if corner is not None:
        _shade_goal(ax, corner)
    ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.set_title(title)
    ax.set_xlabel("patch SWD (lower: closer)")
    ax.set_ylabel("diversity")
    ax.grid(alpha=0.3)
    # Beside the axes: inside, a long legend covers points.
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))


def write_frontier(panels: dict[str, dict[str, dict]], out: str) -> dict:
    """Draws OUT/frontier.png, one panel per entry of `panels` ({image name:
    {run folder name: evaluation row}}), and writes the points drawn to OUT/frontier.json; returns
    them ({image: panel_points(rows)})."""
    from matplotlib.figure import Figure

    data = {name: panel_points(rows) for name, rows in panels.items()}
    n = len(data)
    cols = min(n, 2)
    rows_n = (n + cols - 1) // cols
    fig = Figure(figsize=(8.5 * cols, 4.2 * rows_n))
    axes = fig.subplots(rows_n, cols, squeeze=False)
    order = list(dict.fromkeys(m for points in data.values() for m in points))
    for ax, (name, points) in zip(axes.flat, data.items(), strict=False):
        _draw_panel(ax, name, points, order)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.tight_layout()
    plots.save_png(fig, os.path.join(out, FRONTIER_PNG), dpi=100)
    with open(os.path.join(out, FRONTIER_JSON), "w") as f:
        json.dump(data, f, indent=1)
    return data
