"""What every application shares: the run checks, image checks and a resize.

Every application takes a `Run` or a `sampling.Sampler` first; `sampler_of` makes
the one Sampler it compiles into, and the checks below accept either.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from agan_jax import pyramid, sampling
from agan_jax.errors import UserError
from agan_jax.models import families
from agan_jax.run import Run, Size
from agan_jax.sampling import Sampler

RunLike = Run | Sampler


def sampler_of(run: RunLike) -> Sampler:
    """The Sampler as given, or a new one over a Run (`sampling.as_sampler`)."""
    return sampling.as_sampler(run)


def run_of(run: RunLike) -> Run:
    """The Run of a Run or a Sampler."""
    return run.run if isinstance(run, Sampler) else run


def require_capability(run: RunLike, flag: str, problem: str) -> None:
    """UserError `problem` unless the run's family has the capability `flag` (a
    boolean field of `models.family.Family`); the message names the families
    that have it."""
    run = run_of(run)
    if getattr(families.of(run.spec), flag):
        return
    able = [k for k, f in families.FAMILIES.items() if getattr(f, flag)]
    configs = ", ".join(f"configs/{k}.py" for k in able)
    raise UserError(f"{problem}. Use a run of kind {' or '.join(able)} ({configs})")


def check_complete(run: RunLike) -> None:
    """UserError unless every stage of the run is trained and it holds its image."""
    run = run_of(run)
    total = len(run.sizes)
    if run.num_stages < total:
        raise UserError(
            f"{run.workdir or 'this run'} has {run.num_stages} of {total} stages "
            "trained; finish training first (re-run python -m launch.train with the "
            "same --workdir to resume)"
        )
    if run.real is None:
        raise UserError(
            f"{run.workdir or 'this run'} holds no training image (real.npy); "
            "train it again with python -m launch.train"
        )


def check_inject_stage(run: RunLike, stage: int) -> None:
    """UserError unless 1 <= stage <= S-1 (stage 0 has no previous stage to inject)."""
    run = run_of(run)
    last = run.num_stages - 1
    if isinstance(stage, bool) or not isinstance(stage, int | np.integer):
        raise UserError(f"start_stage must be an integer in [1, {last}], got {stage!r}")
    if not 1 <= stage <= last:
        raise UserError(
            f"start_stage={stage} is outside [1, {last}] for this run of "
            f"{run.num_stages} stages; an image is injected at a stage n >= 1 "
            f"(it replaces the output of stage n-1), so pick n in 1..{last}: "
            "low n changes more, high n only adds texture"
        )


def as_image(image: Any, what: str) -> np.ndarray:
    """An HWC float32 RGB array or a UserError naming `what`."""
    x = np.asarray(image, dtype=np.float32)
    if x.ndim != 3 or x.shape[-1] != 3 or min(x.shape[:2]) < 1:
        raise UserError(
            f"{what} must be an RGB image (HxWx3), got shape {x.shape}; load it "
            "with image_io.load_image"
        )
    return x


def training_image(run: RunLike) -> np.ndarray:
    """The training image of a complete run (HWC float32); UserError otherwise."""
    run = run_of(run)
    check_complete(run)
    return np.asarray(run.real, dtype=np.float32)


def resize(image: np.ndarray, hw: Size) -> np.ndarray:
    """Antialiased bicubic resize of an HWC numpy image (no-op at the same size)."""
    if tuple(image.shape[:2]) == tuple(hw):
        return np.asarray(image, np.float32)
    return np.asarray(pyramid.resize(jnp.asarray(image), hw), np.float32)


def cache_key(*parts: Any) -> tuple:
    """The key of an application's compiled function in `Sampler.cache`."""
    return ("applications", *parts)
