"""The registry of model families: the only place that knows every `model.kind`.

A family is a `models.family.Family` record; adding one is a new file under
`agan_jax/models/` and one line in `FAMILIES` (docs/extending.md).
"""

from __future__ import annotations

from agan_jax.errors import UserError
from agan_jax.models import agan, consingan, singan
from agan_jax.models.family import Family

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
