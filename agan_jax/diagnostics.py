"""Per-stage diagnostics of a trained run: how each stage's samples compare with
the real image at that stage.

`per_stage(run)` gives one row per trained stage s:
  size         the stage's (h, w)
  sample_std   mean over N samples of the per-image std (over every pixel and
               channel) of the pyramid stopped at stage s: stages 0..s run with
               fresh noise, the output of stage s taken as it is (unclipped)
  real_std     the std of the training image resized to stage s (the training
               pyramid, `Run.reals()`)
  std_ratio    sample_std / real_std (below 1: samples flatter than the image)
  contrast, saturation
               `metrics.contrast` and `metrics.saturation` of those samples
               clipped to [-1, 1] against the real image at stage s: grey-level
               std and mean HSV saturation over the real image's (the columns of
               the evaluation table, per stage)
  diversity    SinGAN's pixel diversity of those samples against the real image
               at stage s (`metrics.pixel_diversity` of the unclipped samples); None
               for fewer than 2 samples. Where it falls from one stage to the
               next, that stage pulls the samples towards one layout
  attention    the mean of the attention map C of stage s over the N samples
               (families with attention, e.g. AGAN, above stage 0); None otherwise
  input_diversity, proposal_diversity, proposal_corr
               (attention families above stage 0; None otherwise) what stage s
               blends, x' = x_hat * C + x * (1 - C) (AGAN eq. 12), for the same
               samples: the pixel diversity of its input x (stage s-1's samples
               resized to stage s) and of G_A's proposal x_hat, both against the
               real image at stage s, and the correlation over the samples of
               x_hat and x (grayscale, per pixel, averaged over pixels). A convex
               blend of two weakly correlated images is less diverse than either:
               where proposal_corr is low, the stage averages diversity away
  noise_amp    the stage's noise amplitude (`Run.noise_amps[s]`)
  rec_rmse     RMSE of the reconstruction stopped at stage s
               (`Sampler.reconstruct(s + 1)`) against the real image at stage s

`write_per_stage(workdirs, out)` is `python -m launch.evaluate --per_stage`: a
markdown table per run in OUT/per_stage.md, every value in OUT/per_stage.json.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from agan_jax import checkpoint, metrics, pyramid, sampling
from agan_jax.errors import UserError
from agan_jax.forward import stage_noises
from agan_jax.models import agan, families
from agan_jax.run import Run

# (header, row key) of the markdown table.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("stage", "stage"),
    ("size", "size"),
    ("sample std", "sample_std"),
    ("real std", "real_std"),
    ("ratio", "std_ratio"),
    ("contrast", "contrast"),
    ("saturation", "saturation"),
    ("diversity", "diversity"),
    ("mean C", "attention"),
    ("in diversity", "input_diversity"),
    ("x_hat diversity", "proposal_diversity"),
    ("x_hat-in corr", "proposal_corr"),
    ("noise amp", "noise_amp"),
    ("rec RMSE", "rec_rmse"),
)


def stage_samples(sampler: sampling.Sampler, key, n: int, stop: int, attention):
    """n samples of the pyramid stopped at stage stop-1 (one vmap'd call), and the
    attention maps of the stages below `stop` that have one."""
    run = sampler.run
    fn = sampler.compiled(
        ("per_stage", n, stop, attention),
        lambda: sampling.make_sampler(run.spec, run.sizes, 0, stop, attention),
    )
    keys = sampling.stream_keys(key, np.arange(n))
    base = jnp.zeros((1, 1, 3), jnp.float32)
    out = fn(keys, run.g_vars[:stop], jnp.asarray(run.noise_amps), base)
    return out if attention else (out, [])


def stage_proposals(sampler: sampling.Sampler, key, stage: int, below) -> tuple:
    """For the samples `below` of stage-1 (sample i drawn with
    `sampling.stream_key(key, i)`):
    stage's input x (their resize to the stage) and G_A's proposal x_hat."""
    run = sampler.run
    spec, sizes = run.spec, run.sizes

    def make():
        gen = families.of(spec).make_generator(spec, stage)

        def one(k, variables, amp, prev):
            x = pyramid.resize(prev, tuple(sizes[stage]))
            z = stage_noises(spec, k, sizes, stage, stage + 1)[stage]
            _, sown = gen.apply(
                variables,
                x[None],
                z[None],
                amp,
                train=False,
                mutable=["intermediates"],
            )
            return x, sown["intermediates"][agan.PROPOSAL][0][0]

        return jax.vmap(one, in_axes=(0, None, None, 0))

    fn = sampler.compiled(("proposal", len(below), stage), make)
    keys = sampling.stream_keys(key, np.arange(len(below)))
    amp = jnp.asarray(run.noise_amps[stage], jnp.float32)
    return fn(keys, run.g_vars[stage], amp, below)


def grey_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """The correlation over samples (axis 0) of two NHWC sample sets, in grayscale
    (0.299 R + 0.587 G + 0.114 B) per pixel, averaged over the pixels."""
    ga = metrics.gray(np.asarray(a, np.float64))
    gb = metrics.gray(np.asarray(b, np.float64))
    ga, gb = ga - ga.mean(axis=0), gb - gb.mean(axis=0)
    cov = np.sum(ga * gb, axis=0)
    scale = np.sqrt(np.sum(ga * ga, axis=0) * np.sum(gb * gb, axis=0))
    return float(np.mean(cov / np.maximum(scale, 1e-12)))


def _contrast_saturation(images: np.ndarray, real: np.ndarray) -> dict[str, Any]:
    """Contrast and saturation of the samples (clipped to [-1, 1]) against the real
    image of their stage; None where the real image makes one undefined."""
    clipped = np.clip(images, -1.0, 1.0)
    flat = float(np.std(metrics.gray(real))) <= 1e-12
    return {
        "contrast": None if flat else metrics.contrast(clipped, real),
        "saturation": metrics.saturation(clipped, real),
    }


def per_stage(
    run: Run | sampling.Sampler, num_samples: int = 16, seed: int = 0
) -> list[dict[str, Any]]:
    """One row per trained stage (see the module docstring); every stage's samples
    use the keys of `Sampler.sample(jax.random.key(seed), num_samples)`."""
    if num_samples < 1:
        raise UserError(f"--num_samples must be at least 1, got {num_samples}")
    sampler = sampling.as_sampler(run)
    run = sampler.run
    attention = families.of(run.spec).attention
    reals = run.reals()
    key = jax.random.key(seed)
    rows, seen_maps, below = [], 0, None
    for s in range(run.num_stages):
        images, maps = stage_samples(sampler, key, num_samples, s + 1, attention)
        real = np.asarray(reals[s], np.float64)
        blend = dict.fromkeys(
            ("input_diversity", "proposal_diversity", "proposal_corr")
        )
        if attention and s > 0 and num_samples > 1:
            x, x_hat = (np.asarray(a) for a in stage_proposals(sampler, key, s, below))
            blend = {
                "input_diversity": metrics.pixel_diversity(x, real),
                "proposal_diversity": metrics.pixel_diversity(x_hat, real),
                "proposal_corr": grey_correlation(x_hat, x),
            }
        below = images
        images = np.asarray(images, np.float64)
        # The maps of stages 0..s; stage s has one when there is one more than
        # the stages below had.
        c = np.asarray(maps[-1], np.float64) if len(maps) > seen_maps else None
        seen_maps = len(maps)
        rec = np.asarray(sampler.reconstruct(s + 1), np.float64)
        sample_std = float(np.mean(np.std(images.reshape(num_samples, -1), axis=1)))
        real_std = float(np.std(real))
        rows.append(
            {
                "stage": s,
                "size": [int(run.sizes[s][0]), int(run.sizes[s][1])],
                "sample_std": sample_std,
                "real_std": real_std,
                "std_ratio": sample_std / real_std if real_std > 0 else None,
                **_contrast_saturation(images, real),
                "diversity": (
                    metrics.pixel_diversity(images, real) if num_samples > 1 else None
                ),
                "attention": None if c is None else float(np.mean(c)),
                **blend,
                "noise_amp": float(run.noise_amps[s]),
                "rec_rmse": float(np.sqrt(np.mean((rec - real) ** 2))),
            }
        )
    return rows


def _cell(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if value is None:
        return "-"
    if key == "size":
        return f"{value[0]}x{value[1]}"
    if key == "stage":
        return str(value)
    return f"{value:.4f}"


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The per-stage rows as a markdown table, columns `COLUMNS`."""
    lines = [
        "| " + " | ".join(h for h, _ in COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row, k) for _, k in COLUMNS) + " |")
    return "\n".join(lines)


