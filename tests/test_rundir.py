"""Run directories: one writer (the lock), settings free until stage 0 is saved,
diverged and interrupted trainings, file-system errors as messages, resumes that
keep metrics.jsonl clean, and the smaller input messages."""

from __future__ import annotations

import errno
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter

import chex
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from PIL import Image

from agan_jax import checkpoint, evaluation, lock, train
from agan_jax.errors import UserError
from agan_jax.train import loop
from agan_jax.train.log import drop_records
from launch import common
from tests.conftest import ROOT, tiny_config

TRAIN = [
    "launch.train",
    "--config=configs/singan.py:tiny",
    "--config.data.image=data/colusseum.png",
    "--quiet",
]

# A launch.train whose process signals itself at a chosen point: argv[1] is
# 'int_stage' (SIGINT once stage argv[2] logged iteration 8: Ctrl-C mid-stage),
# 'kill_stage' (the same with SIGKILL) or 'kill_save' (SIGKILL while Orbax writes
# stage argv[2]'s checkpoint, after its arrays); the rest are launch.train flags.
HOOKED = r"""
import os, signal, sys
import orbax.checkpoint as ocp
from agan_jax.train import metrics
mode, stage = sys.argv[1], int(sys.argv[2])
# Python's Ctrl-C handler, as in a terminal: a shell starts background jobs
# (nohup ... &) with SIGINT ignored, and Python then installs none.
signal.signal(signal.SIGINT, signal.default_int_handler)
if mode.endswith("_stage"):
    sig = signal.SIGINT if mode == "int_stage" else signal.SIGKILL
    scalars = metrics.JsonlWriter.scalars
    def hooked(self, s, step, values):
        scalars(self, s, step, values)
        if s == stage and step >= 8:
            os.kill(os.getpid(), sig)
    metrics.JsonlWriter.scalars = hooked
else:
    save_fn = ocp.JsonCheckpointHandler._save_fn
    async def hooked(self, x, directory):
        if isinstance(x, dict) and x.get("stage") == stage:
            os.kill(os.getpid(), signal.SIGKILL)
        return await save_fn(self, x, directory)
    ocp.JsonCheckpointHandler._save_fn = hooked
from launch import common, train
sys.argv = ["launch.train", *sys.argv[3:]]
common.run(train.main)
"""


def env():
    return {**os.environ, "PYTHONWARNINGS": "ignore"}


def launch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=env(),
    )


def hooked_train(mode: str, stage: int, workdir) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", HOOKED, mode, str(stage), *TRAIN[1:]]
        + [f"--workdir={workdir}", "--config.train.log_every=1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=env(),
    )


def assert_same_run(a, b):
    assert a.num_stages == b.num_stages
    chex.assert_trees_all_close(a.g_vars, b.g_vars, atol=1e-6, rtol=1e-6)
    np.testing.assert_allclose(a.noise_amps, b.noise_amps, rtol=1e-6)


def partial_copy(workdir: str, dst, keep: int) -> str:
    """A copy of a trained run with only stages 0..keep-1 saved."""
    dst = str(dst)
    shutil.copytree(workdir, dst)
    for s in os.listdir(os.path.join(dst, "checkpoints")):
        if int(s.split(".")[0]) >= keep:
            shutil.rmtree(os.path.join(dst, "checkpoints", s))
    return dst


def saved(workdir: str) -> list[int]:
    store = checkpoint.RunStore(workdir)
    try:
        return store.finished_stages()
    finally:
        store.close()


