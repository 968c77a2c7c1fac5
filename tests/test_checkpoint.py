"""Checkpoints: round trip, and clear errors for partial, corrupt or foreign runs."""

from __future__ import annotations

import os
import shutil

import chex
import numpy as np
import pytest

from agan_jax import checkpoint, train
from agan_jax.errors import UserError
from tests.conftest import tiny_config


@pytest.fixture
def run_copy(tiny_agan_run, tmp_path):
    workdir, run = tiny_agan_run
    dst = str(tmp_path / "copy")
    shutil.copytree(workdir, dst)
    return dst, run


def test_load_run_round_trip(run_copy):
    workdir, run = run_copy
    again = checkpoint.load_run(workdir)
    chex.assert_trees_all_equal(again.g_vars, run.g_vars)
    np.testing.assert_array_equal(again.noise_amps, run.noise_amps)
    np.testing.assert_array_equal(again.z_rec, run.z_rec)
    assert again.sizes == run.sizes and again.spec == run.spec
    tree = checkpoint.RunStore(workdir).load_stage(1)
    assert set(tree) >= {
        "g_vars",
        "d_vars",
        "g_opt",
        "d_opt",
        "key",
        "z_rec",
        "noise_amp",
    }


def test_corrupt_stage_names_stage(run_copy):
    workdir, _ = run_copy
    stage_dir = os.path.join(workdir, "checkpoints", "1", "state")
    victims = [
        os.path.join(root, f)
        for root, _, files in os.walk(stage_dir)
        for f in files
        if "manifest" in f or f.endswith(".ocdbt") or "d/" in os.path.join(root, f)
    ]
    assert victims
    for v in victims:
        with open(v, "wb") as f:
            f.write(b"garbage")
    with pytest.raises(UserError, match=r"checkpoint of stage 1 .*delete"):
        checkpoint.load_run(workdir)


def test_missing_stage_is_a_gap(run_copy):
    workdir, _ = run_copy
    shutil.rmtree(os.path.join(workdir, "checkpoints", "1"))
    with pytest.raises(UserError, match=r"gap: stage\(s\) \[1\] missing"):
        checkpoint.load_run(workdir)


def test_partial_stage_resumes(run_copy):
    """A stage whose save never finished is ignored: training resumes there."""
    workdir, _ = run_copy
    shutil.rmtree(os.path.join(workdir, "checkpoints", "2"))
    assert checkpoint.RunStore(workdir).finished_stages() == [0, 1]


def test_workdir_of_another_image_is_refused(run_copy, tmp_path):
    workdir, _ = run_copy
    before = sorted(os.listdir(workdir))
    config = tiny_config("agan")
    other = np.zeros((24, 32, 3), np.float32)
    spec = checkpoint.ModelSpec.from_config(config)
    meta = checkpoint.run_metadata(config, spec, [(24, 32)], other)
    with pytest.raises(UserError, match="another image"):
        checkpoint.RunStore(workdir).check_or_write_metadata(meta, other)
    assert sorted(os.listdir(workdir)) == before


def test_workdir_with_other_settings_is_refused(run_copy):
    workdir, _ = run_copy
    config = tiny_config("agan")
    config.train.iters_per_stage = 7
    with pytest.raises(UserError, match=r"train.iters_per_stage: 20 -> 7"):
        train.train(config, workdir, progress=False)


def test_no_run(tmp_path):
    with pytest.raises(UserError, match="run directory not found"):
        checkpoint.load_run(str(tmp_path / "nope"))
    with pytest.raises(UserError, match="holds no trained run"):
        checkpoint.load_run(str(tmp_path))
