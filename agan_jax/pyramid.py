"""Stage sizes for every schedule, antialiased bicubic resize, real-image pyramid."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from agan_jax.errors import UserError


def resize(image: jax.Array, hw: tuple[int, int]) -> jax.Array:
    """Bicubic resize of an HWC or NHWC image to `hw`, antialiased when shrinking."""
    h, w = int(hw[0]), int(hw[1])
    if image.ndim == 3:
        shape = (h, w, image.shape[-1])
    elif image.ndim == 4:
        shape = (image.shape[0], h, w, image.shape[-1])
    else:
        raise ValueError(f"resize expects HWC or NHWC, got shape {image.shape}")
    if tuple(image.shape) == shape:
        return image
    return jax.image.resize(image, shape, method="cubic", antialias=True)


SCHEDULES = ("geometric", "cos", "quad", "circ", "log")


def upsample_official(x: jax.Array, hw: tuple[int, int], scale: float) -> jax.Array:
    """Official SinGAN's step up its pyramid, in [-1, 1] floats: the image clipped
    and floored to 8 bits (its `imresize` converts a tensor to uint8 by truncation
    first), resized bicubically by `scale` (1 / its scale factor) to
    `scaled_size`, that cropped to hw at the top left (its `[:, :, 0:h, 0:w]`),
    and clipped to [-1, 1] (its conversion back clamps)."""
    q = jnp.floor(jnp.clip((x + 1.0) * 0.5, 0.0, 1.0) * 255.0) / 255.0
    big = scaled_size((int(x.shape[-3]), int(x.shape[-2])), scale)
    y = resize(q * 2.0 - 1.0, big)[..., : int(hw[0]), : int(hw[1]), :]
    return jnp.clip(y, -1.0, 1.0)


def upsampler(mode: str, sizes):
    """(x, stage) -> x brought to sizes[stage]: `resize` to that size (bicubic),
    or ("official", geometric pyramids) `upsample_official` by 1 / r, r the
    pyramid's scale factor (min side of stage 0 / of the finest, to the power
    1 / (stages - 1))."""
    if mode == "official":
        r = (min(sizes[0]) / min(sizes[-1])) ** (1.0 / (len(sizes) - 1))
        return lambda x, s: upsample_official(x, tuple(sizes[s]), 1.0 / r)
    return lambda x, s: resize(x, tuple(sizes[s]))


def scaled_size(hw: tuple[int, int], scale: float) -> tuple[int, int]:
    """The size the official programs' `imresize` gives an image of size hw resized
    by `scale`: ceil(side * scale) of the float64 product, per side (no tolerance:
    a product of 25.000000000000004 gives 26, as theirs does)."""
    return math.ceil(hw[0] * scale), math.ceil(hw[1] * scale)


def finest_size(hw: tuple[int, int], max_size: int) -> tuple[int, int]:
    """The training size of an image of size hw: scaled by min(max_size / longer
    side, 1) with `scaled_size`, as official SinGAN and ConSinGAN resize it
    (colusseum, 188x250, at max_size 64: 49x64)."""
    return scaled_size(hw, min(max_size / max(hw), 1))


def _check_schedule(schedule: str) -> None:
    """Raise UserError unless `schedule` is one of SCHEDULES."""
    if schedule not in SCHEDULES:
        raise UserError(
            f"unknown pyramid schedule {schedule!r}; "
            f"set pyramid.schedule to one of {', '.join(SCHEDULES)}"
        )


def exponents(schedule: str, n: int) -> np.ndarray:
    """Exponents e(k), k = 1..n, so the image downsampled k times is x0 * r**e(k).

    geometric (SinGAN): e(k) = k; cos, quad, circ (AGAN eqs. 2-4) and log
    (ConSinGAN: e(k) = 1 + (n-1) log(k) / log(n)). All satisfy e(1) = 1 and e(n) = n; for
    n = 1 the result is [1.0] (the closed forms would divide by zero).
    """
    _check_schedule(schedule)
    n = int(n)
    if n < 1:
        raise UserError(
            f"the number of downsamplings must be at least 1, got {n}; "
            "use at least 2 pyramid stages"
        )
    k = np.arange(1, n + 1, dtype=np.float64)
    if n == 1 or schedule == "geometric":
        return k
    if schedule == "log":  # ConSinGAN's expression, evaluated in its order
        slope = (n - 1) / math.log(n)
        return np.asarray([slope * math.log(i) + 1 for i in range(1, n + 1)])
    big_n = float(n)
    if schedule == "cos":
        e = (big_n - 1) * np.cos(np.pi * (big_n - k) / (2 * (big_n - 1))) + 1
    elif schedule == "quad":
        e = big_n - (big_n - k) ** 2 / (big_n - 1)
    else:  # circ
        e = np.sqrt((big_n - 1) ** 2 - (big_n - k) ** 2) + 1
    return e.astype(np.float64)


def num_geometric_stages(
    original_hw: tuple[int, int], min_size: int, max_size: int, r0: float = 0.75
) -> int:
    """Number of SinGAN (geometric) stages S from the ORIGINAL image size, at least 2.

    S - 1 = ceil(log(min_size / min(H, W)) / log(r0)) + 1
            - ceil(log(min(max_size, max(H, W)) / max(H, W)) / log(r0)),
    evaluated as official SinGAN does (float64, no tolerance). This is its count
    (`stop_scale`), which gives 5 stages at max_size 64 and 7 at 128 for the
    188x250 colusseum image (the formula without the `+ 1` gives one stage less).
    """
    h, w = int(original_hw[0]), int(original_hw[1])
    if h < 1 or w < 1:
        raise UserError(f"image size must be positive, got {h}x{w}; check the image")
    if min_size < 1 or max_size < 1:
        raise UserError(
            f"data.min_size ({min_size}) and data.max_size ({max_size}) must be "
            "positive; set them to positive integers"
        )
    if not 0.0 < r0 < 1.0:
        raise UserError(f"pyramid.r0 must lie in (0, 1), got {r0}; use e.g. 0.75")
    log_r0 = math.log(r0)
    coarse = math.ceil(math.log(min_size / min(h, w)) / log_r0)
    top = math.ceil(math.log(min(max_size, max(h, w)) / max(h, w)) / log_r0)
    return max(coarse + 1 - top + 1, 2)


def stage_sizes(
    schedule: str, finest_hw: tuple[int, int], num_stages: int, min_size: int
) -> list[tuple[int, int]]:
    """(h, w) of every stage, coarsest first; the last entry is `finest_hw` exactly.

    With N = num_stages - 1, m = min(finest_hw) and r = (min_size / m)**(1 / N),
    stage s is the image downsampled k = N - s times, resized by r**e(k) with the
    official programs' rule (`scaled_size`: ceil of the float64 product), so
    geometric and log sizes equal official SinGAN's and ConSinGAN's for every
    image and max_size; AGAN's schedules use the same rule.
    """
    _check_schedule(schedule)
    h, w = int(finest_hw[0]), int(finest_hw[1])
    num_stages = int(num_stages)
    if num_stages < 2:
        raise UserError(
            f"a pyramid needs at least 2 stages, got {num_stages}; "
            "set pyramid.num_stages to 2 or more"
        )
    if min_size < 1:
        raise UserError(
            f"data.min_size must be positive, got {min_size}; set it to e.g. 25"
        )
    m = min(h, w)
    if m < min_size:
        raise UserError(
            f"the training image is {h}x{w}, its shorter side {m} is smaller than "
            f"data.min_size={min_size}; lower data.min_size or use a larger image"
        )
    n = num_stages - 1
    r = math.pow(min_size / m, 1 / n)
    e = exponents(schedule, n)
    # e[k - 1] with k = n - s downsamplings; stage n is the image itself.
    return [scaled_size((h, w), math.pow(r, float(e[n - s - 1]))) for s in range(n)] + [
        (h, w)
    ]


def stage_sizes_for(
    pyr, data, finest_hw: tuple[int, int], original_hw: tuple[int, int]
) -> list[tuple[int, int]]:
    """Stage sizes from `settings.PyramidSettings` and `settings.DataSettings`."""
    _check_schedule(pyr.schedule)
    if pyr.schedule == "geometric":
        num_stages = num_geometric_stages(
            original_hw, data.min_size, data.max_size, pyr.r0
        )
    else:
        num_stages = pyr.num_stages
    sizes = stage_sizes(pyr.schedule, finest_hw, num_stages, data.min_size)
    return merge_close_stages(sizes, pyr.min_step)


def step(a: tuple[int, int], b: tuple[int, int]) -> float:
    """How much larger size b is than size a: the mean of the h and w ratios."""
    return float((b[0] / a[0] + b[1] / a[1]) / 2.0)


def merge_close_stages(
    sizes: list[tuple[int, int]], min_step: float
) -> list[tuple[int, int]]:
    """`sizes` without the stages less than `min_step` larger than the stage kept
    below them (`step`); 0 or 1 (off): `sizes` as given.

    The coarsest and the finest stage always stay: walking up from the coarsest,
    a stage is kept when it is at least `min_step` larger than the last kept one;
    if the finest is then less than `min_step` above the last kept stage, that
    stage goes instead (unless it is the coarsest). Stages are merged, not
    re-spaced: every stage left is one the schedule put there, fewer of them,
    between the same coarsest (data.min_size) and finest sizes; the same number
    of stages re-spaced to steps of at least `min_step` may not fit between them
    (stonehenge at 64 px: 25x62 to 26x64).
    """
    if min_step <= 1:
        return list(sizes)
    kept = [sizes[0]]
    for hw in sizes[1:-1]:
        if step(kept[-1], hw) >= min_step:
            kept.append(hw)
    if len(kept) > 1 and step(kept[-1], sizes[-1]) < min_step:
        kept.pop()
    return kept + [sizes[-1]]


def step_weight(sizes: list[tuple[int, int]], s: int) -> float:
    """log(step into stage s) / log(mean step): the log of the stage's `step`
    over the mean of those logs over stages 1.., so the weights of stages 1..
    sum to len(sizes) - 1 (circ at 49x64, 6 stages: 0.26, 0.36, 0.79, 2.61,
    0.99). 1.0 for every stage when no stage is larger than the one below."""
    if not 1 <= s < len(sizes):
        raise UserError(
            f"stage index {s} has no previous stage in a {len(sizes)}-stage "
            f"pyramid; use 1 <= s <= {len(sizes) - 1}"
        )
    logs = [math.log(step(sizes[i - 1], sizes[i])) for i in range(1, len(sizes))]
    total = sum(logs)
    if total <= 0:
        return 1.0
    return logs[s - 1] * len(logs) / total


def build(image: jax.Array, sizes: list[tuple[int, int]]) -> list[jax.Array]:
    """Real-image pyramid: each level resized directly from `image`, clipped to [-1, 1].

    `image` is HWC or NHWC at `sizes[-1]`; the last level is `image` itself.
    """
    hw = tuple(int(x) for x in image.shape[-3:-1])
    if hw != tuple(sizes[-1]):
        raise UserError(
            f"image is {hw[0]}x{hw[1]} but the finest stage is "
            f"{sizes[-1][0]}x{sizes[-1][1]}; compute the sizes from this image"
        )
    levels = [jnp.clip(resize(image, size), -1.0, 1.0) for size in sizes[:-1]]
    levels.append(image)
    return levels


def scale_factor_between(sizes: list[tuple[int, int]], s: int) -> float:
    """Size ratio of stage s to stage s-1, the mean of the h and w ratios."""
    if not 1 <= s < len(sizes):
        raise UserError(
            f"stage index {s} has no previous stage in a {len(sizes)}-stage "
            f"pyramid; use 1 <= s <= {len(sizes) - 1}"
        )
    (h0, w0), (h1, w1) = sizes[s - 1], sizes[s]
    return float((h1 / h0 + w1 / w0) / 2.0)
