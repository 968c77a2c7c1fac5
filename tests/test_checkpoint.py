"""Checkpoints: round trip, and clear errors for partial, corrupt or foreign runs."""

from __future__ import annotations

import os
import re
import shutil

import chex
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from agan_jax import checkpoint, train
from agan_jax.errors import UserError
from agan_jax.settings import Settings, config_to_dict
from tests.conftest import tiny_config

GEN_KEYS = {"g_vars", "z_rec", "noise_amp"}
TRAIN_KEYS = {"d_vars", "g_opt", "d_opt", "key", "step"}


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
    store = checkpoint.RunStore(workdir)
    tree = store.load_stage(1)
    assert set(tree) == GEN_KEYS | TRAIN_KEYS
    gen = store.load_gen(1)
    assert set(gen) == GEN_KEYS
    chex.assert_trees_all_equal(gen["g_vars"], tree["g_vars"])
    chex.assert_trees_all_equal(gen["g_vars"], jax.device_get(run.g_vars[1]))
    chex.assert_trees_all_equal(store.load_d_vars(1), tree["d_vars"])
    assert int(tree["step"]) > 0
    store.close()


def _stage_dirs(workdir: str) -> list[str]:
    root = os.path.join(workdir, "checkpoints")
    return [os.path.join(root, s) for s in sorted(os.listdir(root))]


def test_sampling_restores_only_the_gen_item(run_copy):
    """load_run reads the `gen` item of each stage, never the `train` item."""
    workdir, run = run_copy
    stages = _stage_dirs(workdir)
    assert len(stages) == 3
    for d in stages:
        assert {"gen", "train"} <= set(os.listdir(d))
        shutil.rmtree(os.path.join(d, "train"))
    again = checkpoint.load_run(workdir)
    chex.assert_trees_all_equal(again.g_vars, run.g_vars)
    np.testing.assert_array_equal(again.noise_amps, run.noise_amps)
    np.testing.assert_array_equal(again.z_rec, run.z_rec)
    # What resuming needs is gone: its loader names the stage.
    with pytest.raises(UserError, match=r"checkpoint of stage 1 .*delete"):
        checkpoint.RunStore(workdir).load_stage(1)


def test_checkpoint_of_an_older_version_is_refused(run_copy, tiny_agan_run):
    """Stages saved by agan_jax 0.1 (one Orbax item `state`) give a UserError."""
    workdir, _ = run_copy
    source = checkpoint.RunStore(tiny_agan_run[0])
    trees = [source.load_stage(s) for s in range(3)]
    source.close()
    shutil.rmtree(os.path.join(workdir, "checkpoints"))
    options = ocp.CheckpointManagerOptions(
        create=True, enable_async_checkpointing=False
    )
    mngr = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"), options=options)
    for s, tree in enumerate(trees):  # the layout of agan_jax 0.1
        info = {"stage": s, "size": [1, 1], "noise_amp": float(tree["noise_amp"])}
        mngr.save(
            s,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(info)
            ),
        )
    mngr.wait_until_finished()
    mngr.close()
    assert checkpoint.RunStore(workdir).finished_stages() == [0, 1, 2]
    with pytest.raises(UserError, match=r"stage 0 .*older agan_jax.*new --workdir"):
        checkpoint.load_run(workdir)
    with pytest.raises(UserError, match="older agan_jax"):
        train.train(tiny_config("agan"), workdir, progress=False)


def test_corrupt_stage_names_stage(run_copy):
    workdir, _ = run_copy
    stage_dir = os.path.join(workdir, "checkpoints", "1", "gen")
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
    settings = Settings.from_config(config)
    meta = checkpoint.run_metadata(settings, config_to_dict(config), [(24, 32)], other)
    with pytest.raises(UserError, match="changed since the run .* started"):
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


def test_run_saved_before_a_field_was_added_still_loads(tiny_singan_run, tmp_path):
    """A run.json without a field added later (settings.ADDED_FIELDS) reads as
    the value earlier runs behaved with, and the run samples."""
    import json

    from agan_jax import sampling
    from agan_jax.settings import ADDED_FIELDS, Settings
    from configs import default

    work = tmp_path / "old_run"
    shutil.copytree(tiny_singan_run[0], work)
    meta = json.loads((work / "run.json").read_text())
    for dotted in ADDED_FIELDS:
        section, name = dotted.split(".")
        assert name in default.get_config()[section]  # a real, current field
        del meta["config"][section][name]
    (work / "run.json").write_text(json.dumps(meta))
    store = checkpoint.RunStore(str(work))
    try:
        filled = store.read_metadata()["config"]
    finally:
        store.close()
    assert Settings.from_config(filled).model.warm_start is True
    run = checkpoint.load_run(str(work))
    images = sampling.Sampler(run).sample(jax.random.key(0), 2)
    assert images.shape == (2, *run.sizes[-1], 3)


def test_readme_lists_every_setting_a_resume_may_change():
    readme = os.path.join(os.path.dirname(__file__), os.pardir, "README.md")
    with open(readme) as f:
        text = " ".join(f.read().split())
    start = text.index("a resume must keep them (only ")
    listed = text[start : text.index("may change)", start)]
    names = set(re.findall(r"`([a-z_]+\.[a-z_*]+)`", listed))
    # log.* is not stored in run.json at all (how a run is watched is not the run).
    assert names == set(checkpoint.RESUMABLE_KEYS) | {"log.*"}
