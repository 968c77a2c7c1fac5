"""Shared fixtures: a persistent compilation cache and tiny trained runs; settings
built from the configs.

Tiny runs use `configs/*.py:tiny` (32 px, 3 stages, 20 iterations, 8 features) on
the bundled image, trained once per test session: under pytest-xdist the first
worker that needs one trains it into a folder all workers share (the others wait
on a file lock) and every worker tests its own copy. The XLA compilation cache is
shared by the workers and the launchers they start, so a program compiled by one
is loaded by the others. Settings have no defaults of
their own (configs/default.py holds every default): tests build them from a
config with `settings_for`, `train_settings`, `model_spec` and `loss_settings`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import importlib
import os
import pathlib
import shutil
import subprocess
import sys

import jax
import pytest

from agan_jax import checkpoint, train
from agan_jax.settings import LossSettings, ModelSpec, Settings, TrainSettings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUNDLED_IMAGE = os.path.join(ROOT, "data", "colusseum.png")


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
    """`python -m pytest` runs the suite on the cores (pytest-xdist, at most 4
    workers) unless -n was given; without the plugin (`-p no:xdist`, or not
    installed) it runs in this process. Runs before xdist's own hook, which turns
    the option into workers."""
    if os.environ.get("PYTEST_XDIST_WORKER") or hasattr(config, "workerinput"):
        return  # a worker: its controller did the dividing
    if not config.pluginmanager.hasplugin("xdist"):
        return
    if getattr(config.option, "numprocesses", 0) is None:
        config.option.numprocesses = "auto"
        if not config.option.maxprocesses:
            config.option.maxprocesses = 4


def shared_folder(tmp_path_factory, name: str) -> pathlib.Path:
    """A folder of this test session that every xdist worker sees (the session's
    base temporary folder; without xdist, this process's own)."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    path = root / name
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
    """One XLA cache for the session, shared by the xdist workers and their
    launcher subprocesses (jax writes an entry once; a reader that meets an entry
    still being written warns and compiles)."""
    path = str(shared_folder(tmp_path_factory, "xla_cache"))
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    os.environ["AGAN_JAX_CACHE"] = path
    yield path


def tiny_config(name: str = "agan", variant: str | None = "tiny"):
    """configs/<name>.py:<variant> on the bundled image (variant None: the
    config without a variant)."""
    mod = importlib.import_module(f"configs.{name}")
    config = mod.get_config(variant)
    config.data.image = BUNDLED_IMAGE
    return config


def settings_for(
    name: str = "singan", variant: str | None = "tiny", **train_overrides
) -> Settings:
    """Settings of configs/<name>.py:<variant>, train fields replaced by keyword."""
    settings = Settings.from_config(tiny_config(name, variant))
    train_fields = dataclasses.replace(settings.train, **train_overrides)
    return dataclasses.replace(settings, train=train_fields)


def train_settings(
    name: str = "singan", variant: str | None = "tiny", **kw
) -> TrainSettings:
    """TrainSettings of configs/<name>.py:<variant> with fields replaced by `kw`."""
    return settings_for(name, variant, **kw).train


def model_spec(name: str = "singan", variant: str | None = "tiny", **kw) -> ModelSpec:
    """ModelSpec of configs/<name>.py:<variant> with fields replaced by `kw`."""
    spec = Settings.from_config(tiny_config(name, variant)).model
    return dataclasses.replace(spec, **kw)


def loss_settings(
    name: str = "singan", variant: str | None = "tiny", **kw
) -> LossSettings:
    """LossSettings of configs/<name>.py:<variant> with fields replaced by `kw`."""
    loss = Settings.from_config(tiny_config(name, variant)).loss
    return dataclasses.replace(loss, **kw)


QUICK = "jax_disable_most_optimizations"


def run_launcher(
    *args: str, env: dict | None = None, timeout: int = 300
) -> subprocess.CompletedProcess:
    """`python -m args...` from the repository root, output captured, warnings
    off, `env` added to this process's environment."""
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})},
    )


@contextlib.contextmanager
def quick_compiles(children: bool = False):
    """Unoptimised XLA inside the block (jax_disable_most_optimizations): shorter
    compiles. `children`: launcher subprocesses started inside compile so too.

    Kept apart from optimised programs, which compute slightly different floats:
    neither jax's persistent-cache key nor its in-memory caches hold that flag,
    so programs compiled here would otherwise be reused by optimised code later
    (the bundled image's 32 px resize hashed differently, and a resumed run
    refused it as changed). Inside the block the persistent cache is a separate
    directory (`<session cache>_quick`, for children too); jax's in-memory
    caches are cleared on entering and on leaving.
    """
    from jax.experimental.compilation_cache import compilation_cache as cc

    cache_dir = "jax_compilation_cache_dir"
    old_flag, old_dir = jax.config.values[QUICK], jax.config.values[cache_dir]
    old_env = {k: os.environ.get(k) for k in ("AGAN_JAX_CACHE", QUICK.upper())}
    # A block inside another keeps the outer block's directory.
    quick_dir = (
        old_dir if old_flag else (old_dir or "/tmp/agan_jax_tests_xla") + "_quick"
    )

    def switch(flag, directory, env):
        jax.clear_caches()
        jax.config.update(QUICK, flag)
        jax.config.update(cache_dir, directory)
        cc.reset_cache()
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    quick_env = {"AGAN_JAX_CACHE": quick_dir, QUICK.upper(): "1"} if children else {}
    switch(True, quick_dir, quick_env)
    try:
        yield
    finally:
        switch(old_flag, old_dir, old_env)


def trained_once(tmp_path_factory, name: str) -> tuple[str, checkpoint.Run]:
    """(workdir, Run) of configs/<name>.py:tiny, trained once per test session
    into a folder the workers share (the first to come trains while the others
    wait on a lock); each caller gets its own copy, so tests that write into a
    run's folder (reports, plots) never meet another worker's files."""
    shared = shared_folder(tmp_path_factory, "tiny_runs")
    source = shared / name
    with open(shared / f"{name}.lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        if not (shared / f"{name}.done").exists():
            shutil.rmtree(source, ignore_errors=True)
            train.train(tiny_config(name), str(source), progress=False)
            (shared / f"{name}.done").touch()
    workdir = tmp_path_factory.mktemp(f"tiny_{name}")
    shutil.copytree(source, workdir, dirs_exist_ok=True)
    return str(workdir), checkpoint.load_run(str(workdir))


@pytest.fixture(scope="session")
def tiny_agan_run(tmp_path_factory):
    """(workdir, Run) of AGAN(3) trained with configs/agan.py:tiny."""
    return trained_once(tmp_path_factory, "agan")


@pytest.fixture(scope="session")
def tiny_singan_run(tmp_path_factory):
    """(workdir, Run) of SinGAN trained with configs/singan.py:tiny."""
    return trained_once(tmp_path_factory, "singan")


@pytest.fixture(scope="session")
def tiny_consingan_run(tmp_path_factory):
    """(workdir, Run) of ConSinGAN trained with configs/consingan.py:tiny (3 stages,
    train_depth 2, so stage 2 freezes block 0 and the head).

    Optimised XLA, as training runs outside the tests (unoptimised programs give
    other floats: 1e-5 apart after 20 iterations).
    """
    return trained_once(tmp_path_factory, "consingan")
