"""Shared fixtures: a persistent compilation cache and tiny trained runs; settings
built from the configs.

Tiny runs use `configs/*.py:tiny` (32 px, 3 stages, 20 iterations, 8 features) on
the bundled image, trained once per test session. Settings have no defaults of
their own (configs/default.py holds every default): tests build them from a
config with `settings_for`, `train_settings`, `model_spec` and `loss_settings`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os

import jax
import pytest

from agan_jax import checkpoint, train
from agan_jax.settings import LossSettings, ModelSpec, Settings, TrainSettings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUNDLED_IMAGE = os.path.join(ROOT, "data", "colusseum.png")


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
    """One XLA cache for the session, shared with launcher subprocesses."""
    path = str(tmp_path_factory.mktemp("xla_cache"))
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


@contextlib.contextmanager
def quick_compiles():
    """Unoptimised XLA inside the block (jax_disable_most_optimizations), with the
    persistent cache off meanwhile: its key does not hold that flag, so programs
    compiled here would be loaded by later (optimised) compiles in this process
    and in launcher subprocesses sharing the cache, and their floats differ (the
    bundled image resized to 32 px hashed differently, and a resumed run refused
    it as changed)."""
    from jax.experimental.compilation_cache import compilation_cache as cc

    name, cache = "jax_disable_most_optimizations", "jax_enable_compilation_cache"
    old, old_cache = jax.config.values[name], jax.config.values[cache]
    jax.config.update(name, True)
    jax.config.update(cache, False)
    cc.reset_cache()
    try:
        yield
    finally:
        jax.config.update(name, old)
        jax.config.update(cache, old_cache)
        cc.reset_cache()


@pytest.fixture(scope="session")
def tiny_agan_run(tmp_path_factory):
    """(workdir, Run) of AGAN(3) trained with configs/agan.py:tiny."""
    workdir = str(tmp_path_factory.mktemp("tiny_agan"))
    train.train(tiny_config("agan"), workdir, progress=False)
    return workdir, checkpoint.load_run(workdir)


@pytest.fixture(scope="session")
def tiny_singan_run(tmp_path_factory):
    """(workdir, Run) of SinGAN trained with configs/singan.py:tiny."""
    workdir = str(tmp_path_factory.mktemp("tiny_singan"))
    train.train(tiny_config("singan"), workdir, progress=False)
    return workdir, checkpoint.load_run(workdir)


@pytest.fixture(scope="session")
def tiny_consingan_run(tmp_path_factory):
    """(workdir, Run) of ConSinGAN trained with configs/consingan.py:tiny (3 stages,
    train_depth 2, so stage 2 freezes block 0 and the head).

    Trained with most XLA optimisations off (`quick_compiles`: half the compile
    time), whichever test asks first; tests that retrain it and compare exactly
    (tests/test_consingan.py) compile the same way.
    """
    workdir = str(tmp_path_factory.mktemp("tiny_consingan"))
    with quick_compiles():
        train.train(tiny_config("consingan"), workdir, progress=False)
    return workdir, checkpoint.load_run(workdir)
