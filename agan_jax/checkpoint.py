"""Orbax checkpoints: one per finished stage, plus the run's metadata.

Layout of a run directory:
  run.json            config, model kind, schedule, stage sizes, image hash, version
  real.npy, real.png  the training image at the finest size (exact, and to look at)
  checkpoints/<s>/    stage s: `gen` (generator variables, reconstruction noise
                      z*, noise amplitude: what sampling restores), `train`
                      (critic variables, optimiser states, PRNG key, step: what
                      resuming and fine-tuning add), `meta` (stage, size)
  metrics.jsonl       losses and per-stage timings
  stages/             sample grids (and attention maps) written after each stage
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re
import shutil
import sys
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

import agan_jax
from agan_jax import image_io
from agan_jax.errors import UserError
from agan_jax.run import Run
from agan_jax.settings import Settings, fill_added_fields

# Config entries that may change between a run and its resumption.
RESUMABLE_KEYS = {
    "data.image",
    "train.compile_ahead",
    "train.compile_workers",
    "train.group_mode",
    "train.log_every",
    "train.models_per_call",
    "train.stage_samples",
    "train.steps_per_call",
}


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


# What run.json must hold to be read as a run: key -> type.
_META_KEYS = {"config": dict, "sizes": list, "num_stages": int}


def _metadata_problem(meta) -> str | None:
    """What is wrong with the shape of a parsed run.json, or None."""
    if not isinstance(meta, dict):
        return f"a JSON {type(meta).__name__}, not an object"
    missing = [k for k in _META_KEYS if k not in meta]
    if missing:
        return "missing " + ", ".join(missing)
    bad = [k for k, t in _META_KEYS.items() if not isinstance(meta[k], t)]
    if bad:
        return "wrong type of " + ", ".join(bad)
    sizes, n = meta["sizes"], meta["num_stages"]
    if not sizes or not all(_is_size(s) for s in sizes):
        return (
            f"sizes must list [height, width] pairs of positive integers, one per "
            f"stage, not {json.dumps(sizes)[:80]}"
        )
    if n != len(sizes):
        return (
            f"num_stages is {n} but sizes lists {len(sizes)} stages; set "
            f'"num_stages": {len(sizes)}'
        )
    return None


def _is_size(s) -> bool:
    """Whether `s` is [height, width], positive integers (not booleans)."""
    return (
        isinstance(s, list)
        and len(s) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in s)
    )


def _settings_problems(e: UserError) -> str:
    """The 'config.FIELD = VALUE: must be ...' part of a Settings error, without
    its --config.FIELD fix (which fits the train command only)."""
    text = str(e)
    lines = [ln.strip() for ln in text.splitlines()[1:] if ln.strip()]
    if lines:
        return "; ".join(lines)
    return text.split("; fix it with")[0]


# Orbax's writer threads report a failed write as a ValueError from TensorStore
# whose text ends "[os_error_code='28']" (ENOSPC).
_OS_ERROR_CODE = re.compile(r"os_error_code='?(\d+)")


class _OrbaxThreadNoise(logging.Filter):
    """Drops the WARNING and ERROR records (with tracebacks) that Orbax logs when
    a save fails or is interrupted (its threads' errors; "Skipping merge of OCDBT
    checkpoints" when Ctrl-C lands mid-save): `RunStore.save_stage` raises that
    failure itself, as one OSError naming the stage's directory, and an
    interrupted save leaves no stage behind."""

    def filter(self, record: logging.LogRecord) -> bool:
        where = record.pathname.replace(os.sep, "/")
        return not (record.levelno >= logging.WARNING and "/orbax/" in where)


def _drop_closed_loop_errors(hook):
    """An unraisable-exception hook that drops the RuntimeError('Event loop is
    closed') which TensorStore callbacks raise when a failed Orbax save has
    already closed its asyncio loop (at any time after the failure), and hands
    everything else to `hook`."""

    def unraisable(info) -> None:
        e = info.exc_value
        if isinstance(e, RuntimeError) and str(e) == "Event loop is closed":
            return
        hook(info)

    unraisable.agan_jax_quiet = True
    return unraisable


def quiet_orbax_threads() -> None:
    """Installs (once) the filters that keep Orbax's thread tracebacks off
    stderr after a failed or interrupted save."""
    absl_logger = logging.getLogger("absl")
    if not any(isinstance(f, _OrbaxThreadNoise) for f in absl_logger.filters):
        absl_logger.addFilter(_OrbaxThreadNoise())
    if not getattr(sys.unraisablehook, "agan_jax_quiet", False):
        sys.unraisablehook = _drop_closed_loop_errors(sys.unraisablehook)


def as_os_error(e: BaseException, path: str) -> OSError | None:
    """A failed write as an OSError naming `path` (the errno Orbax reports, or
    the OSError itself); None for other errors."""
    if isinstance(e, OSError):
        code = e.errno
    else:
        found = _OS_ERROR_CODE.search(str(e))
        code = int(found.group(1)) if found else None
    if code is None:
        return None
    return OSError(code, os.strerror(code), path)


def saved_phrase(k: int) -> str:
    """'no stage is saved', 'stage 0 is saved' or 'stages 0..k-1 are saved'."""
    if k <= 0:
        return "no stage is saved"
    return "stage 0 is saved" if k == 1 else f"stages 0..{k - 1} are saved"


def run_metadata(settings: Settings, config: dict, sizes, image: np.ndarray) -> dict:
    """Everything that describes a run, saved once as run.json.

    `config`: the config as a plain dict (`settings.config_to_dict`), with the
    derived values of `settings` written back (data.min_size).
    """
    config = dict(config)
    config["data"] = {**config["data"], "min_size": settings.data.min_size}
    return {
        "kind": settings.model.kind,
        "schedule": settings.pyramid.schedule,
        "num_stages": len(sizes),
        "sizes": [list(map(int, s)) for s in sizes],
        "image_hash": image_io.image_hash(np.asarray(image, np.float32)),
        "image_path": settings.data.image,
        "config": config,
        "version": agan_jax.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


class RunStore:
    """The files of one run directory; one Orbax CheckpointManager, step = stage."""

    def __init__(self, workdir: str):
        self.workdir = os.path.abspath(workdir)
        self.ckpt_dir = os.path.join(self.workdir, "checkpoints")
        self._mngr = None

    # -- metadata ----------------------------------------------------------
    @property
    def meta_path(self) -> str:
        return os.path.join(self.workdir, "run.json")

    def check_workdir(self) -> None:
        """UserError when the run directory's path is taken by a file."""
        if os.path.exists(self.workdir) and not os.path.isdir(self.workdir):
            raise UserError(
                f"--workdir {self.workdir} is a file, not a directory; pass a "
                "directory (a new path starts a new run)"
            )

    def read_metadata(self) -> dict:
        """run.json, or a UserError saying the directory holds no run."""
        self.check_workdir()
        if not os.path.isdir(self.workdir):
            raise UserError(
                f"run directory not found: {self.workdir}; pass the --workdir of a "
                "trained run (python -m launch.train ... --workdir=DIR makes one)"
            )
        if not os.path.exists(self.meta_path):
            raise UserError(
                f"{self.workdir} holds no trained run (run.json missing); train one "
                "with python -m launch.train --workdir=DIR"
            )
        try:
            with open(self.meta_path) as f:
                meta = json.load(f)
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UserError(
                f"{self.meta_path} is unreadable ({e}); delete the run directory and "
                "train again"
            ) from e
        problem = _metadata_problem(meta)
        if problem:
            raise UserError(
                f"{self.meta_path} is not the run.json of a run ({problem}); restore "
                "the file, or train again in a new --workdir (or delete this one)"
            )
        meta["config"] = fill_added_fields(meta["config"])
        return meta

    def saved_stage_count(self) -> int:
        """How many stages (0..k-1) are saved; 0 without a checkpoints folder."""
        return len(self.finished_stages())

    def check_metadata(self, meta: dict) -> bool:
        """Whether run.json holds `meta`'s run, with at least one stage saved.

        False when run.json is missing, or when no stage is saved yet: such a run
        has nothing to lose and its settings may still change (`write_metadata`
        replaces them). With a saved stage, a UserError names what differs (the
        image, or the settings that a resume may not change).
        """
        if not os.path.exists(self.meta_path) or not self.saved_stage_count():
            return False
        old = self.read_metadata()
        if old.get("image_hash") != meta["image_hash"]:
            a, b = str(old.get("image_hash")), meta["image_hash"]
            old_path, new_path = old.get("image_path"), meta["image_path"]
            same = old_path is not None and (
                old_path == new_path
                or os.path.abspath(str(old_path)) == os.path.abspath(str(new_path))
            )
            if same:
                raise UserError(
                    f"the image at {new_path} changed since the run in {self.workdir} "
                    f"started (hash {a[:12]}, now {b[:12]}); put the original image "
                    "back to resume, or train the new one in a new --workdir"
                )
            raise UserError(
                f"{self.workdir} holds a run of another image "
                f"({old_path}, not {new_path}); use a new "
                "--workdir, or delete that directory to start over"
            )
        a, b = _flatten(old.get("config", {})), _flatten(meta["config"])
        diff = [
            f"{k}: {a.get(k)!r} -> {b.get(k)!r}"
            for k in sorted(set(a) | set(b))
            if k not in RESUMABLE_KEYS and a.get(k) != b.get(k)
        ]
        if diff or old.get("sizes") != meta["sizes"]:
            raise UserError(
                f"{self.workdir} holds a run with other settings ("
                + "; ".join(diff or ["stage sizes differ"])
                + "); resume it with its own settings (only "
                + ", ".join(sorted(RESUMABLE_KEYS))
                + " and log.* may change) or use a new --workdir"
            )
        return True

    def write_metadata(self, meta: dict, image: np.ndarray) -> None:
        """Writes run.json, real.npy and real.png (run.json last, atomically)."""
        os.makedirs(self.workdir, exist_ok=True)
        tmp = self.meta_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(meta, f, indent=2)
        np.save(os.path.join(self.workdir, "real.npy"), np.asarray(image, np.float32))
        image_io.save_image(os.path.join(self.workdir, "real.png"), np.asarray(image))
        os.replace(tmp, self.meta_path)

    def check_or_write_metadata(self, meta: dict, image: np.ndarray) -> None:
        """Writes run.json for a new run (or one with no stage saved yet, whose
        settings may change); for a run with a saved stage, checks it matches."""
        if not self.check_metadata(meta):
            self.write_metadata(meta, image)

    # -- checkpoints -------------------------------------------------------
    @property
    def mngr(self) -> ocp.CheckpointManager:
        if self._mngr is None:
            options = ocp.CheckpointManagerOptions(
                create=True, max_to_keep=None, enable_async_checkpointing=False
            )
            self._mngr = ocp.CheckpointManager(self.ckpt_dir, options=options)
        return self._mngr

    def close(self) -> None:
        """Waits for pending saves and releases the manager."""
        if self._mngr is not None:
            self._mngr.wait_until_finished()
            self._mngr.close()
            self._mngr = None

    def finished_stages(self, num_stages: int | None = None) -> list[int]:
        """Stages 0..k-1 with a finished checkpoint; refuses gaps."""
        if not os.path.isdir(self.ckpt_dir):
            return []
        steps = sorted(self.mngr.all_steps())
        expected = list(range(len(steps)))
        if steps != expected:
            missing = sorted(set(range(max(steps) + 1)) - set(steps))
            raise UserError(
                f"checkpoints of {self.workdir} have a gap: stage(s) {missing} missing "
                f"but later stage(s) saved; delete {self.ckpt_dir}/<stage> for the "
                f"stages after {missing[0] - 1} and re-run to retrain them"
            )
        if num_stages is not None and len(steps) > num_stages:
            raise UserError(
                f"{self.workdir} holds {len(steps)} saved stages but its run.json "
                f"says num_stages {num_stages}; restore the run's own run.json "
                "(num_stages and sizes as launch.train wrote them), or train again "
                "in a new --workdir"
            )
        return steps

    def saved_size(self, stage: int) -> list[int] | None:
        """The [height, width] a stage's checkpoint was saved at (its `meta`
        item), or None when it does not say."""
        path = os.path.join(self.ckpt_dir, str(stage), "meta", "metadata")
        try:
            with open(path) as f:
                size = json.load(f).get("size")
        except (OSError, ValueError, AttributeError):
            return None
        return size if _is_size(size) else None

    def check_saved_sizes(self, sizes: list, stages: list[int]) -> None:
        """UserError when run.json's `sizes` disagree with the sizes the saved
        stages were trained at (a hand-edited run.json)."""
        saved = {s: self.saved_size(s) for s in stages}
        wrong = [s for s in stages if saved[s] not in (None, list(sizes[s]))]
        if not wrong:
            return
        s = wrong[0]
        known = json.dumps([saved[k] or list(sizes[k]) for k in stages])
        if len(stages) < len(sizes):
            known = known[:-1] + ", ...]"
        raise UserError(
            f"{self.meta_path} disagrees with the checkpoints: stage {s} was "
            f"trained at {saved[s][0]}x{saved[s][1]} but its sizes say "
            f"{sizes[s][0]}x{sizes[s][1]}; restore the run's own run.json (its saved "
            f'stages have "sizes": {known}), or train again in a new --workdir'
        )

    def save_stage(self, stage: int, state, z_rec, noise_amp: float, size) -> None:
        """Saves one finished stage (blocking), as host arrays: a checkpoint
        records no device topology, so a run saved on one machine (or from a
        group sharded over several devices) loads on any other."""
        gen = {
            "g_vars": state.g_vars,
            "z_rec": z_rec,
            "noise_amp": np.float32(noise_amp),
        }
        train = {
            "d_vars": state.d_vars,
            "g_opt": state.g_opt,
            "d_opt": state.d_opt,
            "key": jax.random.key_data(state.key),
            "step": state.step,
        }
        gen, train = jax.device_get((gen, train))
        info = {
            "stage": stage,
            "size": [int(size[0]), int(size[1])],
            "noise_amp": noise_amp,
        }
        args = ocp.args.Composite(
            gen=ocp.args.StandardSave(gen),
            train=ocp.args.StandardSave(train),
            meta=ocp.args.JsonSave(info),
        )
        quiet_orbax_threads()
        try:
            self.mngr.save(stage, args=args)
            self.mngr.wait_until_finished()
        except Exception as e:  # Orbax raises ValueError from TensorStore
            self._discard_failed_save(stage)
            error = as_os_error(e, os.path.join(self.ckpt_dir, str(stage)))
            if error is None:
                raise
            raise error from None

    def _discard_failed_save(self, stage: int) -> None:
        """Drops the manager of a failed save and the stage's unfinished files
        (Orbax's temporary folder), which a full disk needs back; the finished
        stages stay as they are."""
        mngr, self._mngr = self._mngr, None
        try:
            if mngr is not None:
                mngr.close()
        except Exception:  # noqa: BLE001 - the save's own error is what counts
            pass
        for tmp in glob.glob(
            os.path.join(self.ckpt_dir, f"{stage}.orbax-checkpoint-tmp*")
        ):
            shutil.rmtree(tmp, ignore_errors=True)

    def _restore(self, stage: int, items: tuple[str, ...]) -> dict[str, Any]:
        if os.path.isdir(os.path.join(self.ckpt_dir, str(stage), "state")):
            raise UserError(
                f"checkpoint of stage {stage} in {self.ckpt_dir} was written by an "
                "older agan_jax (before 0.2); train the run again in a new --workdir"
            )
        try:
            out = self.mngr.restore(
                stage,
                args=ocp.args.Composite(
                    **{name: ocp.args.StandardRestore() for name in items}
                ),
            )
        except Exception as e:  # Orbax raises many types; rewrap with the stage
            raise UserError(
                f"checkpoint of stage {stage} in {self.ckpt_dir} is unreadable "
                f"({type(e).__name__}: {str(e)[:200]}); delete {self.ckpt_dir}/{stage} "
                "(and later stages) and re-run the train command to retrain from it"
            ) from e
        tree = {}
        for name in items:
            tree.update(out[name])
        return tree

    def load_stage(self, stage: int) -> dict[str, Any]:
        """Restores all of one stage (to resume or fine-tune from it): g_vars,
        z_rec, noise_amp, d_vars, g_opt, d_opt, key, step."""
        return self._restore(stage, ("gen", "train"))

    def load_gen(self, stage: int) -> dict[str, Any]:
        """Restores what sampling needs of one stage: g_vars, z_rec, noise_amp."""
        return self._restore(stage, ("gen",))

    def load_d_vars(self, stage: int):
        """The critic variables of a finished stage (to warm-start the next)."""
        return self._restore(stage, ("train",))["d_vars"]

    def load_run(self, upto: int | None = None) -> Run:
        """The trained pyramid (stages 0..upto-1, default all finished) as a Run."""
        meta = self.read_metadata()
        try:
            settings = Settings.from_config(meta["config"])
        except UserError as e:
            raise UserError(
                f"{self.meta_path} holds invalid settings ({_settings_problems(e)}); "
                "restore the run's own run.json (launch.train wrote it), or train "
                "again in a new --workdir"
            ) from None
        stages = self.finished_stages(meta["num_stages"])
        if not stages:
            raise UserError(
                f"{self.workdir} has no finished stage yet; train it first (python -m "
                "launch.train --workdir=...) or wait for stage 0 to finish"
            )
        upto = len(stages) if upto is None else upto
        trees = [self.load_gen(s) for s in range(upto)]  # older layouts refused
        self.check_saved_sizes(meta["sizes"], stages)
        real_path = os.path.join(self.workdir, "real.npy")
        real = np.load(real_path) if os.path.exists(real_path) else None
        to_jnp = lambda t: jax.tree.map(jax.numpy.asarray, t)  # noqa: E731
        return Run(
            settings=settings,
            spec=settings.model,
            sizes=[tuple(s) for s in meta["sizes"]],
            g_vars=[to_jnp(t["g_vars"]) for t in trees],
            noise_amps=np.asarray([float(t["noise_amp"]) for t in trees], np.float32),
            z_rec=jax.numpy.asarray(trees[0]["z_rec"]),
            real=real,
            meta=meta,
            workdir=self.workdir,
        )


def load_run(workdir: str) -> Run:
    """Loads every finished stage of the run in `workdir`."""
    store = RunStore(workdir)
    try:
        return store.load_run()
    finally:
        store.close()
