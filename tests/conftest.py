"""Shared fixtures: a persistent compilation cache and tiny trained runs.

Tiny runs use `configs/*.py:tiny` (32 px, 3 stages, 20 iterations, 8 features) on
the bundled image, trained once per test session.
"""

from __future__ import annotations

import os

import jax
import pytest

from agan_jax import checkpoint, train

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


def tiny_config(name: str = "agan", variant: str = "tiny"):
    """configs/<name>.py:<variant> on the bundled image."""
    if name == "agan":
        from configs import agan as mod
    elif name == "singan":
        from configs import singan as mod
    else:
        import importlib

        mod = importlib.import_module(f"configs.{name}")
    config = mod.get_config(variant)
    config.data.image = BUNDLED_IMAGE
    return config


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
