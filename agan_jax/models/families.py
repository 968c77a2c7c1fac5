"""The registry of model families: the only place that knows every `model.kind`.

A family is a `models.family.Family` record; adding one is a new file under
`agan_jax/models/` and one line in `FAMILIES` (docs/extending.md).
"""

from __future__ import annotations

import dataclasses
import functools

from agan_jax.errors import UserError
from agan_jax.models import agan, consingan, singan
from agan_jax.models.family import Family
from agan_jax.settings import ModelSpec, Problems, Settings

FAMILIES: dict[str, Family] = {
    "singan": singan.FAMILY,
    "agan": agan.FAMILY,
    "consingan": consingan.FAMILY,
}
KINDS = tuple(FAMILIES)


def get(kind: str) -> Family:
    """The family registered as `kind`; a UserError naming the known ones."""
    if kind not in FAMILIES:
        raise UserError(
            f"unknown model kind {kind!r}; use --config.model.kind=one of "
            f"{', '.join(FAMILIES)}"
        )
    return FAMILIES[kind]


def of(spec) -> Family:
    """The family of a `settings.ModelSpec`, its settings checked."""
    family = get(spec.kind)
    family.check(spec)
    return family


def settings_problems(s: Settings) -> list[str]:
    """Settings valid alone but not together, as "config.FIELD = VALUE: must be
    RANGE" lines: the model kind, the family's own checks (ConSinGAN's
    model.mode) and a coarsest stage its critic can read. (An update rule the
    family does not train with is refused by train/updates.py, before any work.)"""
    p = Problems()
    m = s.model
    try:
        family = get(m.kind)  # FAMILIES as it is now (tests register toy ones)
    except UserError as e:
        p.add("model.kind", m.kind, str(e))
        return p.lines
    if any(v is None for v in dataclasses.astuple(m)):
        return p.lines
    try:
        family.check(m)
    except UserError as e:
        p.add("model.mode", m.mode, str(e))
    t = s.train
    if t.stage0_rec_noise == "redraw" and t.update_rule is not None:
        rule = family.default_rule(m) if t.update_rule == "auto" else t.update_rule
        if rule != "singan":
            p.add(
                "train.stage0_rec_noise",
                t.stage0_rec_noise,
                "official SinGAN's z* redraw needs the update rule 'singan' "
                f"({m.kind} trains with {rule!r} here); use 'fixed'",
            )
    d = s.data
    if p.lines or d.min_size is None or d.min_size < 1:
        return p.lines
    shrink = _critic_shrink(dataclasses.replace(m, nfc=1, max_nfc=1))
    p.need(
        "data.min_size",
        d.min_size,
        lambda v: v > shrink,
        f"> {shrink}: the {m.kind} critic's valid convolutions (model.num_layers="
        f"{m.num_layers}, model.kernel={m.kernel}) remove {shrink} pixels from the "
        "coarsest stage",
    )
    return p.lines


def settings_from_config(config) -> Settings:
    """`Settings.from_config` with the family checks: what training reads."""
    return Settings.from_config(config, settings_problems)


@functools.lru_cache(maxsize=64)
def _critic_shrink(m: ModelSpec) -> int:
    """Pixels the stage-0 critic's valid convolutions remove from each side length
    (its input size minus its output size), from the module's shapes alone."""
    import jax
    import jax.numpy as jnp

    size = 64 * m.kernel
    module = FAMILIES[m.kind].make_discriminator(m, 0)
    x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    out = jax.eval_shape(lambda x: module.init_with_output(jax.random.key(0), x)[0], x)
    return size - int(out.shape[1])
