"""Samples written by another program, evaluated against a run's training image."""

from __future__ import annotations

import os

import jax
import numpy as np
import pytest

from agan_jax import evaluation, image_io, sampling, streaming
from agan_jax.errors import UserError


def _write(folder, images):
    os.makedirs(folder, exist_ok=True)
    for i, im in enumerate(images):
        image_io.save_image(os.path.join(folder, f"{i:03d}.png"), np.asarray(im))


def test_a_folder_of_samples_gets_the_same_metrics_as_drawn_samples(
    tiny_agan_run, tmp_path
):
    _, run = tiny_agan_run
    drawn = np.asarray(sampling.sample(run, jax.random.key(3), 4))
    folder = str(tmp_path / "other")
    _write(folder, drawn)
    # What the folder holds: the samples after an 8-bit round trip.
    loaded = evaluation.load_sample_dir(folder, run.real.shape[:2])
    assert np.abs(loaded - np.clip(drawn, -1, 1)).max() <= 1.0 / 255 + 1e-6
    got = evaluation.evaluate_sample_dir(run, "other program", folder).row
    want = evaluation.evaluate_samples(run, loaded)
    assert got["run"] == "other program" and got["num_samples"] == 4
    for key in ("swd", "diversity", "contrast", "saturation", "ssim", "rmse"):
        assert got[key] == pytest.approx(want[key], rel=1e-6)


def test_sample_folders_are_checked(tiny_agan_run, tmp_path):
    _, run = tiny_agan_run
    h, w = run.real.shape[:2]
    with pytest.raises(UserError, match="not found"):
        evaluation.load_sample_dir(str(tmp_path / "missing"), (h, w))
    one = str(tmp_path / "one")
    _write(one, [run.real])
    with pytest.raises(UserError, match="holds 1 sample images"):
        evaluation.load_sample_dir(one, (h, w))
    wrong = str(tmp_path / "wrong")
    _write(wrong, [np.zeros((h + 1, w, 3))] * 2)
    with pytest.raises(UserError, match=f"not {h}x{w}"):
        evaluation.load_sample_dir(wrong, (h, w))


def test_a_launch_sample_folder_scores_as_it_is(tiny_agan_run, tmp_path):
    workdir, run = tiny_agan_run
    folder = str(tmp_path / "sampled")
    streaming.write_samples(sampling.Sampler(run), 3, 5, folder, progress=False)
    names = sorted(os.listdir(folder))
    assert "grid.png" in names and "manifest.json" in names  # as launch.sample does
    # Read: the five samples in their order, nothing else (grid.png is larger).
    assert evaluation.sample_files(folder) == [f"sample_{i:06d}.png" for i in range(5)]
    evals, table = evaluation.evaluate_to_dir(
        [workdir],
        str(tmp_path / "eval"),
        num_samples=2,
        sample_dirs=[("ours again", folder)],
    )
    row = evals[1].row
    assert row["run"] == "ours again" and row["num_samples"] == 5
    assert "| ours again | samples |" in table
    assert "| contrast | saturation |" in table
    # Sample i of a folder is sample i of the sampler (8-bit round trip).
    drawn = np.clip(np.asarray(sampling.sample(run, jax.random.key(3), 5)), -1, 1)
    assert np.abs(evals[1].samples - drawn).max() <= 1.0 / 255 + 1e-6


def test_numbered_files_of_other_programs_and_nothing_else(tmp_path):
    folder = tmp_path / "theirs"
    folder.mkdir()
    for name in (
        "10.png",
        "2.png",
        "gen_sample_3.jpg",
        "grid.png",
        "real.png",
        "manifest.json",
        "notes.txt",
        "sample_1.npy",
    ):
        (folder / name).write_bytes(b"")
    (folder / "7.png").mkdir()  # a folder named like a sample is not one
    assert evaluation.sample_files(str(folder)) == [
        "2.png",
        "gen_sample_3.jpg",
        "10.png",
    ]


def test_a_bad_sample_folder_fails_before_any_sampling(
    tiny_agan_run, tmp_path, monkeypatch
):
    workdir, run = tiny_agan_run
    good = str(tmp_path / "good")
    _write(good, [run.real, run.real])
    only_grid = tmp_path / "only_grid"
    only_grid.mkdir()
    image_io.save_image(str(only_grid / "grid.png"), np.asarray(run.real))

    def no_sampling(*args, **kwargs):
        raise AssertionError("a run was sampled before the folders were checked")

    monkeypatch.setattr(evaluation, "draw_samples", no_sampling)
    out = tmp_path / "eval"
    with pytest.raises(UserError, match="holds 0 sample images"):
        evaluation.evaluate_to_dir(
            [workdir], str(out), sample_dirs=[("a", good), ("b", str(only_grid))]
        )
    with pytest.raises(UserError, match="distinct"):
        evaluation.evaluate_to_dir(
            [workdir], str(out), sample_dirs=[("a", good), ("a", good)]
        )
    assert not out.exists()


def test_the_training_image_scores_contrast_and_saturation_one(tiny_agan_run):
    _, run = tiny_agan_run
    real = np.asarray(run.real, np.float32)
    row = evaluation.evaluate_samples(run, np.stack([real, real]))
    assert row["contrast"] == pytest.approx(1.0, rel=1e-6)
    assert row["saturation"] == pytest.approx(1.0, rel=1e-6)
