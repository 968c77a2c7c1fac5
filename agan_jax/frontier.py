"""The closeness-diversity picture of a comparison: patch SWD (x, lower = closer
to the training image's patches) against diversity (y) of every method, one
panel per training image (`launch.compare` writes OUT/frontier.png).

A method trained with several seeds is drawn as its seeds' points (small) and
their mean with a bar of +- one standard deviation on each axis; a method
trained once, as one point. What is drawn is returned and written beside the
plot (frontier.json), taken from the evaluation rows as they are.
"""

from __future__ import annotations

import json
import os
import re

from agan_jax import plots

FRONTIER_PNG = "frontier.png"
FRONTIER_JSON = "frontier.json"
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
    ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.set_title(title)
    ax.set_xlabel("patch SWD (lower: closer)")
    ax.set_ylabel("diversity")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def write_frontier(panels: dict[str, dict[str, dict]], out: str) -> dict:
    """Draws OUT/frontier.png, one panel per entry of `panels` ({image name:
    {run folder name: evaluation row}}), and writes the points drawn to OUT/frontier.json; returns
    them ({image: panel_points(rows)})."""
    from matplotlib.figure import Figure

    data = {name: panel_points(rows) for name, rows in panels.items()}
    n = len(data)
    cols = min(n, 2)
    rows_n = (n + cols - 1) // cols
    fig = Figure(figsize=(5.5 * cols, 4.2 * rows_n))
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