def metric_keys(workdir: str) -> tuple[Counter, Counter]:
    """Counts of (stage, iteration) loss records and of stage_done records."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    iters = Counter((r["stage"], r["iter"]) for r in records if "iter" in r)
    done = Counter(r["stage"] for r in records if r.get("event") == "stage_done")
    return iters, done


def snapshot(root: str) -> dict:
    """(mtime, size, inode) of every file and folder under root."""
    out = {}
    for d, _, files in os.walk(root):
        for path in [d, *(os.path.join(d, f) for f in files)]:
            st = os.stat(path)
            out[path] = (st.st_mtime_ns, st.st_size, st.st_ino)
    return out


# -- 1. one writer per run directory ---------------------------------------------


def test_second_training_exits_2_and_first_matches_a_training_alone(
    tiny_singan_run, tmp_path
):
    """Two trainings of one workdir: the second stops at the lock (exit 2, naming
    the first's pid); the first ends with the weights of a training alone."""
    _, alone = tiny_singan_run
    workdir = tmp_path / "run"
    first = subprocess.Popen(
        [sys.executable, "-m", *TRAIN, f"--workdir={workdir}"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(),
    )
    lock_file = workdir / lock.LOCK_FILE
    deadline = time.time() + 300
    while time.time() < deadline and first.poll() is None:
        if lock_file.exists() and lock_file.read_text().strip() == str(first.pid):
            break
        time.sleep(0.05)
    # Frozen while it holds the lock, so the second surely finds it held.
    os.kill(first.pid, signal.SIGSTOP)
    try:
        second = launch(*TRAIN, f"--workdir={workdir}")
    finally:
        os.kill(first.pid, signal.SIGCONT)
    out, err = first.communicate(timeout=600)
    assert second.returncode == 2, second.stderr
    assert f"pid {first.pid}" in second.stderr and "Traceback" not in second.stderr
    assert first.returncode == 0, err
    assert not lock_file.exists()  # released (and removed) at exit
    assert_same_run(checkpoint.load_run(str(workdir)), alone)
    iters, done = metric_keys(str(workdir))
    assert set(iters.values()) == {1} and done == {0: 1, 1: 1, 2: 1}


def test_lock_refuses_a_second_writer_and_takes_over_a_dead_ones(
    tiny_singan_run, tmp_path, caplog
):
    workdir, run = tiny_singan_run
    part = partial_copy(workdir, tmp_path / "part", keep=2)
    with lock.RunLock(part):
        assert lock.holder(part) == os.getpid()
        with pytest.raises(UserError, match=f"pid {os.getpid()}"):
            lock.RunLock(part).acquire()
        with pytest.raises(UserError, match=f"pid {os.getpid()}"):
            train.train(tiny_config("singan"), part, progress=False)
        # Readers are not blocked.
        assert checkpoint.load_run(part).num_stages == 2
    assert lock.holder(part) is None
    assert not os.path.exists(os.path.join(part, lock.LOCK_FILE))
    # A lock file left by a killed process: only a pid, taken over with a warning.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with open(os.path.join(part, lock.LOCK_FILE), "w") as f:
        f.write(f"{dead.pid}\n")
    with lock.RunLock(part):
        with open(os.path.join(part, lock.LOCK_FILE)) as f:
            assert f.read().strip() == str(os.getpid())
    assert f"left by process {dead.pid}" in caplog.text


# -- 2. settings free until stage 0 is saved; diverged stages ---------------------


def test_diverged_stage_0_message_and_its_advice_works(tmp_path, monkeypatch):
    """A NaN at stage 0 (loss weights large enough to overflow are refused before
    training, so the NaN is injected into the stage's data)."""
    workdir = tmp_path / "run"
    real_run_stage = loop.run_stage

    def nan_real(state, data, *args, **kw):
        data = data.replace(real=data.real.at[0, 0, 0].set(jnp.nan))
        return real_run_stage(state, data, *args, **kw)

    with monkeypatch.context() as m:
        m.setattr(loop, "run_stage", nan_real)
        with pytest.raises(train.TrainingDiverged) as e:
            train.train(tiny_config("singan"), str(workdir), progress=False)
    msg = str(e.value)
    assert "non-finite loss at stage 0" in msg
    assert "No stage is saved" in msg and "0..-1" not in msg
    assert "--config.train.lr_g=" in msg and "re-run the same command" in msg
    assert not os.path.exists(workdir / lock.LOCK_FILE)
    # The advice: other settings (lower learning rates) in the same workdir.
    config = tiny_config("singan")
    config.train.lr_g = config.train.lr_d = 2.5e-4
    train.train(config, str(workdir), stop_after=0, progress=False)
    assert saved(str(workdir)) == [0]
    meta = json.load(open(workdir / "run.json"))
    assert meta["config"]["train"]["lr_g"] == 2.5e-4
    assert meta["config"]["loss"]["lambda_gp"] == config.loss.lambda_gp
    # Once a stage is saved the settings are the run's.
    with pytest.raises(UserError, match="other settings"):
        train.train(tiny_config("singan"), str(workdir), progress=False)


def test_diverged_later_stage_names_saved_stages(
    tiny_singan_run, tmp_path, monkeypatch
):
    workdir, _ = tiny_singan_run
    part = partial_copy(workdir, tmp_path / "part", keep=2)
    real_run_stage = loop.run_stage

    def nan_at_stage_2(state, data, *args, **kw):
        if args[2].stage == 2:  # (runners, ts, log, ...)
            data = data.replace(real=data.real.at[0, 0, 0].set(jnp.nan))
        return real_run_stage(state, data, *args, **kw)

    monkeypatch.setattr(loop, "run_stage", nan_at_stage_2)
    with pytest.raises(train.TrainingDiverged) as e:
        train.train(tiny_config("singan"), part, progress=False)
    msg = str(e.value)
    assert "non-finite loss at stage 2" in msg and "stages 0..1 are saved" in msg
    assert "new --workdir" in msg and "--config.train.lr_g=" in msg
    assert saved(part) == [0, 1]
    assert not os.path.exists(os.path.join(part, lock.LOCK_FILE))


# -- 3. file-system errors -----------------------------------------------------------


def test_workdir_that_is_a_file(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(UserError, match=f"{path} is a file"):
        train.train(tiny_config("singan"), str(path), progress=False)
    with pytest.raises(UserError, match="is a file"):
        checkpoint.load_run(str(path))
    assert path.read_text() == "x"


def test_finished_run_is_only_read(tiny_singan_run, tmp_path, monkeypatch):
    """Re-running a finished run writes nothing (no lock, no record), so it works
    on a read-only file system; an unfinished one there is a message."""
    workdir, run = tiny_singan_run
    copy = str(tmp_path / "copy")
    shutil.copytree(workdir, copy)
    before = snapshot(copy)
    again = train.train(tiny_config("singan"), copy, progress=False)
    assert snapshot(copy) == before
    assert_same_run(again, run)

    part = partial_copy(workdir, tmp_path / "part", keep=2)
    real_open = os.open

    def read_only(path, flags, *a, **kw):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)
        return real_open(path, flags, *a, **kw)

    monkeypatch.setattr(lock.os, "open", read_only)
    with pytest.raises(
        lock.NotWritable, match=f"cannot write to the run directory {part}"
    ):
        train.train(tiny_config("singan"), part, progress=False)


def test_full_disk_during_a_save_keeps_saved_stages(
    tiny_singan_run, tmp_path, monkeypatch
):
    workdir, full = tiny_singan_run
    part = partial_copy(workdir, tmp_path / "part", keep=2)
    save_fn = ocp.JsonCheckpointHandler._save_fn

    async def disk_full(self, x, directory):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory))

    monkeypatch.setattr(ocp.JsonCheckpointHandler, "_save_fn", disk_full)
    with pytest.raises(UserError, match="could not save stage 2") as e:
        train.train(tiny_config("singan"), part, progress=False)
    assert "No space left on device" in str(e.value)
    assert "stages 0..1 are saved" in str(e.value)
    assert saved(part) == [0, 1]
    assert not os.path.exists(os.path.join(part, lock.LOCK_FILE))
    store = checkpoint.RunStore(part)
    for s in (0, 1):
        chex.assert_trees_all_equal(store.load_gen(s)["g_vars"], full.g_vars[s])
    store.close()
    monkeypatch.setattr(ocp.JsonCheckpointHandler, "_save_fn", save_fn)
    assert_same_run(train.train(tiny_config("singan"), part, progress=False), full)


