"""Folder throughput: K images trained as one group against K `launch.train` runs.

Every figure is a whole child process (imports, compilation with the persistent
cache off, training, checkpoints, stage grids), run in turn on the same machine.
Sequential time for K images is the sum of the first K single-image runs (each
image trained once alone); the grouped time is one `launch.train_many` process
over the same K images (`data.fit` makes them one group). Images per hour and
the ratio grouped/sequential are reported per K, with the peak RSS of each.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image

from benchmarks import common

BUNDLED = os.path.join(common.ROOT, "data", "colusseum.png")


def variant_images(folder: str, n: int) -> list[str]:
    """n different images made from the bundled one (crops, flips, colour), for
    machines without a folder of photographs; throughput does not depend on
    what they show."""
    base = np.asarray(Image.open(BUNDLED).convert("RGB"), np.float32)
    h, w = base.shape[:2]
    paths = []
    for i in range(n):
        crop = base[(i % 3) * h // 12 :, (i % 2) * w // 10 :]
        if i % 2:
            crop = crop[:, ::-1]
        crop = np.clip(crop * (1.0 - 0.1 * (i % 4)) + 8.0 * (i % 5), 0, 255)
        path = os.path.join(folder, f"img{i:02d}.png")
        Image.fromarray(crop.astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def folder_images(folder: str | None, n: int, scratch: str) -> list[str]:
    """The first n images of `folder` (copied into one folder), or variants."""
    out = os.path.join(scratch, "images")
    os.makedirs(out, exist_ok=True)
    if not folder:
        return variant_images(out, n)
    from agan_jax.train.many import find_images

    found = find_images(folder)
    if len(found) < n:
        raise ValueError(f"{folder} has {len(found)} images, {n} wanted")
    paths = []
    for p in found[:n]:
        dst = os.path.join(out, os.path.basename(p))
        shutil.copy(p, dst)
        paths.append(dst)
    return paths


def singles_wanted(singles: int | None, k_max: int) -> int:
    return k_max if singles is None else max(1, min(singles, k_max))


def suite(
    config: str,
    ks: Sequence[int],
    fit: str,
    iters: int | None,
    images: str | None,
    log: Callable[[str], None],
    extra: Sequence[str] = (),
    singles: int | None = None,
) -> tuple[str, dict]:
    """Runs the comparison; returns (markdown, raw results).

    `singles`: how many images train alone (default max(ks)); the sequential time
    of a larger K is then K x their mean, marked as extrapolated (every image has
    the same stage sizes and settings, so each lone run does the same work).
    """
    k_max = max(ks)
    n_alone = singles_wanted(singles, k_max)
    flags = [f"--config={config}", f"--config.data.fit={fit}", "--quiet"]
    if iters is not None:
        flags.append(f"--config.train.iters_per_stage={iters}")
    flags += list(extra)
    scratch = tempfile.mkdtemp(prefix="bench_many_")
    env = common.child_env()
    try:
        paths = folder_images(images, k_max, scratch)

        def measured(module: str, *args: str) -> common.Measured:
            m = common.run_measured(common.python_module(module, *flags, *args), env)
            if m.returncode:
                raise RuntimeError(f"{module} failed: {m.stderr}")
            return m

        alone = []
        for i, p in enumerate(paths[:n_alone]):
            workdir = os.path.join(scratch, "single", str(i))
            m = measured(
                "launch.train", f"--config.data.image={p}", f"--workdir={workdir}"
            )
            log(f"single {i}: {m.wall_s:.1f} s, {m.rss_mib:.0f} MiB")
            alone.append(m)
        groups = {}
        for k in ks:
            if k == 1:
                continue
            folder = os.path.join(scratch, f"in{k}")
            os.makedirs(folder, exist_ok=True)
            for p in paths[:k]:
                shutil.copy(p, folder)
            m = measured(
                "launch.train_many",
                f"--images={folder}",
                f"--workdir={os.path.join(scratch, f'group{k}')}",
                f"--config.train.models_per_call={k}",
            )
            log(f"group of {k}: {m.wall_s:.1f} s, {m.rss_mib:.0f} MiB")
            groups[k] = m
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    rows, raw = [], {"config": config, "fit": fit, "iters": iters, "runs": {}}
    mean = sum(m.wall_s for m in alone) / len(alone)
    for k in ks:
        all_alone = k <= len(alone)  # every image of K trained alone
        seq = sum(m.wall_s for m in alone[:k]) if all_alone else k * mean
        seq_rss = max(m.rss_mib for m in alone[:k])
        grp = groups.get(k)
        grp_s = seq if grp is None else grp.wall_s
        rows.append(
            [
                k,
                common.num(seq) + ("" if all_alone else " (K x mean)"),
                common.num(3600 * k / seq),
                "(= sequential)" if grp is None else common.num(grp_s),
                common.num(3600 * k / grp_s),
                common.num(seq / grp_s) + "x",
                common.num(seq_rss),
                common.num(seq_rss if grp is None else grp.rss_mib),
            ]
        )
        raw["runs"][k] = {
            "sequential_s": seq,
            "sequential_measured": all_alone,
            "grouped_s": grp_s,
            "sequential_rss_mib": seq_rss,
            "grouped_rss_mib": None if grp is None else grp.rss_mib,
        }
    head = (
        f"{common.environment()}\n\nFolder throughput, {config}, data.fit={fit}, "
        f"{'config' if iters is None else iters} iterations per stage, whole "
        "processes, compilation cache off\n\n"
    )
    text = head + common.table(
        [
            "K",
            "sequential s",
            "sequential img/h",
            "grouped s",
            "grouped img/h",
            "ratio",
            "seq. peak RSS MiB",
            "grouped peak RSS MiB",
        ],
        rows,
    )
    return text, raw
