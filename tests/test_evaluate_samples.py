"""Samples written by another program, evaluated against a run's training image."""

from __future__ import annotations

import os

import jax
import numpy as np
import pytest

from agan_jax import evaluation, image_io, sampling
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
    assert got["method"] == "other program" and got["num_samples"] == 4
    for key in ("swd", "diversity", "ssim", "rmse"):
        assert got[key] == pytest.approx(want[key], rel=1e-6)


def test_sample_folders_are_checked(tiny_agan_run, tmp_path):
    _, run = tiny_agan_run
    h, w = run.real.shape[:2]
    with pytest.raises(UserError, match="not found"):
        evaluation.load_sample_dir(str(tmp_path / "missing"), (h, w))
    one = str(tmp_path / "one")
    _write(one, [run.real])
    with pytest.raises(UserError, match="holds 1 images"):
        evaluation.load_sample_dir(one, (h, w))
    wrong = str(tmp_path / "wrong")
    _write(wrong, [np.zeros((h + 1, w, 3))] * 2)
    with pytest.raises(UserError, match=f"not {h}x{w}"):
        evaluation.load_sample_dir(wrong, (h, w))