def write_per_stage(
    workdirs: Sequence[str], out: str, num_samples: int = 16, seed: int = 0
) -> str:
    """`per_stage` of every run in `workdirs` (trained stages only): writes
    OUT/per_stage.md (a titled table per run) and OUT/per_stage.json; returns
    the markdown."""
    from agan_jax.evaluation import method_name

    if not workdirs:
        raise UserError("no run directories given; pass --workdirs=run1,run2")
    if num_samples < 1:
        raise UserError(f"--num_samples must be at least 1, got {num_samples}")
    runs = [checkpoint.load_run(w) for w in workdirs]
    entries, sections = [], []
    for workdir, run in zip(workdirs, runs, strict=True):
        if run.real is None:
            raise UserError(
                f"{workdir} holds no training image (real.npy missing); re-train it"
            )
        rows = per_stage(run, num_samples, seed)
        name = os.path.basename(os.path.normpath(workdir))
        method = method_name(run.meta or {})
        entries.append(
            {
                "workdir": os.path.abspath(workdir),
                "run": name,
                "method": method,
                "stages": rows,
            }
        )
        trained = f"{run.num_stages} of {len(run.sizes)} stages"
        sections.append(f"## {name} ({method}, {trained})\n\n{markdown_table(rows)}")
    text = "\n\n".join(sections)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "per_stage.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(out, "per_stage.json"), "w") as f:
        json.dump(
            {"num_samples": num_samples, "seed": seed, "runs": entries}, f, indent=2
        )
    return text
