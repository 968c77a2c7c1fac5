"""Load, validate and normalise images and masks; save images, grids and GIFs.

Images inside the library are float32 HWC arrays in [-1, 1] (RGB). Files are read
and written with Pillow; resizing goes through `pyramid.resize`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import math
import os
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import ExifTags, Image, ImageOps

from agan_jax import pyramid
from agan_jax.errors import UserError

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike

_IMAGE_FIX = "pass an existing PNG/JPEG with --config.data.image=PATH"
_16BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


# Decoding at reduced size: when the caller resizes to a longer side of `target`
# pixels, the file is decoded (JPEG: `Image.draft`, DCT scaling by 1/2, 1/4 or 1/8)
# or box-reduced (`Image.reduce`) by an integer factor that keeps the longer side
# at least REDUCE_KEEP x target; the final antialiased resize then works from that.
# Files under 2 x REDUCE_KEEP x target on the longer side are decoded as before.
REDUCE_KEEP = 4
_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")


def _oriented_hw(img: Image.Image) -> tuple[int, int]:
    """(h, w) of an opened image once its EXIF orientation is applied (no decode)."""
    w, h = img.size
    try:
        orientation = img.getexif().get(ExifTags.Base.Orientation, 1)
    except (OSError, ValueError, SyntaxError):
        orientation = 1
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


def _reduce_factor(hw: tuple[int, int], target: int | None) -> int:
    """The integer reduction that keeps the longer side >= REDUCE_KEEP x target."""
    if target is None:
        return 1
    return max(1, max(hw) // (REDUCE_KEEP * target))


def _reduce(img: Image.Image, target: int | None) -> Image.Image:
    """`img` (loaded) box-reduced by `_reduce_factor`; as is when that is 1 or the
    mode has no reduce (then the final resize does all the work, as before)."""
    factor = _reduce_factor((img.height, img.width), target)
    if factor < 2:
        return img
    if img.mode in ("P", "PA"):  # as _decode converts them
        has_alpha = img.mode == "PA" or "transparency" in img.info
        img = img.convert("RGBA" if has_alpha else "RGB")
    try:
        return img.reduce(factor)
    except ValueError:  # e.g. modes "1" and "I;16"
        return img


def _bomb_error(p: Path, what: str, fix: str, e: Exception) -> UserError:
    found = _BOMB_PIXELS.search(str(e))
    pixels = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
    limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
    return UserError(
        f"{what} file {p} has {pixels}, above Pillow's decompression-bomb limit of "
        f"{limit:,} pixels; if it is a real image, downscale it first (training "
        f"uses at most data.max_size pixels per side, e.g. 4000 px is plenty); {fix}"
    )


def _open(
    path: PathLike, what: str, fix: str, target: int | None = None
) -> tuple[Image.Image, tuple[int, int]]:
    """Opens and decodes an image file, turning every failure into UserError.

    Returns the image (EXIF orientation applied) and the file's own (h, w) (also
    oriented). With `target` (the longer side the caller resizes to), a large file
    is decoded at reduced size (REDUCE_KEEP); the returned image is then smaller
    than the file.
    """
    if not str(path).strip():
        raise UserError(f"the {what} path is empty; {fix}")
    p = Path(path)
    if not p.exists():
        raise UserError(f"{what} file not found: {p}; {fix}")
    if p.is_dir():
        raise UserError(f"{what} path is a directory, not a file: {p}; {fix}")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", Image.DecompressionBombWarning)
            img = Image.open(p)
        for w in caught:
            logger.warning(
                "%s file %s: %s (decoded at reduced size where it is resized)",
                what,
                p,
                w.message,
            )
        with img:
            hw = _oriented_hw(img)
            factor = _reduce_factor(hw, target)
            if factor >= 2 and img.format == "JPEG":
                img.draft(img.mode, (-(-img.width // factor), -(-img.height // factor)))
            img.load()
            # Apply the EXIF orientation so the array matches what viewers show.
            return ImageOps.exif_transpose(_reduce(img, target)), hw
    except Image.DecompressionBombError as e:
        raise _bomb_error(p, what, fix, e) from e
    except Image.UnidentifiedImageError as e:
        raise UserError(
            f"{what} file {p} is not an image Pillow can read; {fix}"
        ) from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise UserError(
            f"{what} file {p} could not be decoded (truncated or corrupt: {e}); {fix}"
        ) from e


def _rescale_warn(x: np.ndarray, p: Path, mode: str) -> np.ndarray:
    """Min-max rescales `x` to [0, 1] and logs a warning saying so."""
    lo, hi = float(x.min()), float(x.max())
    logger.warning(
        "image %s (Pillow mode %s) has values in [%g, %g], outside the expected "
        "range; rescaled min..max to the full range. Save it as 8- or 16-bit PNG "
        "to control the scaling.",
        p,
        mode,
        lo,
        hi,
    )
    if hi == lo:
        return np.zeros_like(x)
    return (x - lo) / (hi - lo)


def _decode(img: Image.Image, p: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Pixels as float64 HxWxC in [0, 1] (C = 1 or 3) and alpha HxW in [0, 1] or None."""
    mode = img.mode
    if mode == "1":
        return np.asarray(img, dtype=np.float64)[..., None], None
    if mode == "L":
        return np.asarray(img, dtype=np.float64)[..., None] / 255.0, None
    if mode in ("LA", "La"):
        a = np.asarray(img.convert("LA"), dtype=np.float64) / 255.0
        return a[..., :1], a[..., 1]
    if mode in _16BIT_MODES:
        return np.asarray(img).astype(np.float64)[..., None] / 65535.0, None
    if mode == "I":
        x = np.asarray(img).astype(np.float64)
        if x.size and (x.min() < 0 or x.max() > 65535):
            x = _rescale_warn(x, p, mode)
        else:  # Pillow's usual carrier for 16-bit data.
            x = x / 65535.0
        return x[..., None], None
    if mode == "F":
        x = np.asarray(img).astype(np.float64)
        if not np.all(np.isfinite(x)):
            raise UserError(
                f"image {p} (float mode F) contains NaN or infinite values; "
                "save it as an 8- or 16-bit PNG"
            )
        if x.size and (x.min() < 0 or x.max() > 1):
            x = _rescale_warn(x, p, mode)
        return x[..., None], None
    if mode == "RGB":
        return np.asarray(img, dtype=np.float64) / 255.0, None
    if mode in ("RGBA", "RGBa"):
        a = np.asarray(img.convert("RGBA"), dtype=np.float64) / 255.0
        return a[..., :3], a[..., 3]
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in img.info
        return _decode(img.convert("RGBA" if has_alpha else "RGB"), p)
    try:  # CMYK, YCbCr, LAB, HSV, ...
        rgb = img.convert("RGB")
    except (ValueError, OSError) as e:
        raise UserError(
            f"image {p} has Pillow mode {mode}, which cannot be converted to RGB; "
            "save it as an 8-bit RGB PNG or JPEG"
        ) from e
    return np.asarray(rgb, dtype=np.float64) / 255.0, None


