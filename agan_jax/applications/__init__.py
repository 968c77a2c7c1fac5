"""What a trained pyramid can do besides sampling (docs/applications.md).

Every function takes a trained `Run` or a `sampling.Sampler` first, and an explicit
key, and is a pure function of its arguments: the same key gives the same result.
All of them run the one forward pass (`forward.pyramid_forward`, or the Sampler).
Compiled functions live in the Sampler's cache (`Sampler.compiled`, keys starting
with "applications"): one compile per application, stage and shape. A Run gets a
fresh Sampler on every call, so keep one Sampler to reuse the compiled functions.

- `injection`: `inject`, an image downsampled to stage n-1 enters stage n; stages
  n..S-1 run with fresh noise. Blending, paint-to-image and `sweep` build on it.
- `blending`: `harmonize` / `edit` inject a naive composite, then blend the output
  into the training image through a dilated and blurred mask (`MaskRecipe`).
- `paint`: `paint_to_image`, a paint injected, optionally quantised to the
  training image's k-means palette (`kmeans_palette`, `quantize_to_palette`).
- `sr`: `super_resolve`, upsample by the finest stage's scale factor and apply the
  finest generator, repeatedly (families with per-stage generators only).
- `animation`: `animate`, a second-order random walk of the noise around the
  reconstruction noise (`noise_walk`); all frames rendered in one vmap.
- `retarget`: `retarget_grid`, samples at several (height, width) scales in one image.
- `attention`: `save_attention`, a sample and the attention map C of every stage
  as PNGs (families with attention maps only).
- `common`: the checks every application shares.
"""

from agan_jax.applications.animation import animate, noise_walk
from agan_jax.applications.attention import check_attention, save_attention
from agan_jax.applications.blending import (
    EDITING,
    HARMONIZATION,
    Blend,
    MaskRecipe,
    blend,
    disk,
    edit,
    fit_naive_and_mask,
    harmonize,
    load_naive_and_mask,
    soft_mask,
    sweep,
)
from agan_jax.applications.common import check_complete, check_inject_stage
from agan_jax.applications.injection import inject
from agan_jax.applications.paint import (
    Painted,
    kmeans_palette,
    paint_to_image,
    quantize_to_palette,
)
from agan_jax.applications.retarget import retarget_grid
from agan_jax.applications.sr import (
    SuperResolved,
    check_stage_generators,
    sr_sizes,
    super_resolve,
)

__all__ = [
    "EDITING",
    "HARMONIZATION",
    "Blend",
    "MaskRecipe",
    "Painted",
    "SuperResolved",
    "animate",
    "blend",
    "check_attention",
    "check_complete",
    "check_inject_stage",
    "check_stage_generators",
    "disk",
    "edit",
    "fit_naive_and_mask",
    "harmonize",
    "inject",
    "kmeans_palette",
    "load_naive_and_mask",
    "noise_walk",
    "paint_to_image",
    "quantize_to_palette",
    "retarget_grid",
    "save_attention",
    "soft_mask",
    "sr_sizes",
    "super_resolve",
    "sweep",
]