def test_evaluate_out_that_is_a_file(tiny_singan_run, tmp_path, monkeypatch):
    out = tmp_path / "out.txt"
    out.write_text("x")

    def no_work(*a, **kw):
        raise AssertionError("evaluated before checking --out")

    monkeypatch.setattr(evaluation, "evaluate_runs", no_work)
    with pytest.raises(UserError, match=f"--out {out} is a file"):
        evaluation.evaluate_to_dir([tiny_singan_run[0]], str(out), num_samples=2)
    assert out.read_text() == "x"


def run_launcher(monkeypatch, capsys, main) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["prog"])
    with pytest.raises(SystemExit) as e:
        common.run(main)
    return e.value.code, capsys.readouterr().err


def test_launchers_turn_os_errors_and_ctrl_c_into_messages(monkeypatch, capsys):
    def full(argv):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/runs/x/metrics.jsonl")

    code, err = run_launcher(monkeypatch, capsys, full)
    assert code == 2 and "/runs/x/metrics.jsonl" in err and "free space" in err

    def read_only(argv):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/runs/y")

    code, err = run_launcher(monkeypatch, capsys, read_only)
    assert code == 2 and "Permission denied: /runs/y" in err

    def interrupted(argv):
        raise loop.TrainingInterrupted("interrupted: stage 0 is saved; re-run it")

    code, err = run_launcher(monkeypatch, capsys, interrupted)
    assert code == 130 and err.strip() == "interrupted: stage 0 is saved; re-run it"

    def bug(argv):
        raise TypeError("a programming error")

    monkeypatch.setattr(sys, "argv", ["prog"])
    with pytest.raises(TypeError, match="a programming error"):
        common.run(bug)


