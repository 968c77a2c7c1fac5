"""Many images at once: a folder trained as groups of models.

Every image gets an ordinary run directory (WORKDIR/<image stem>/) that
sampling, evaluation and the applications read as any run. Images whose runs
have the same stage sizes and the same stages saved form a group; a group trains
as one compiled program per stage over a stacked model axis (train/group.py),
at most `train.models_per_call` models per program. A group of one trains as
`launch.train` does (unbatched). Model i of a group equals its image trained
alone with the same seed. `data.fit` ('HxW') gives every image one size, so a
whole folder is one group.

Re-running the same command resumes every image at its first unfinished stage
and skips finished ones. An image that cannot be trained (unreadable, too small,
a run of other settings in its directory, locked) is reported by name and
skipped; the rest train. WORKDIR/summary.json lists every image with its status.
With several processes (`Process`: one per host, or per device group), each
takes every P-th image (by sorted name) and writes only those runs; the
processes share nothing but the workdir.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import json
import os
import time
from collections import defaultdict

import jax
from tqdm.auto import tqdm

from agan_jax import lock as run_lock
from agan_jax.errors import UserError
from agan_jax.models import families
from agan_jax.settings import config_to_dict
from agan_jax.train.group import Models, model_mesh
from agan_jax.train.loop import (
    Member,
    prepare_member,
    train_members,
    trained_already,
)
from agan_jax.train.runner import TrainingDiverged

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")
SUMMARY = "summary.json"


def default_models_per_call() -> int:
    """Models per compiled program when `train.models_per_call` is 0 (auto).

    CPU: 4, the largest K measured (python -m launch.bench --suite=many;
    docs/performance.md, "Many images": a group saves compilation only, at a
    little more memory). An accelerator: 64, where one 64-250 px stage leaves most
    of the device idle (not measured).
    """
    return 4 if jax.default_backend() == "cpu" else 64


def find_images(images: str) -> list[str]:
    """The image files of a folder (by suffix), a glob pattern, or a
    comma-separated list of files, sorted; UserError when there is none."""
    if os.path.isdir(images):
        paths = [
            os.path.join(images, f)
            for f in os.listdir(images)
            if f.lower().endswith(IMAGE_SUFFIXES)
            and os.path.isfile(os.path.join(images, f))
        ]
    elif "," in images:
        paths = [p.strip() for p in images.split(",") if p.strip()]
    else:
        paths = [p for p in glob.glob(images) if os.path.isfile(p)]
    if not paths:
        raise UserError(
            f"--images={images} names no image file (a folder of "
            f"{'/'.join(s[1:] for s in IMAGE_SUFFIXES)} files, a glob such as "
            "'photos/*.jpg', or a comma-separated list)"
        )
    return sorted(paths)


def run_names(paths: list[str]) -> list[str]:
    """One run directory name per image: its stem, or (when stems collide) its
    file name with '.' as '_'; distinct names in order."""
    stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    names = []
    for p, stem in zip(paths, stems, strict=True):
        name = stem if stems.count(stem) == 1 else os.path.basename(p).replace(".", "_")
        while name in names:
            name += "_"
        names.append(name)
    return names


@dataclasses.dataclass
class Entry:
    """One image of the folder and what became of it."""

    name: str
    image: str
    status: str = "pending"  # trained, done (already), skipped, failed, other_process
    reason: str = ""
    stages: int = 0

    def row(self) -> dict:
        out = {"image": self.image, "status": self.status, "stages": self.stages}
        return {**out, "reason": self.reason} if self.reason else out


@dataclasses.dataclass(frozen=True)
class Process:
    """This process's place among the processes splitting one folder."""

    rank: int = 0
    count: int = 1

    def __post_init__(self):
        if self.count < 1 or not 0 <= self.rank < self.count:
            raise UserError(
                f"process {self.rank} of {self.count}: the process id must be in "
                f"0..{self.count - 1} and the process count at least 1"
            )


# Where cluster launchers put each process's rank and the process count.
CLUSTER_ENVIRONMENTS = (
    ("SLURM_PROCID", "SLURM_NTASKS"),  # srun
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),  # Open MPI mpirun
    ("PMI_RANK", "PMI_SIZE"),  # MPICH, Intel MPI
)


def process_from_environment(environ=None) -> Process:
    """The rank and count a cluster launcher (srun, mpirun) gave this process."""
    environ = os.environ if environ is None else environ
    for rank, size in CLUSTER_ENVIRONMENTS:
        if rank in environ and size in environ:
            try:
                return Process(int(environ[rank]), int(environ[size]))
            except ValueError:
                raise UserError(
                    f"{rank}={environ[rank]!r} / {size}={environ[size]!r} are not "
                    "integers; pass --process_id and --num_processes instead"
                ) from None
    names = ", ".join(f"{r}/{s}" for r, s in CLUSTER_ENVIRONMENTS)
    raise UserError(
        f"--distributed: none of {names} is set (not started by srun or mpirun?); "
        "pass --num_processes=N --process_id=I instead"
    )


