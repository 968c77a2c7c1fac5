"""Streamed sampling to a folder: bounded memory, whole files, resumable.

`write_samples` draws samples in batches (`Sampler.stream`: one compiled call per
batch shape) and writes each batch as it comes, so memory does not grow with the
number of samples and time grows linearly with it. Sample i uses the key
`sampling.stream_key(key, i)`, whatever the batch size or where a run resumed.

Formats:
  png  one file per sample, `sample_%06d.png`, each written atomically (a
       temporary file in the same folder, then os.replace): a kill leaves whole
       files only.
  npy  one uint8 array (N, h, w, 3), `samples.npy`, filled in place as a memmap
       under a temporary name (`.samples.npy.partial`) and renamed when complete.

Both also write `grid.png` (the first up-to-64 samples) and, when asked,
`attention_stage_%02d.png` (the attention maps of those samples). The folder holds
`manifest.json` (seed, workdir, stages, start stage, scale, format, count written):
a re-run with the same request continues where the last one stopped; another
request into the same folder is refused unless `overwrite` clears it.
"""

from __future__ import annotations

import json
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import numpy as np
from PIL import Image

from agan_jax import image_io, sampling
from agan_jax.errors import UserError
from agan_jax.sampling import Batch, Sampler

MANIFEST = "manifest.json"
NPY = "samples.npy"
NPY_PARTIAL = ".samples.npy.partial"
GRID = "grid.png"
GRID_MAX = 64
FORMATS = ("png", "npy")
# What the request is: a folder holding another request's samples is refused.
IDENTITY = ("seed", "workdir", "stages", "start_stage", "scale", "size", "format")
# Every file this module writes (and `overwrite` removes); temporary files too.
_OURS = re.compile(
    r"^(sample_\d+\.png|grid\.png|attention_stage_\d+\.png|manifest\.json"
    r"|samples\.npy|\.samples\.npy\.partial)$"
)
_TEMP = re.compile(
    r"^\.(sample_\d+\.png|grid\.png|attention_stage_\d+\.png|manifest\.json)"
    r"\.\d+\.tmp$"
)
_SAMPLE = re.compile(r"^sample_(\d+)\.png$")
_MANIFEST_EVERY_S = 2.0


def sample_name(i: int) -> str:
    """The file name of sample i: sample_%06d.png (more digits from 1e6 on)."""
    return f"sample_{i:06d}.png"


class Result(NamedTuple):
    """What `write_samples` did: samples drawn now, samples in the folder, the
    sample size (h, w) and the seconds spent drawing and writing."""

    drawn: int
    total: int
    size: tuple[int, int]
    seconds: float


def check_out(out: str) -> None:
    """UserError unless `out` is a folder or can become one (no file in the way)."""
    path = os.path.abspath(out)
    probe = path
    while probe and not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if os.path.exists(probe) and not os.path.isdir(probe):
        where = "is" if probe == path else f"lies under {probe}, which is"
        raise UserError(
            f"--out={out} {where} an existing file, not a folder; pass a folder "
            "path (existing or new) as --out"
        )


def request(
    sampler: Sampler,
    seed: int,
    num_samples: int,
    start_stage: int = 0,
    scale: tuple[float, float] = (1.0, 1.0),
    fmt: str = "png",
) -> dict[str, Any]:
    """The manifest of a request (its `IDENTITY` fields, `num_samples`)."""
    run = sampler.run
    if fmt not in FORMATS:
        raise UserError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if num_samples < 1:
        raise UserError(f"number of samples must be >= 1, got {num_samples}")
    sampler.check_stage(start_stage, "start_stage")
    sizes = sampling.scaled_sizes(run.sizes[: run.num_stages], scale)
    return {
        "seed": int(seed),
        "workdir": os.path.realpath(run.workdir) if run.workdir else None,
        "stages": run.num_stages,
        "start_stage": int(start_stage),
        "scale": [float(scale[0]), float(scale[1])],
        "size": list(sizes[-1]),
        "format": fmt,
        "num_samples": int(num_samples),
    }