# -- 4. and 5. Ctrl-C, kill -9 mid-stage and mid-save, and resume -------------------


def test_ctrl_c_kill_mid_stage_kill_mid_save_then_resume(tiny_singan_run, tmp_path):
    _, full = tiny_singan_run
    workdir = str(tmp_path / "run")
    # Ctrl-C in stage 1: one line, exit 130, stage 0 saved.
    p = hooked_train("int_stage", 1, workdir)
    assert p.returncode == 130, p.stderr
    assert p.stderr.strip().splitlines()[-1] == (
        "interrupted: stage 0 is saved; re-run the same command to resume"
    )
    assert "Traceback" not in p.stderr
    assert saved(workdir) == [0]
    iters, _ = metric_keys(workdir)
    assert (1, 8) in iters  # stage 1 had logged records when it stopped
    # kill -9 in stage 2 (stage 1 trained again and saved).
    p = hooked_train("kill_stage", 2, workdir)
    assert p.returncode == -signal.SIGKILL, p.stderr
    assert saved(workdir) == [0, 1]
    assert os.path.exists(os.path.join(workdir, lock.LOCK_FILE))  # a dead one's
    # kill -9 while stage 2's checkpoint is written.
    p = hooked_train("kill_save", 2, workdir)
    assert p.returncode == -signal.SIGKILL, p.stderr
    assert saved(workdir) == [0, 1]
    ckpts = os.listdir(os.path.join(workdir, "checkpoints"))
    assert any(name.startswith("2.") for name in ckpts), ckpts  # a half save
    iters, done = metric_keys(workdir)
    assert iters[(2, 8)] == 1 and done == {0: 1, 1: 1}
    # Resume: the run of an uninterrupted training, each record once.
    resumed = train.train(tiny_config("singan"), workdir, progress=False)
    assert_same_run(resumed, full)
    iters, done = metric_keys(workdir)
    assert set(iters.values()) == {1}, [k for k, n in iters.items() if n > 1]
    assert {s for s, _ in iters} == {0, 1, 2}
    assert done == {0: 1, 1: 1, 2: 1}