def _check_size_arg(name: str, value: int | None) -> None:
    """Raises UserError unless `value` is None or a positive int."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise UserError(
            f"{name} must be a positive integer, got {value!r}; "
            f"set --config.data.{name}=N with N >= 1"
        )


def load_image(
    path: PathLike,
    max_size: int | None = None,
    min_size: int | None = None,
    *,
    flag: str = "--config.data.image",
) -> np.ndarray:
    """Loads an image file as RGB float32 HWC in [-1, 1], optionally capped in size.

    Grayscale is replicated to 3 channels, palette and CMYK are converted, alpha is
    dropped (with a warning when not fully opaque), 16-bit data is scaled from
    0..65535. If the longer side exceeds `max_size` the image is resized by
    max_size / longer side (`pyramid.finest_size`: sides rounded up, as official
    SinGAN and ConSinGAN do);
    a shorter side below `min_size` (after resizing) is a UserError. A file much
    larger than max_size is decoded at reduced size first (`_open`: at least
    REDUCE_KEEP x max_size); the result keeps the size the full decode gives.
    `flag`: the command-line flag that gave `path`, named in error messages.
    """
    _check_size_arg("max_size", max_size)
    _check_size_arg("min_size", min_size)
    p = Path(path)
    fix = _IMAGE_FIX if flag == "--config.data.image" else _image_fix(flag)
    img, (h, w) = _open(path, "image", fix, target=max_size)
    x, alpha = _decode(img, p)
    if alpha is not None and np.any(alpha < 1.0):
        logger.warning(
            "image %s has transparent pixels (mode %s); the alpha channel was "
            "dropped and the colour under it kept. Flatten the image onto a "
            "background first if that is not what you want.",
            p,
            img.mode,
        )
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    image = (x * 2.0 - 1.0).astype(np.float32)
    # (h, w): the file's size; the image may have been decoded smaller.
    if max_size is not None and max(h, w) > max_size:
        # The official programs' size rule: ceil of the scaled sides.
        hw = pyramid.finest_size((h, w), max_size)
        image = np.array(pyramid.resize(image, hw), dtype=np.float32)
        image = np.clip(image, -1.0, 1.0)
    if min_size is not None and min(image.shape[:2]) < min_size:
        rh, rw = image.shape[:2]
        resized = (
            f" after resizing to max_size={max_size}" if (rh, rw) != (h, w) else ""
        )
        raise UserError(
            f"image {p} is {rh}x{rw} (HxW){resized}; its shorter side {min(rh, rw)} "
            f"is below min_size={min_size}. Use a larger image or lower "
            f"--config.data.min_size"
        )
    return image


def _image_fix(flag: str) -> str:
    """The fix of an image error for the image given by `flag`."""
    return f"pass an existing PNG/JPEG with {flag}=PATH"


def resolve_path(path: str) -> str:
    """A path as given, else relative to the project root (for the bundled data)."""
    if not str(path).strip() or os.path.exists(path) or os.path.isabs(path):
        return path
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    alt = os.path.join(root, path)
    return alt if os.path.exists(alt) else path


def file_size(path: PathLike) -> tuple[int, int] | None:
    """(h, w) of an image file as loaded (EXIF orientation applied), from its
    header alone; None if it cannot be read."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                return _oriented_hw(im)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def load_mask(
    path: PathLike, hw: tuple[int, int], *, flag: str = "--mask"
) -> np.ndarray:
    """Loads a mask file as float32 HxW in {0, 1} at size `hw` (white = 1);
    `flag`: the command-line flag that gave `path`, named in error messages."""
    h, w = (int(hw[0]), int(hw[1]))
    if h < 1 or w < 1:
        raise ValueError(f"load_mask: hw must be positive, got {hw}")
    p = Path(path)
    fix = f"pass an existing PNG mask with {flag}=PATH, white where the image changes"
    img, _ = _open(p, "mask", fix)
    x, alpha = _decode(img, p)
    if x.shape[-1] == 3:  # ITU-R 601 luma, as Pillow's convert("L").
        # Rounded: the weights sum to 0.9999999999999999 in float64, so pure white
        # would otherwise read as not quite 1 (and warn "not binary").
        gray = np.round(x @ np.array([0.299, 0.587, 0.114]), 12)
    else:
        gray = x[..., 0]
    if alpha is not None:  # Transparent counts as unpainted.
        gray = gray * alpha
    if np.any((gray > 0.0) & (gray < 1.0)):
        logger.warning(
            "mask %s is not binary (values between black and white); thresholded "
            "at 0.5. Save masks as pure black/white PNG to avoid this.",
            p,
        )
    if gray.shape != (h, w):
        gray = np.asarray(pyramid.resize(gray[..., None].astype(np.float32), (h, w)))
        gray = gray[..., 0]
    mask = (gray >= 0.5).astype(np.float32)
    if not mask.any():
        raise UserError(
            f"mask {p} has no pixels set (after thresholding at 0.5 and resizing to "
            f"{h}x{w}); paint the region to change in white"
        )
    return mask


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Maps [-1, 1] floats to uint8 0..255 (rounded, clipped)."""
    x = np.asarray(image, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError("to_uint8: image contains NaN or infinite values")
    return np.clip(np.rint((x + 1.0) * 127.5), 0, 255).astype(np.uint8)


def from_uint8(array: np.ndarray) -> np.ndarray:
    """Maps uint8 0..255 to float32 [-1, 1]; inverse of `to_uint8` up to quantisation."""
    a = np.asarray(array)
    if a.dtype != np.uint8:
        raise ValueError(f"from_uint8 expects a uint8 array, got {a.dtype}")
    return (a.astype(np.float32) / np.float32(127.5) - np.float32(1.0)).astype(
        np.float32
    )


def save_image(
    path: PathLike,
    image: np.ndarray,
    *,
    value_range: tuple[float, float] = (-1.0, 1.0),
) -> None:
    """Saves HWC (C = 1 or 3) or HxW values in `value_range` as an image (PNG).

    The format follows the file suffix (PNG when there is none); parent folders are
    created. The file is encoded in memory and replaces `path` atomically
    (`replace_atomically`): a kill leaves the old file or the new one, whole.
    """
    x = np.asarray(image, dtype=np.float64)
    if x.ndim == 3 and x.shape[-1] == 1:
        x = x[..., 0]
    if not (x.ndim == 2 or (x.ndim == 3 and x.shape[-1] == 3)):
        raise ValueError(
            f"save_image expects HxW, HxWx1 or HxWx3, got shape {x.shape}; "
            "use save_grid for a batch"
        )
    lo, hi = float(value_range[0]), float(value_range[1])
    if not hi > lo:
        raise ValueError(
            f"save_image: value_range must be (low, high), got {value_range}"
        )
    pixels = to_uint8((x - lo) / (hi - lo) * 2.0 - 1.0)
    p = Path(path)
    fmt = "PNG" if not p.suffix else Image.registered_extensions().get(p.suffix.lower())
    if fmt is None:
        raise UserError(
            f"cannot save image to {p} (unknown file extension {p.suffix}); use a "
            ".png file name"
        )
    buf = io.BytesIO()
    try:
        Image.fromarray(pixels).save(buf, format=fmt)
    except (ValueError, KeyError, OSError) as e:
        raise UserError(f"cannot save image to {p} ({e}); use a .png file name") from e
    data = buf.getvalue()
    replace_atomically(p, lambda f: f.write(data))


def replace_atomically(path: PathLike, write: Callable[[BinaryIO], object]) -> None:
    """Writes a file so that readers and kills see the old file or the whole new
    one, never a part: `write(f)` fills a temporary file in the same folder
    (`.NAME.PID.tmp`), which then replaces `path` (os.replace). Parent folders
    are created; the temporary file is removed if `write` fails.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.parent / f".{p.name}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def make_grid(
    images: np.ndarray | Sequence[np.ndarray],
    ncols: int | None = None,
    pad: int = 2,
    pad_value: float = 1.0,
) -> np.ndarray:
    """Tiles NHWC images into one HWC image, row-major, with `pad` px borders.

    Cell i sits at row i // ncols, column i % ncols, its top-left corner at
    (pad + row * (h + pad), pad + col * (w + pad)); the result is
    (rows * (h + pad) + pad) x (ncols * (w + pad) + pad). Unused cells and borders
    are `pad_value`.
    """
    x = np.asarray(np.stack(list(images)) if not hasattr(images, "ndim") else images)
    if x.ndim != 4:
        raise ValueError(f"make_grid expects NHWC images, got shape {x.shape}")
    n, h, w, c = x.shape
    if n == 0:
        raise ValueError("make_grid: no images")
    if ncols is None:
        ncols = math.ceil(math.sqrt(n))
    if ncols < 1 or pad < 0:
        raise ValueError(f"make_grid: need ncols >= 1 and pad >= 0, got {ncols}, {pad}")
    rows = math.ceil(n / ncols)
    grid = np.full(
        (rows * (h + pad) + pad, ncols * (w + pad) + pad, c), pad_value, np.float32
    )
    for i in range(n):
        y0 = pad + (i // ncols) * (h + pad)
        x0 = pad + (i % ncols) * (w + pad)
        grid[y0 : y0 + h, x0 : x0 + w] = x[i]
    return grid


def save_grid(
    path: PathLike,
    images: np.ndarray | Sequence[np.ndarray],
    ncols: int | None = None,
    pad: int = 2,
) -> None:
    """Saves NHWC [-1, 1] images as one grid image (see `make_grid`), atomically."""
    save_image(path, make_grid(images, ncols=ncols, pad=pad))


def save_gif(
    path: PathLike,
    frames: np.ndarray | Sequence[np.ndarray],
    fps: float = 10.0,
    loop: int = 0,
) -> None:
    """Saves NHWC [-1, 1] frames as an animated GIF (`loop=0`: forever).

    Pillow merges consecutive identical frames into one longer frame, so the file
    can hold fewer frames than given while playing for the same time.
    """
    if not fps > 0:
        raise UserError(f"GIF fps must be positive, got {fps}; pass fps > 0")
    x = np.asarray(np.stack(list(frames)) if not hasattr(frames, "ndim") else frames)
    if x.ndim != 4 or x.shape[0] == 0 or x.shape[-1] not in (1, 3):
        raise ValueError(
            f"save_gif expects NHWC frames with C = 1 or 3, got shape {x.shape}"
        )
    pixels = to_uint8(x)
    if pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    pil = [Image.fromarray(f) for f in pixels]
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    pil[0].save(
        p,
        format="GIF",
        save_all=True,
        append_images=pil[1:],
        duration=max(1, round(1000.0 / fps)),
        loop=int(loop),
    )


def image_hash(image: np.ndarray) -> str:
    """SHA-256 hex digest of an image's shape and float32 pixel bytes."""
    a = np.ascontiguousarray(np.asarray(image, dtype=np.float32))
    h = hashlib.sha256()
    h.update(repr(tuple(int(s) for s in a.shape)).encode())
    h.update(a.tobytes())
    return h.hexdigest()


def strip(images: np.ndarray | Sequence[np.ndarray], pad: int = 2) -> np.ndarray:
    """Places images side by side in one row: `make_grid(images, ncols=len(images))`."""
    return make_grid(images, ncols=len(images), pad=pad)