def read_manifest(out: str) -> dict[str, Any] | None:
    """The folder's manifest, or None when there is none."""
    path = os.path.join(out, MANIFEST)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            manifest = json.load(f)
        if not isinstance(manifest, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        raise UserError(
            f"{path} is unreadable ({e}); sample into another --out, or pass "
            "--overwrite to replace what the folder holds"
        ) from e
    problem = manifest_problem(manifest)
    if problem:
        raise UserError(
            f"{path} is not a manifest of launch.sample ({problem}); sample into "
            "another --out, or pass --overwrite to replace what the folder holds"
        )
    return manifest


def _count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _pair(v, kind) -> bool:
    return (
        isinstance(v, list)
        and len(v) == 2
        and all(isinstance(x, kind) and not isinstance(x, bool) for x in v)
    )


# A manifest's fields: what each must be (a test, and the words for it).
_FIELDS = {
    "seed": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "workdir": (lambda v: v is None or isinstance(v, str), "a path"),
    "stages": (_count, "an integer >= 0"),
    "start_stage": (_count, "an integer >= 0"),
    "scale": (lambda v: _pair(v, int | float), "[height scale, width scale]"),
    "size": (lambda v: _pair(v, int), "[height, width]"),
    "format": (lambda v: v in FORMATS, " or ".join(FORMATS)),
    "num_samples": (_count, "an integer >= 0"),
    "written": (_count, "an integer >= 0"),
}


def manifest_problem(manifest: dict[str, Any]) -> str | None:
    """The first field of a manifest that is not what `write_samples` writes
    ('written': 'lots'), or None. Missing fields are left to the request check."""
    for key, (ok, rule) in _FIELDS.items():
        if key in manifest and not ok(manifest[key]):
            return f'"{key}": {json.dumps(manifest[key])[:40]} is not {rule}'
    return None


def _write_manifest(out: str, manifest: dict[str, Any]) -> None:
    text = json.dumps(manifest, indent=1).encode()
    image_io.replace_atomically(os.path.join(out, MANIFEST), lambda f: f.write(text))


def _our_files(out: str) -> Iterator[str]:
    if not os.path.isdir(out):
        return
    with os.scandir(out) as entries:
        for e in entries:
            if (_OURS.match(e.name) or _TEMP.match(e.name)) and e.is_file():
                yield e.name


def clear(out: str) -> int:
    """Removes every file `write_samples` writes from `out` (nothing else);
    returns how many."""
    names = list(_our_files(out))
    for name in names:
        os.unlink(os.path.join(out, name))
    return len(names)


def _check_same(out: str, old: dict[str, Any], new: dict[str, Any]) -> None:
    keys = IDENTITY + (("num_samples",) if new["format"] == "npy" else ())
    diff = [k for k in keys if old.get(k) != new[k]]
    if diff:
        what = "; ".join(f"{k} {old.get(k)!r} there, {new[k]!r} now" for k in diff)
        raise UserError(
            f"--out={out} holds samples of another request ({what}); sample into "
            "another --out, or pass --overwrite to replace them"
        )


def prepare(out: str, req: dict[str, Any], overwrite: bool = False) -> dict:
    """Checks the folder against the request and returns the manifest to
    continue from (the old one with this request's fields, or a new one).

    UserError when the folder holds samples of another request, or samples
    without a manifest; `overwrite` first removes all of those.
    """
    check_out(out)
    if overwrite:
        clear(out)
    old = read_manifest(out)
    if old is None:
        found = [n for n in _our_files(out) if not _TEMP.match(n)]
        if found:
            raise UserError(
                f"--out={out} holds {found[0]} (and {len(found) - 1} more of our "
                "files) but no manifest.json: samples of an earlier launch.sample or "
                "another program; sample into another --out, or pass --overwrite to "
                "replace them"
            )
        return {**req, "written": 0}
    _check_same(out, old, req)
    return {**old, **req, "written": int(old.get("written", 0))}


class _Writer:
    """Hands batches to `write` on one background thread, in order, at most
    `depth` waiting (so memory stays bounded): encoding and writing files
    overlaps drawing the next batches. An error in `write` is raised by the next
    `submit` or on leaving the `with` block; later batches are then dropped."""

    def __init__(self, write: Callable[[Batch], None], depth: int = 4):
        self.write = write
        self.queue: queue.Queue = queue.Queue(depth)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while (item := self.queue.get()) is not None:
            if self.error is None:
                try:
                    self.write(item)
                except BaseException as e:  # raised again on the main thread
                    self.error = e

    def submit(self, item: Batch) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put(item)

    def __enter__(self) -> _Writer:
        self.thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is not None and self.error is None:
            self.error = exc  # stop writing: drop what waits
        self.queue.put(None)
        self.thread.join()
        if exc is None and self.error is not None:
            raise self.error


def _blocks(n: int, batch: int, need: Callable[[int], bool]) -> Iterator[int]:
    """The indices of every aligned block [k*batch, (k+1)*batch) ∩ [0, n) that
    holds an index `need`s: sample i is always drawn at position i % batch of a
    batch of the same size, so a resumed run computes exactly what an
    uninterrupted one does."""
    for lo in range(0, n, batch):
        hi = min(n, lo + batch)
        if any(need(i) for i in range(lo, hi)):
            yield from range(lo, hi)


class _Sink:
    """Where the samples of one request go: which are still needed, how a batch
    is written (on the writer thread, in order), the manifest's count and the
    progress bar."""

    def __init__(self, out: str, req: dict[str, Any], manifest: dict, on_batch):
        self.out, self.manifest, self.on_batch = out, manifest, on_batch
        self.n, self.fmt = req["num_samples"], req["format"]
        self.memmap = None
        self.drawn = 0
        if self.fmt == "png":
            self.have = sum(
                1
                for name in _our_files(out)
                if (m := _SAMPLE.match(name)) and int(m.group(1)) < self.n
            )
        else:
            self._open_npy(*req["size"])
        self.first = self.have
        self.last = time.monotonic()
        manifest["written"] = self.have
        _write_manifest(out, manifest)

    def _open_npy(self, h: int, w: int) -> None:
        """Continues samples.npy's partial file, or starts it (none written)."""
        if os.path.exists(os.path.join(self.out, NPY)) and (
            self.manifest["written"] >= self.n
        ):
            self.have = self.n
            return
        self.have = min(self.manifest["written"], self.n)
        partial = os.path.join(self.out, NPY_PARTIAL)
        if self.have and os.path.exists(partial):
            self.memmap = np.lib.format.open_memmap(partial, mode="r+")
        else:
            self.have = 0
            self.memmap = np.lib.format.open_memmap(
                partial, mode="w+", dtype=np.uint8, shape=(self.n, h, w, 3)
            )

    def path(self, i: int) -> str:
        return os.path.join(self.out, sample_name(i))

    def need(self, i: int) -> bool:
        if self.fmt == "png":
            return not os.path.exists(self.path(i))
        return i >= self.first

    def write(self, b: Batch) -> None:
        """Writes one batch (on the writer thread, in order)."""
        if self.fmt == "png":
            for i, im in zip(b.indices.tolist(), b.images, strict=True):
                if self.need(i):
                    image_io.save_image(self.path(i), im)
                    self.drawn += 1
                    self.have += 1
        else:
            self.memmap[b.indices] = image_io.to_uint8(b.images)
            self.drawn += int(np.sum(b.indices >= self.have))
            self.have = int(b.indices.max()) + 1
        self.bar.update(self.have - self.bar.n)
        if self.on_batch is not None:
            self.on_batch(b)
        if time.monotonic() - self.last > _MANIFEST_EVERY_S:
            if self.memmap is not None:
                self.memmap.flush()
            self.manifest["written"] = self.have
            _write_manifest(self.out, self.manifest)
            self.last = time.monotonic()

    def finish(self) -> None:
        """Renames a complete samples.npy into place; the manifest's last count."""
        if self.memmap is not None:
            self.memmap.flush()
            self.memmap = None
            os.replace(os.path.join(self.out, NPY_PARTIAL), os.path.join(self.out, NPY))
        self.manifest["written"] = self.have
        _write_manifest(self.out, self.manifest)


def write_samples(
    sampler: Sampler,
    seed: int,
    num_samples: int,
    out: str,
    *,
    start_stage: int = 0,
    scale: tuple[float, float] = (1.0, 1.0),
    batch_size: int = 0,
    fmt: str = "png",
    attention: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    on_batch: Callable[[Batch], None] | None = None,
) -> Result:
    """Draws samples 0..num_samples-1 of `jax.random.key(seed)` into `out`,
    skipping those already there (see the module docstring).

    Args:
      sampler: the run's Sampler (its cache keeps the compiled batch function).
      batch_size: samples per vmap'd call (0: `sampling.default_batch_size()`).
      fmt: 'png' or 'npy'.
      attention: also write the attention maps of the first up-to-64 samples
        (computed only then; none for SinGAN and ConSinGAN).
      overwrite: remove what an earlier request left in `out` first.
      progress: a tqdm progress bar on stderr.
      on_batch: called with every batch once its samples are on disk.

    Returns:
      A `Result`. Ctrl-C raises KeyboardInterrupt saying how many samples are
      written and that a re-run of the same command continues.
    """
    from tqdm.auto import tqdm

    req = request(sampler, seed, num_samples, start_stage, scale, fmt)
    if batch_size < 0:
        raise UserError(f"batch_size must be >= 0 (0: default), got {batch_size}")
    batch = min(num_samples, batch_size or sampling.default_batch_size())
    manifest = prepare(out, req, overwrite)
    os.makedirs(out, exist_ok=True)
    for name in _our_files(out):
        if _TEMP.match(name):  # left by a killed run: never a finished file
            os.unlink(os.path.join(out, name))
    n, key = num_samples, jax.random.key(seed)
    t0 = time.perf_counter()
    sink = _Sink(out, req, manifest, on_batch)
    sink.bar = tqdm(
        total=n,
        initial=sink.have,
        unit="sample",
        disable=not progress,
        dynamic_ncols=True,
    )
    try:
        if sink.have < n:
            stream = sampler.stream(
                key,
                _blocks(n, batch, sink.need),
                start_stage=start_stage,
                scale=scale,
                batch_size=batch,
            )
            with _Writer(sink.write) as writer:
                for b in stream:
                    writer.submit(b)
        sink.finish()
    except KeyboardInterrupt:
        raise KeyboardInterrupt(
            f"interrupted: {sink.have} of {n} samples are written to {out}; re-run "
            "the same command to continue from there"
        ) from None
    finally:
        sink.bar.close()
    seconds = time.perf_counter() - t0
    _write_grids(sampler, key, out, req, batch, attention)
    return Result(sink.drawn, sink.have, tuple(req["size"]), seconds)


def first_samples(out: str, fmt: str, m: int) -> np.ndarray:
    """The first m samples in `out` as float32 [-1, 1] (as written: 8-bit)."""
    if fmt == "npy":
        u8 = np.load(os.path.join(out, NPY), mmap_mode="r")[:m]
    else:
        u8 = []
        for i in range(m):
            with Image.open(os.path.join(out, sample_name(i))) as im:
                u8.append(np.asarray(im.convert("RGB")))
        u8 = np.stack(u8)
    return image_io.from_uint8(np.ascontiguousarray(u8))


def _write_grids(
    sampler: Sampler,
    key: jax.Array,
    out: str,
    req: dict[str, Any],
    batch: int,
    attention: bool,
) -> None:
    """grid.png of the first up-to-64 samples (read back from disk, so a resumed
    run writes the same bytes) and, with `attention`, their attention maps."""
    m = min(GRID_MAX, req["num_samples"])
    image_io.save_grid(os.path.join(out, GRID), first_samples(out, req["format"], m))
    if not attention:
        return
    parts: list[list[np.ndarray]] = []
    for b in sampler.stream(
        key,
        range(m),
        start_stage=req["start_stage"],
        scale=tuple(req["scale"]),
        batch_size=min(batch, m),
        with_attention=True,
    ):
        parts.append(b.attentions)
    stop = sampler.run.num_stages
    maps = [np.concatenate([p[j] for p in parts]) for j in range(len(parts[0]))]
    for s, a in zip(range(stop - len(maps), stop), maps, strict=True):
        image_io.save_grid(os.path.join(out, f"attention_stage_{s:02d}.png"), a * 2 - 1)