def test_drop_records_keeps_saved_stages_and_drops_a_cut_line(tmp_path):
    path = str(tmp_path / "metrics.jsonl")
    records = [
        {"stage": 0, "iter": 10},
        {"event": "stage_done", "stage": 0},
        {"event": "run_done", "stages": 1},
        {"stage": 1, "iter": 10},
    ]
    with open(path, "w") as f:
        f.write("".join(json.dumps(r) + "\n" for r in records) + '{"stage": 1, "it')
    assert drop_records(path, 1) == 2
    with open(path) as f:
        assert [json.loads(line) for line in f] == records[:3]
    before = os.stat(path).st_mtime_ns
    assert drop_records(path, 1) == 0 and os.stat(path).st_mtime_ns == before


# -- 6. smaller messages -------------------------------------------------------------


@pytest.mark.parametrize("content", ["[1, 2]", '{"config": {}}', '{"kind": 3}'])
def test_run_json_of_the_wrong_shape(tiny_singan_run, tmp_path, content):
    copy = str(tmp_path / "copy")
    shutil.copytree(tiny_singan_run[0], copy)
    with open(os.path.join(copy, "run.json"), "w") as f:
        f.write(content)
    for call in (
        lambda: checkpoint.load_run(copy),
        lambda: train.train(tiny_config("singan"), copy, progress=False),
    ):
        with pytest.raises(UserError, match="run.json is not the run.json of a run"):
            call()


def test_image_replaced_at_the_same_path(tiny_singan_run, tmp_path):
    copy = str(tmp_path / "copy")
    shutil.copytree(tiny_singan_run[0], copy)
    image = tmp_path / "photo.png"
    shutil.copy(os.path.join(ROOT, "data", "colusseum.png"), image)
    meta = json.load(open(os.path.join(copy, "run.json")))
    meta["image_path"] = str(image)
    json.dump(meta, open(os.path.join(copy, "run.json"), "w"))
    pixels = np.asarray(Image.open(image).convert("RGB"))[::-1]
    Image.fromarray(pixels).save(image)
    config = tiny_config("singan")
    config.data.image = str(image)
    with pytest.raises(UserError) as e:
        train.train(config, copy, progress=False)
    msg = str(e.value)
    assert f"the image at {image} changed since the run" in msg
    assert f"hash {meta['image_hash'][:12]}, now " in msg


def test_config_messages(tmp_path, capsys):
    importlib.import_module("launch.train")  # defines --config

    yaml = tmp_path / "c.yaml"
    yaml.write_text("data:\n  image: [x\n")
    cases = [
        ("--config.model.nfcc=3", "'nfcc' (--config.model.nfcc): the config has no"),
        ("--config.nonexistent=1", "unknown config key 'nonexistent'"),
        (f"--config={yaml}", f"--config={yaml} is not a Python config file"),
    ]
    for arg, message in cases:
        argv = ["prog", "--config=configs/singan.py:tiny", arg]
        with pytest.raises(SystemExit) as e:
            common._parse(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and message in err, err
        assert "\\" not in err and err.count("\n") == 1, err
    # Through the launcher, ml_collections' suggestion comes along, as plain text.
    p = launch(*TRAIN, "--config.model.nfcc=3", f"--workdir={tmp_path / 'w'}")
    assert p.returncode == 2, p.stderr
    assert "(did you mean 'nfc' instead of 'nfcc'?)" in p.stderr, p.stderr
    assert "\\" not in p.stderr and p.stderr.count("\n") == 1, p.stderr


def test_stop_after_negative_names_the_range(tmp_path):
    with pytest.raises(UserError, match=r"--stop_after_stage=-1 .* 0\.\.2"):
        train.train(tiny_config("singan"), str(tmp_path / "w"), stop_after=-1)
    assert not os.path.exists(tmp_path / "w")