def write_summary(
    workdir: str, entries: list[Entry], seconds: float, process: Process = Process()
) -> str:
    """WORKDIR/summary.json: every image's status (atomically).

    Several processes: each also writes its own entries to summary.p<rank>.json
    and merges every process's file into summary.json, so the last process to
    finish leaves the whole folder's statuses.
    """
    os.makedirs(workdir, exist_ok=True)
    rows = {e.name: e.row() for e in entries}
    if process.count > 1:
        own = {e.name: e.row() for e in entries if e.status != "other_process"}
        _write_json(os.path.join(workdir, f"summary.p{process.rank}.json"), own)
        for other in sorted(glob.glob(os.path.join(workdir, "summary.p*.json"))):
            try:
                with open(other) as f:
                    rows.update(json.load(f))
            except (OSError, json.JSONDecodeError):
                continue  # being written: its process merges it when it ends
    counts: dict[str, int] = defaultdict(int)
    for row in rows.values():
        counts[row["status"]] += 1
    data = {"counts": dict(counts), "seconds": round(seconds, 3), "runs": rows}
    path = os.path.join(workdir, SUMMARY)
    _write_json(path, data)
    return path


def _write_json(path: str, data) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


def group_key(member: Member, last: int) -> str:
    """Members that can share compiled programs: same settings but the image,
    same stage sizes, same stages saved and wanted."""
    config = dict(member.meta["config"])
    config["data"] = {k: v for k, v in config["data"].items() if k != "image"}
    config["train"] = {
        k: v
        for k, v in config["train"].items()
        if k not in ("models_per_call", "group_mode", "compile_ahead")
    }
    saved = member.store.saved_stage_count()
    return json.dumps([config, member.sizes, saved, last], sort_keys=True)


def chunks(items: list, n: int) -> list[list]:
    """`items` in order, in the fewest pieces of at most n, their sizes at most
    one apart."""
    if not items:
        return []
    k = -(-len(items) // n)
    base, extra = divmod(len(items), k)
    out, start = [], 0
    for j in range(k):
        size = base + (j < extra)
        out.append(items[start : start + size])
        start += size
    return out


def train_many(
    config,
    images: str,
    workdir: str,
    *,
    stop_after: int | None = None,
    progress: bool = True,
    log=print,
    process: Process = Process(),
) -> list[Entry]:
    """Trains one run per image of `images` in WORKDIR/<name>/; returns the
    entries (also in WORKDIR/summary.json). A vmap'd group's model axis is
    sharded over this process's devices. UserError when the folder has no usable
    image.
    """
    t0 = time.time()
    paths = find_images(images)
    entries = [Entry(n, p) for n, p in zip(run_names(paths), paths, strict=True)]
    rank, ranks = process.rank, process.count
    mine = [e for i, e in enumerate(entries) if i % ranks == rank]
    for i, e in enumerate(entries):
        if i % ranks != rank:
            e.status = "other_process"
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise UserError(f"--workdir {workdir} is a file; pass a directory")
    groups: dict[str, list[Member]] = defaultdict(list)
    lasts: dict[str, int] = {}
    by_name = {e.name: e for e in entries}
    with contextlib.ExitStack() as held:
        for e in mine:
            cfg = config.copy_and_resolve_references()
            with cfg.unlocked():
                cfg.data.image = e.image
            try:
                settings = families.settings_from_config(cfg)
                member, last = prepare_member(
                    settings,
                    config_to_dict(cfg),
                    os.path.join(workdir, e.name),
                    stop_after,
                    e.name,
                )
                if trained_already(member, last):
                    e.status, e.stages = "done", member.store.saved_stage_count()
                    continue
                held.enter_context(run_lock.RunLock(member.workdir, "training"))
                key = group_key(member, last)
            except UserError as err:
                e.status, e.reason = "skipped", str(err)
                log(f"skipped {e.image}: {err}")
                continue
            groups[key].append(member)
            lasts[key] = last
        # (A process with no image of its own, when processes outnumber the
        # images, has nothing to do and no error.)
        if mine and not any(e.status in ("pending", "done") for e in mine):
            write_summary(workdir, entries, time.time() - t0, process)
            raise UserError(
                f"no usable image in --images={images} (see "
                f"{os.path.join(workdir, SUMMARY)}); fix or remove the images named "
                "above"
            )
        mesh = model_mesh()
        for key, members in groups.items():
            per_call = (
                members[0].settings.train.models_per_call or default_models_per_call()
            )
            for part in chunks(members, per_call):
                names = ", ".join(m.name for m in part)
                mode = part[0].settings.train.group_mode
                models = Models.group(len(part), mode, mesh) if len(part) > 1 else None
                if progress and len(part) > 1:
                    tqdm.write(f"group of {len(part)}: {names}")
                try:
                    train_members(part, lasts[key], progress, models)
                except (UserError, TrainingDiverged) as err:
                    for m in part:
                        by_name[m.name].status = "failed"
                        by_name[m.name].reason = str(err)
                    log(f"failed {names}: {err}")
                    continue
                for m in part:
                    e = by_name[m.name]
                    e.status, e.stages = "trained", lasts[key] + 1
                    log(f"trained {m.name} ({m.workdir})")
                write_summary(workdir, entries, time.time() - t0, process)
    write_summary(workdir, entries, time.time() - t0, process)
    return entries
