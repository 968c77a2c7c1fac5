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


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def _existing_runs(
    workdir: str | None, paths: list[str]
) -> tuple[dict[str, str], set[str]]:
    """({image path: name} of the runs already in `workdir` whose run.json names
    an image of `paths` (the same file, else the only one of that file name),
    the names of every run there)."""
    if not workdir or not os.path.isdir(workdir):
        return {}, set()
    real = {os.path.realpath(p): p for p in paths}
    by_file: dict[str, list[str]] = defaultdict(list)
    for p in paths:
        by_file[os.path.basename(p)].append(p)
    found: dict[str, str] = {}
    runs = set()
    for name in sorted(os.listdir(workdir)):
        meta = os.path.join(workdir, name, "run.json")
        if not os.path.isfile(meta):
            continue
        runs.add(name)
        try:
            with open(meta) as f:
                image = json.load(f).get("image_path")
        except (OSError, ValueError, AttributeError):
            continue
        if not isinstance(image, str):
            continue
        same_file = by_file.get(os.path.basename(image), [])
        path = real.get(os.path.realpath(image))
        path = path or (same_file[0] if len(same_file) == 1 else None)
        if path is not None and path not in found:
            found[path] = name
    return found, runs


def run_names(paths: list[str], workdir: str | None = None) -> list[str]:
    """One run directory name per image, distinct, in order.

    An image whose run is already in `workdir` keeps that run's directory (so
    adding a.png beside a trained a.jpg never renames or retrains a.jpg's run);
    any other image gets its stem, or (when stems collide, or the stem is the
    run of another image) its file name with '.' as '_', then '_' added until
    free.
    """
    kept, taken = _existing_runs(workdir, paths)
    stems = [_stem(p) for p in paths]
    names: list[str] = []
    for p, stem in zip(paths, stems, strict=True):
        if p in kept:
            names.append(kept[p])
            continue
        alone = stems.count(stem) == 1 and stem not in taken
        name = stem if alone else os.path.basename(p).replace(".", "_")
        while name in names or name in taken:
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
    note: str = ""  # e.g. why the run directory is not the image's stem
    locked: bool = False  # skipped: another process holds the run's lock
    locked_by: int | None = None  # that process's pid, when known

    def row(self) -> dict:
        out = {"image": self.image, "status": self.status, "stages": self.stages}
        out.update(
            {k: v for k, v in (("reason", self.reason), ("note", self.note)) if v}
        )
        return out


def process_problem(
    rank: int,
    count: int,
    rank_name: str = "--process_id",
    count_name: str = "--num_processes",
) -> str | None:
    """What is wrong with a process's rank and count (named as given), or None."""
    if count < 1:
        return f"{count_name}={count}: the process count must be at least 1"
    if not 0 <= rank < count:
        return (
            f"{rank_name}={rank}: the process id must be in 0..{count - 1} "
            f"({count_name}={count} processes)"
        )
    return None


@dataclasses.dataclass(frozen=True)
class Process:
    """This process's place among the processes splitting one folder."""

    rank: int = 0
    count: int = 1

    def __post_init__(self):
        problem = process_problem(self.rank, self.count)
        if problem:
            raise UserError(
                f"{problem}; start N processes with --num_processes=N and "
                "--process_id=0..N-1 (one each)"
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
                r, n = int(environ[rank]), int(environ[size])
            except ValueError:
                raise UserError(
                    f"{rank}={environ[rank]!r} / {size}={environ[size]!r} are not "
                    "integers; pass --process_id and --num_processes instead"
                ) from None
            problem = process_problem(r, n, rank, size)
            if problem:
                raise UserError(
                    f"{problem} (set by the cluster launcher); start the processes "
                    "with srun or mpirun, or pass --num_processes=N --process_id=I"
                )
            return Process(r, n)
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


def _skip_reason(err: UserError) -> str:
    """A skipped image's reason, with the fixes of launch.train (which names the
    image with --config.data.image) said as train_many's."""
    return str(err).replace(
        "pass an existing PNG/JPEG with --config.data.image=PATH",
        "replace the file with a PNG/JPEG or remove it from --images",
    )


def _prepare(config, mine, workdir, stop_after, held, log):
    """Checks and locks every image of `mine`; returns ({group key: members},
    {group key: last stage}). Marks finished runs done and unusable images
    skipped (their reason logged)."""
    groups: dict[str, list[Member]] = defaultdict(list)
    lasts: dict[str, int] = {}
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
            e.status, e.reason = "skipped", _skip_reason(err)
            if isinstance(err, run_lock.Locked):
                e.locked, e.locked_by = True, err.pid
            log(f"skipped {e.image}: {e.reason}")
            continue
        groups[key].append(member)
        lasts[key] = last
    return groups, lasts


def _no_usable_image(images: str, workdir: str, mine: list[Entry]) -> UserError:
    """The error when every image of this process was skipped: the lock's holder
    when another process trains them (a second train_many on the workdir)."""
    locked = [e for e in mine if e.locked]
    if locked:
        pids = sorted({e.locked_by for e in locked if e.locked_by})
        who = "pid " + ", ".join(map(str, pids)) if pids else "another process"
        return UserError(
            f"{workdir} is in use: {who} trains {len(locked)} of its runs (their "
            f"{run_lock.LOCK_FILE} files), e.g. {os.path.join(workdir, locked[0].name)}; "
            "wait for it to finish or stop it, or use another --workdir"
        )
    return UserError(
        f"no usable image in --images={images} (see "
        f"{os.path.join(workdir, SUMMARY)}); fix or remove the images named above"
    )


def _train_groups(groups, lasts, by_name, progress, log, summary) -> None:
    """Trains every group in parts of at most `train.models_per_call` models;
    marks their entries trained or failed, calling `summary` after each part."""
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
            summary()


def _entries(paths: list[str], workdir: str, log) -> list[Entry]:
    """An Entry per image, named by `run_names`; a name that is not the image's
    stem is noted (and logged)."""
    entries = [
        Entry(n, p) for n, p in zip(run_names(paths, workdir), paths, strict=True)
    ]
    owners = {e.name: e.image for e in entries}
    for e in entries:
        stem = _stem(e.image)
        if e.name != stem:
            other = owners.get(stem)
            why = (
                f"{stem} is the run of {other}"
                if other
                else f"{stem} holds another run"
            )
            e.note = f"trains in {e.name}/ ({why})"
            log(f"{e.image}: {e.note}")
    return entries


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
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise UserError(f"--workdir {workdir} is a file; pass a directory")
    entries = _entries(find_images(images), workdir, log)
    rank, ranks = process.rank, process.count
    mine = [e for i, e in enumerate(entries) if i % ranks == rank]
    for i, e in enumerate(entries):
        if i % ranks != rank:
            e.status = "other_process"

    def summary() -> None:
        write_summary(workdir, entries, time.time() - t0, process)

    with contextlib.ExitStack() as held:
        groups, lasts = _prepare(config, mine, workdir, stop_after, held, log)
        # (A process with no image of its own, when processes outnumber the
        # images, has nothing to do and no error.)
        if mine and not any(e.status in ("pending", "done") for e in mine):
            summary()
            raise _no_usable_image(images, workdir, mine)
        by_name = {e.name: e for e in entries}
        _train_groups(groups, lasts, by_name, progress, log, summary)
    summary()
    return entries
