"""agan_jax.evaluation and the launchers evaluate/compare, on the tiny trained runs."""

from __future__ import annotations

import json
import math
import os
import shutil

import jax
import numpy as np
import pytest
from PIL import Image

from agan_jax import evaluation, inception
from agan_jax.errors import UserError
from tests.conftest import BUNDLED_IMAGE
from tests.test_inception import random_state_dict
from tests.test_launch import launch

N = 4


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory) -> str:
    """A synthetic Inception weights .npz with torchvision names and shapes."""
    path = tmp_path_factory.mktemp("weights") / "inception_v3.npz"
    return str(inception.save_npz_from_state_dict(random_state_dict(), path))


def copy_run(src: str, dst, image_hash: str | None = None) -> str:
    """A copy of a run directory, optionally claiming another training image."""
    shutil.copytree(src, dst)
    if image_hash is not None:
        meta_path = os.path.join(dst, "run.json")
        with open(meta_path) as f:
            meta = json.load(f)
        meta["image_hash"] = image_hash
        meta["image_path"] = "data/stone.png"
        with open(meta_path, "w") as f:
            json.dump(meta, f)
    return str(dst)


def check_row(row: dict, n: int) -> None:
    assert row["num_samples"] == n
    for key in ("swd", "diversity", "ssim", "rmse"):
        assert math.isfinite(row[key]), key
    assert row["swd"] > 0
    assert row["diversity"] >= 0
    assert -1.0 <= row["ssim"] <= 1.0
    assert row["rmse"] >= 0
    assert row["train_seconds"] is not None and row["train_seconds"] > 0


def test_evaluate_run_ranges_and_names(tiny_agan_run, tiny_singan_run):
    key = jax.random.key(0)
    (_, agan), (_, singan) = tiny_agan_run, tiny_singan_run
    a = evaluation.evaluate_run(agan, N, key)
    s = evaluation.evaluate_run(singan, N, key)
    check_row(a, N)
    check_row(s, N)
    assert (a["method"], a["schedule"], a["stages"]) == ("AGAN(3)", "circ", 3)
    assert (s["method"], s["schedule"]) == ("SinGAN", "geometric")
    assert a["sifid"] is None
    # Same key, same run: the same numbers.
    assert evaluation.evaluate_run(agan, N, key)["swd"] == a["swd"]
    with pytest.raises(UserError, match="at least 2"):
        evaluation.evaluate_run(agan, 1, key)


def test_sifid_with_synthetic_weights(tiny_agan_run, weights_file):
    params = inception.load_inception_weights(weights_file)
    row = evaluation.evaluate_run(tiny_agan_run[1], N, jax.random.key(1), params)
    sifid = row["sifid"]
    assert len(sifid["values"]) == N
    assert all(math.isfinite(v) and v >= 0 for v in sifid["values"])
    assert sifid["mean"] > 0 and sifid["std"] >= 0
    assert row["sifid_layer"] == 64


def test_method_names_and_swd_levels():
    name = evaluation.method_name
    assert name({"kind": "agan", "schedule": "cos"}) == "AGAN(1)"
    assert name({"kind": "agan", "schedule": "quad"}) == "AGAN(2)"
    assert name({"kind": "agan", "schedule": "circ"}) == "AGAN(3)"
    assert name({"kind": "singan", "schedule": "geometric"}) == "SinGAN"
    assert name({"kind": "consingan", "schedule": "geometric"}) == "ConSinGAN"
    assert evaluation.swd_levels((24, 32)) == 2
    assert evaluation.swd_levels((48, 64)) == 3
    assert evaluation.swd_levels((8, 8)) == 1


def test_train_seconds_from_metrics(tmp_path):
    lines = [
        {"stage": 0, "iter": 10, "d_loss": 1.0},
        {"event": "stage_done", "stage": 0, "stage_s": 3.0},
        {"event": "stage_done", "stage": 1, "stage_s": 4.0},
        {"event": "run_done", "stages": 2, "seconds": 7.5},
        {"event": "run_done", "stages": 2, "seconds": 0.1},  # a no-op resume
        {"event": "stage_done", "stage": 2, "stage_s": 2.0},  # killed afterwards
    ]
    (tmp_path / "metrics.jsonl").write_text(
        "\n".join(json.dumps(r) for r in lines) + "\n{truncat"
    )
    assert evaluation.read_train_seconds(str(tmp_path)) == pytest.approx(9.6)
    assert evaluation.read_train_seconds(str(tmp_path / "none")) is None
    assert evaluation.format_seconds(None) == "-"
    assert evaluation.format_seconds(42.4) == "42 s"
    assert evaluation.format_seconds(886.0) == "14.8 min"


def test_runs_of_different_images_refused(tiny_agan_run, tiny_singan_run, tmp_path):
    other = copy_run(tiny_agan_run[0], tmp_path / "other", image_hash="0" * 64)
    with pytest.raises(UserError, match="different training images") as e:
        evaluation.evaluate_runs([tiny_singan_run[0], other], N, jax.random.key(0))
    assert tiny_singan_run[0] in str(e.value) and other in str(e.value)
    p = launch(
        "launch.evaluate",
        f"--workdirs={tiny_agan_run[0]},{other}",
        f"--out={tmp_path / 'eval'}",
    )
    assert p.returncode == 2, p.stderr
    assert "different training images" in p.stderr and other in p.stderr


