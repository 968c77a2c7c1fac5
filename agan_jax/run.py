"""Run: a plain record of a trained (possibly partial) pyramid.

`checkpoint.load_run` makes one from a run directory; `sampling.Sampler` and the
applications read it. It holds what sampling needs (generators, noise amplitudes,
reconstruction noise, the training image) and nothing compiled.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from agan_jax import pyramid
from agan_jax.errors import UserError
from agan_jax.settings import ModelSpec, Settings

Size = tuple[int, int]


@dataclasses.dataclass(frozen=True)
class Run:
    """A trained pyramid: stages 0..num_stages-1 of `sizes`.

    Fields:
      settings: the settings it was trained with (run.json's config, read once).
      spec: the model's settings (its `kind` names the family): `settings.model`
        as loaded.
      sizes: (h, w) of every stage of the run, trained or not.
      g_vars: the generator variables of every trained stage.
      noise_amps: (num_stages,) noise amplitude of every trained stage.
      z_rec: the fixed stage-0 reconstruction input.
      real: the training image at the finest size (HWC), if known.
      meta: the run's run.json (schedule, sizes, image hash, ...); its config is
        `settings`.
      workdir: where it was loaded from.
    """

    settings: Settings
    spec: ModelSpec
    sizes: list[Size]
    g_vars: list[Any]
    noise_amps: np.ndarray
    z_rec: Any
    real: np.ndarray | None = None
    meta: dict = dataclasses.field(default_factory=dict)
    workdir: str | None = None

    @property
    def num_stages(self) -> int:
        """Number of trained stages."""
        return len(self.g_vars)

    @property
    def complete(self) -> bool:
        """Whether every stage of the pyramid is trained."""
        return self.num_stages == len(self.sizes)

    @property
    def schedule(self) -> str:
        """The pyramid schedule it was trained with."""
        return str(self.meta.get("schedule", ""))

    def reals(self) -> list[jax.Array]:
        """The real-image pyramid of the trained stages (needs the image)."""
        if self.real is None:
            raise UserError("this run holds no training image; re-train it")
        levels = pyramid.build(jnp.asarray(self.real), self.sizes)
        return levels[: self.num_stages]
