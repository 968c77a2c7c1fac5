"""Model families and the per-stage network factories (a plain dict, no registry)."""

from __future__ import annotations

import dataclasses

from flax import linen as nn

from agan_jax.errors import UserError
from agan_jax.models import consingan
from agan_jax.models.agan import AGANGenerator
from agan_jax.models.singan import Discriminator, SinGANGenerator, stage_width

KINDS = ("singan", "agan", "consingan")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Plain-Python description of a model, read from the config once."""

    kind: str = "agan"
    nfc: int = 32
    nfc_growth: int = 4
    max_nfc: int = 128
    num_layers: int = 5
    kernel: int = 3
    batch_norm: bool = True
    # ConSinGAN only (models/consingan.py): concurrently trained blocks, their
    # learning-rate scale, the training mode and the LeakyReLU slope.
    train_depth: int = 3
    lr_scale: float = 0.1
    mode: str = "generation"
    leaky_slope: float = 0.05

    @classmethod
    def from_config(cls, config) -> ModelSpec:
        """Reads config.model."""
        m = config.model
        if m.kind not in KINDS:
            raise UserError(
                f"unknown model kind {m.kind!r}; use --config.model.kind=one of {KINDS}"
            )
        if m.num_layers < 2:
            raise UserError("model.num_layers must be at least 2")
        mode = str(getattr(m, "mode", "generation"))
        if m.kind == "consingan" and mode not in consingan.MODES:
            raise UserError(
                f"unknown model.mode {mode!r}; use one of {consingan.MODES}"
            )
        if int(getattr(m, "train_depth", 3)) < 1:
            raise UserError("model.train_depth must be at least 1")
        return cls(
            kind=str(m.kind),
            nfc=int(m.nfc),
            nfc_growth=int(m.nfc_growth),
            max_nfc=int(m.max_nfc),
            num_layers=int(m.num_layers),
            kernel=int(m.kernel),
            batch_norm=bool(m.batch_norm),
            train_depth=int(getattr(m, "train_depth", 3)),
            lr_scale=float(getattr(m, "lr_scale", 0.1)),
            mode=mode,
            leaky_slope=float(getattr(m, "leaky_slope", 0.05)),
        )

    def width(self, stage: int) -> int:
        """Number of features of every conv at `stage`."""
        return stage_width(stage, self.nfc, self.nfc_growth, self.max_nfc)

    @property
    def pad(self) -> int:
        """Zero padding that the valid convolutions of one stack consume per side."""
        return self.num_layers * (self.kernel // 2)


_GENERATORS = {
    "singan": lambda stage: SinGANGenerator,
    "agan": lambda stage: SinGANGenerator if stage == 0 else AGANGenerator,
}


def make_generator(spec: ModelSpec, stage: int) -> nn.Module:
    """The generator of one pyramid stage (ConSinGAN: the whole net up to it)."""
    if spec.kind == "consingan":
        return consingan.make_generator(spec, stage)
    cls = _GENERATORS[spec.kind](stage)
    return cls(spec.width(stage), spec.num_layers, spec.kernel, spec.batch_norm)


def make_discriminator(spec: ModelSpec, stage: int) -> nn.Module:
    """The critic of one pyramid stage."""
    if spec.kind == "consingan":
        return consingan.make_discriminator(spec)
    return Discriminator(
        spec.width(stage), spec.num_layers, spec.kernel, spec.batch_norm
    )