def test_unfinished_or_missing_run_refused(tiny_agan_run, tmp_path):
    partial = copy_run(tiny_agan_run[0], tmp_path / "partial")
    shutil.rmtree(os.path.join(partial, "checkpoints", "2"))
    with pytest.raises(UserError, match="2 of 3 stages"):
        evaluation.load_finished_run(partial)
    with pytest.raises(UserError, match="no trained run"):
        evaluation.evaluate_runs([str(tmp_path)], N, jax.random.key(0))


def test_evaluate_to_dir_table_json_sheet(
    tiny_agan_run, tiny_singan_run, weights_file, tmp_path
):
    out = str(tmp_path / "eval")
    workdirs = [tiny_singan_run[0], tiny_agan_run[0]]
    evals, table = evaluation.evaluate_to_dir(
        workdirs, out, num_samples=N, inception_weights=weights_file, k=3
    )
    lines = table.splitlines()
    assert len(lines) == 2 + len(workdirs)
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == [h for h, _ in evaluation.TABLE_COLUMNS]
    for needed in ("method", "schedule", "stages", "train time", "SWD ↓"):
        assert needed in header
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert cells[1] == "SinGAN" and cells[2] == "geometric" and cells[3] == "3"
    assert "±" in cells[-1]  # SIFID mean ± std
    no_sifid = evaluation.markdown_table([{**evals[0].row, "sifid": None}])
    assert no_sifid.splitlines()[2].rstrip(" |").endswith("-")

    data = json.loads(open(os.path.join(out, "evaluation.json")).read())
    assert [r["method"] for r in data["runs"]] == ["SinGAN", "AGAN(3)"]
    assert len(data["runs"][1]["sifid"]["values"]) == N
    assert data["table"] == table

    h, w = evals[0].run.real.shape[:2]
    f = -(-96 // h)  # cells are upscaled to at least 96 px
    grid = evaluation.image_io.make_grid(
        np.zeros((2 * 4, h * f, w * f, 3), np.float32), ncols=4, pad=2 * f
    )
    with Image.open(os.path.join(out, "contact_sheet.png")) as im:
        assert im.size == (grid.shape[1], grid.shape[0])
        sheet = np.asarray(im)
    # Row 1, cell 1 is the training image.
    real = evaluation.image_io.to_uint8(evals[0].run.real)
    y0 = x0 = 2 * f
    cell = sheet[y0 : y0 + h * f : f, x0 : x0 + w * f : f]
    np.testing.assert_array_equal(cell, real)


@pytest.mark.parametrize("kind", ["missing", "wrong"])
def test_evaluate_bad_weights_exit_2(tiny_agan_run, tmp_path, kind):
    path = tmp_path / "w.npz"
    if kind == "wrong":
        sd = random_state_dict()
        sd["Conv2d_2b_3x3.conv.weight"] = np.zeros((64, 32, 1, 1), np.float32)
        del sd["Conv2d_4a_3x3.bn.running_var"]
        inception.save_npz_from_state_dict(sd, path)
    p = launch(
        "launch.evaluate",
        f"--workdirs={tiny_agan_run[0]}",
        f"--out={tmp_path / 'eval'}",
        f"--inception_weights={path}",
    )
    assert p.returncode == 2, p.stderr
    assert p.stderr.startswith("error:") and "Traceback" not in p.stderr
    if kind == "missing":
        assert "does not exist" in p.stderr
    else:
        assert "Conv2d_2b_3x3.conv.weight" in p.stderr and "(64, 32, 3, 3)" in p.stderr
        assert "missing Conv2d_4a_3x3.bn.running_var" in p.stderr
    assert not (tmp_path / "eval").exists()


def test_compare_tiny_end_to_end(tiny_singan_run, tmp_path):
    """Trains AGAN(3) (SinGAN is a copy of the fixture, skipped), then evaluates."""
    out = tmp_path / "compare"
    copy_run(tiny_singan_run[0], out / "singan")
    args = (
        "launch.compare",
        f"--image={BUNDLED_IMAGE}",
        "--size=tiny",
        f"--out={out}",
        "--methods=singan,agan3",
        "--num_samples=3",
    )
    p = launch(*args)
    assert p.returncode == 0, p.stderr
    assert "[1/2] singan: already trained (3 stages)" in p.stdout
    assert "[2/2] agan3: training into" in p.stdout
    assert "[2/2] agan3: 3 stages trained in" in p.stdout
    table = [ln for ln in p.stdout.splitlines() if ln.startswith("| ")]
    assert len(table) == 3 and "AGAN(3)" in table[2] and "SinGAN" in table[1]
    for name in ("evaluation.json", "table.md", "contact_sheet.png"):
        assert (out / name).exists()
    p = launch(*args[:-2], "--methods=agan9")
    assert p.returncode == 2 and "unknown method 'agan9'" in p.stderr
