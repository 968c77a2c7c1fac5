"""The launchers end to end: outputs on disk, and bad input as exit 2 messages."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from agan_jax import image_io
from tests.conftest import BUNDLED_IMAGE, ROOT, run_launcher

launch = run_launcher


def test_sample_writes_pngs_and_grid(tiny_agan_run, tmp_path):
    workdir, run = tiny_agan_run
    out = tmp_path / "samples"
    p = launch(
        "launch.sample",
        f"--workdir={workdir}",
        "--num_samples=64",
        "--scale_h=1.5",
        f"--out={out}",
        "--attention",
    )
    assert p.returncode == 0, p.stderr
    h, w = round(run.sizes[-1][0] * 1.5), run.sizes[-1][1]
    pngs = sorted(f for f in os.listdir(out) if f.startswith("sample_"))
    assert len(pngs) == 64
    assert Image.open(out / pngs[0]).size == (w, h)
    grid = image_io.make_grid(np.zeros((64, h, w, 3), np.float32))
    assert Image.open(out / "grid.png").size == (grid.shape[1], grid.shape[0])
    assert (out / "attention_stage_02.png").exists()
    p = launch(
        "launch.sample",
        f"--workdir={workdir}",
        "--num_samples=2",
        "--start_stage=1",
        f"--out={tmp_path / 's1'}",
    )
    assert p.returncode == 0, p.stderr
    # 2 samples, grid.png and manifest.json (what a re-run continues from).
    assert len(os.listdir(tmp_path / "s1")) == 4
    assert (tmp_path / "s1" / "manifest.json").exists()


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    (d / "notimage.png").write_text("hello")
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(d / "small.png")
    return d


@pytest.mark.parametrize(
    "override,message",
    [
        ("--config.data.image=/does/not/exist.png", "image file not found"),
        ("--config.data.image={bad}/notimage.png", "not an image"),
        ("--config.data.image={bad}/small.png", "below min_size"),
        ("--config.train.no_such_key=1", "unknown config key 'no_such_key'"),
        ("--config.model.kind=vae", "config.model.kind = 'vae': unknown model kind"),
        ("--config.train.update_rule=consingan", "is not a rule of agan"),
        ("--config.loss.tv_reduction=median", "tv_reduction = 'median': must be"),
    ],
)
def test_train_bad_input_exits_2(bad_inputs, tmp_path, override, message):
    p = launch(
        "launch.train",
        "--config=configs/agan.py:tiny",
        override.format(bad=bad_inputs),
        f"--workdir={tmp_path / 'w'}",
    )
    assert p.returncode == 2, p.stderr
    assert message in p.stderr.lower() or message in p.stderr, p.stderr
    assert "Traceback" not in p.stderr


def test_train_refuses_workdir_of_another_image(tiny_agan_run, tmp_path):
    workdir, _ = tiny_agan_run
    before = {
        f: os.path.getmtime(os.path.join(workdir, f)) for f in os.listdir(workdir)
    }
    other = os.path.join(ROOT, "data", "colusseum.png")
    img = np.asarray(Image.open(other).convert("RGB"))[::-1]  # flipped: another image
    path = tmp_path / "flipped.png"
    Image.fromarray(img).save(path)
    p = launch(
        "launch.train",
        "--config=configs/agan.py:tiny",
        f"--config.data.image={path}",
        f"--workdir={workdir}",
    )
    assert p.returncode == 2 and "another image" in p.stderr, p.stderr
    after = {f: os.path.getmtime(os.path.join(workdir, f)) for f in os.listdir(workdir)}
    assert after == before


def test_sample_without_run_exits_2(tmp_path):
    p = launch("launch.sample", f"--workdir={tmp_path}")
    assert p.returncode == 2 and "no trained run" in p.stderr, p.stderr


def test_train_launcher_end_to_end(tmp_path):
    """The README's training command on the tiny config, then resumed."""
    workdir = tmp_path / "run"
    args = [
        "launch.train",
        "--config=configs/singan.py:tiny",
        f"--workdir={workdir}",
        f"--config.data.image={BUNDLED_IMAGE}",
        "--quiet",
    ]
    p = launch(*args, "--stop_after_stage=0")
    assert p.returncode == 0, p.stderr
    assert sorted(os.listdir(workdir / "checkpoints")) == ["0"]
    p = launch(*args)
    assert p.returncode == 0, p.stderr
    stages = json.load(open(workdir / "run.json"))["num_stages"]
    assert stages >= 2
    assert sorted(os.listdir(workdir / "checkpoints")) == [
        str(s) for s in range(stages)
    ]
