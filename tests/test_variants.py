"""AGAN's diversity variants: merged near-equal stages (pyramid.min_step),
iterations by size step (train.iters_by_step), a noise-amplitude floor
(loss.noise_amp_floor) and TV from a given stage on (loss.tv_from_stage), each
against hand-computed values; one tiny run with all four."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agan_jax import checkpoint, frontier, methods, pyramid, train
from agan_jax.errors import UserError
from agan_jax.models import families
from agan_jax.settings import PyramidSettings, Settings
from agan_jax.state import StageData
from agan_jax.train.loop import noise_amp, stage_key
from agan_jax.train.runner import make_runner
from agan_jax.train.updates import make_stage_fns
from tests.conftest import (
    BUNDLED_IMAGE,
    loss_settings,
    model_spec,
    quick_compiles,
    tiny_config,
    train_settings,
)
from tests.test_launch import launch

# AGAN(3)'s circ pyramid at 64 px on colusseum (49x64), 6 stages, min_size 25.
CIRC_64 = [(25, 33), (26, 34), (27, 36), (30, 40), (43, 56), (49, 64)]


def test_agan3_geometric_is_singan_with_the_attention_generator_and_tv():
    """`agan3-geometric` trains SinGAN's stages (same sizes) with AGAN's generator
    and TV loss, and differs from SinGAN's config in nothing else."""

    def flat(method):
        s = Settings.from_config(
            methods.method_config(method, "cpu", BUNDLED_IMAGE, None)
        )
        return {
            f"{sec}.{k}": v
            for sec, d in dataclasses.asdict(s).items()
            if isinstance(d, dict)
            for k, v in d.items()
        }, s

    (a, sa), (b, sb) = flat("agan3-geometric"), flat("singan")
    assert {k: a[k] for k in a if a[k] != b[k]} == {
        "model.kind": "agan",
        "loss.tv_weight": 1.0,
    }
    sizes = [
        pyramid.stage_sizes_for(s.pyramid, s.data, (49, 64), (188, 250))
        for s in (sa, sb)
    ]
    assert sizes[0] == sizes[1] == [(25, 33), (30, 39), (35, 46), (42, 55), (49, 64)]


def test_the_circ_pyramid_at_64_px():
    assert pyramid.stage_sizes("circ", (49, 64), 6, 25) == CIRC_64


@pytest.mark.parametrize(
    "sizes, min_step, expected",
    [
        # steps from (25,33): 1.035, 1.085 (dropped), 1.206 (kept); 1.417; 1.141
        (CIRC_64, 1.1, [(25, 33), (30, 40), (43, 56), (49, 64)]),
        # 1.2: (43,56) is 1.417x (30,40) and stays; the finest is 1.141x it, so
        # (43,56) goes and the finest follows (30,40) at 1.617x.
        (CIRC_64, 1.2, [(25, 33), (30, 40), (49, 64)]),
        (CIRC_64, 1.5, [(25, 33), (49, 64)]),
        (CIRC_64, 0.0, CIRC_64),
        (CIRC_64, 1.0, CIRC_64),
        # the finest 1.05x the last kept stage: that stage goes, not the finest
        ([(25, 25), (30, 30), (40, 40), (42, 42)], 1.1, [(25, 25), (30, 30), (42, 42)]),
        # coarsest and finest always stay
        ([(25, 25), (26, 26)], 1.1, [(25, 25), (26, 26)]),
    ],
)
def test_merge_close_stages_against_hand_computed_sizes(sizes, min_step, expected):
    assert pyramid.merge_close_stages(sizes, min_step) == expected


def test_min_step_reaches_the_stage_sizes():
    data = Settings.from_config(tiny_config("agan", None)).data
    on = PyramidSettings(schedule="circ", num_stages=6, r0=0.75, min_step=1.1)
    off = dataclasses.replace(on, min_step=0.0)
    assert pyramid.stage_sizes_for(off, data, (49, 64), (188, 250)) == CIRC_64
    assert pyramid.stage_sizes_for(on, data, (49, 64), (188, 250)) == [
        (25, 33),
        (30, 40),
        (43, 56),
        (49, 64),
    ]
    config = tiny_config("agan")
    config.pyramid.min_step = 0.5
    with pytest.raises(UserError, match=r"pyramid.min_step = 0.5: must be 0 \(off\)"):
        Settings.from_config(config)


def test_iterations_follow_the_size_step():
    """iters x log(step) / mean log step, stage 0 unchanged; steps by hand."""
    logs = [
        math.log((h1 / h0 + w1 / w0) / 2)
        for (h0, w0), (h1, w1) in zip(CIRC_64, CIRC_64[1:], strict=False)
    ]
    ts = train_settings(iters=200, iters_by_step=True, lr_decay_iter=1599)
    got = [ts.at_stage(s, CIRC_64) for s in range(6)]
    assert got[0] is ts
    expected = [200] + [round(200 * x * 5 / sum(logs)) for x in logs]
    assert [t.iters for t in got] == expected == [200, 52, 71, 158, 522, 198]
    # the learning-rate step keeps its place in the stage
    assert got[4].lr_decay_iter == round(1599 * logs[3] * 5 / sum(logs))
    assert got[4].decay_iter / got[4].iters == pytest.approx(1599 / 200, rel=1e-2)
    # off: every stage the same settings
    off = dataclasses.replace(ts, iters_by_step=False)
    assert all(off.at_stage(s, CIRC_64) is off for s in range(6))
    # a stage that does not grow the image trains one iteration, not zero
    assert ts.at_stage(1, [(26, 37), (26, 37), (44, 64)]).iters == 1


def test_stage_functions_get_the_stage_settings(monkeypatch):
    """The stage loop's functions (optimisers' decay step included) are built
    with the stage's iterations; fine-tuning keeps its own."""
    from agan_jax.train import programs

    seen = {}

    def capture(family, spec, sizes, stage, ts, *rest):
        seen[stage] = ts

    monkeypatch.setattr(programs, "make_stage_fns", capture)
    config = tiny_config("agan", None)
    config.train.iters_by_step = True
    config.train.lr_decay_iter = -1  # round(0.8 x the stage's iterations)
    s = Settings.from_config(config)
    stages = programs.Stages(families.of(s.model), s, CIRC_64)
    for stage in range(6):
        stages.fns(stage)
    assert [seen[i].iters for i in range(6)] == [200, 52, 71, 158, 522, 198]
    assert [seen[i].decay_iter for i in range(6)] == [160, 42, 57, 126, 418, 158]
    stages.fns(4, finetune=True)
    assert seen[4].iters == 200


def test_noise_amp_floor():
    ls = loss_settings("agan", noise_amp_floor=0.02)
    assert noise_amp(ls, None) == 1.0  # stage 0
    assert noise_amp(ls, 0.05) == 0.02  # 0.1 x 0.05 = 0.005 < floor
    assert noise_amp(ls, 0.5) == pytest.approx(0.05)
    off = loss_settings("agan")
    assert off.noise_amp_floor == 0.0 and noise_amp(off, 0.05) == pytest.approx(0.005)


def _one_iteration(tv_weight: float, tv_from_stage: int):
    """Generator weights after one iteration of stage 0 (SinGAN's generator
    on a smooth image) with this TV weight and start stage."""
    sizes = [(16, 22), (20, 27)]
    spec = model_spec("singan", nfc=8, max_nfc=8)
    ts = train_settings(iters=1, d_steps=1, g_steps=1, compile_unit="update")
    ls = loss_settings("singan", tv_weight=tv_weight, tv_from_stage=tv_from_stage)
    family = families.of(spec)
    fns = make_stage_fns(family, spec, sizes, 0, ts, ls)
    h, w = sizes[0]
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    real = jnp.asarray(np.stack([xx, yy, xx * yy], -1).astype(np.float32) * 0.8)
    state = fns.init_state(stage_key(0, 0))
    z_rec = family.stage0_rec(spec, 0, sizes, state.g_vars, real)
    rec_inputs, _ = fns.prepare(state.g_vars, (), jnp.zeros((0,)), z_rec, real)
    data = StageData(real, jnp.ones((1,), jnp.float32), rec_inputs, (), real)
    runner = make_runner(fns, ts, state, data)
    state, _ = runner[1](state, data)
    return jax.device_get(state.g_vars["params"])


def test_tv_from_stage_gates_the_tv_term():
    """Stage 0 with tv_from_stage=1 trains exactly as without TV; with 0 (the
    default) the TV term moves the weights."""
    with quick_compiles():
        gated = _one_iteration(1.0, 1)
        no_tv = _one_iteration(0.0, 0)
        with_tv = _one_iteration(1.0, 0)
    same = jax.tree.map(np.array_equal, gated, no_tv)
    assert all(jax.tree.leaves(same))
    diff = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), with_tv, no_tv)
    assert max(jax.tree.leaves(diff)) > 0


def test_tiny_run_with_every_variant(tmp_path):
    """circ, 4 stages at 25x32: min_step 1.1 merges (17, 22) into its
    neighbours; the two steps left (1.354, 1.140) split 2 x 10 iterations as
    14 and 6; every stage above 0 gets the floor 0.3 (> 0.1 x any RMSE of
    images in [-1, 1]), and the run keeps it for sampling."""
    config = tiny_config("agan")
    config.pyramid.num_stages = 4
    config.pyramid.min_step = 1.1
    config.train.iters_per_stage = 10
    config.train.iters_by_step = True
    config.train.log_every = 1
    config.loss.noise_amp_floor = 0.3
    config.loss.tv_from_stage = 1
    assert pyramid.stage_sizes("circ", (25, 32), 4, 16)[1] == (17, 22)
    workdir = str(tmp_path / "run")
    with quick_compiles():
        train.train(config, workdir, progress=False)
    run = checkpoint.load_run(workdir)
    assert [tuple(s) for s in run.sizes] == [(16, 21), (22, 28), (25, 32)]
    assert [float(a) for a in run.noise_amps] == pytest.approx([1.0, 0.3, 0.3])
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    last_iter = {}
    for r in records:
        if "iter" in r:
            last_iter[r["stage"]] = max(last_iter.get(r["stage"], 0), r["iter"])
    assert last_iter == {0: 10, 1: 14, 2: 6}


# --- the SWD-diversity plot (launch.compare) -----------------------------------


def _png_size(path) -> tuple[int, int]:
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def test_frontier_points_and_panels(tmp_path):
    rows = {
        "singan": {"swd": 0.05, "diversity": 0.5},
        "agan3": {"swd": 0.02, "diversity": 0.3},
        "agan3.seed1": {"swd": 0.03, "diversity": 0.25},
        "agan3-min-step.seed2": {"swd": 0.025, "diversity": 0.4},
    }
    data = frontier.write_frontier({"stone": rows}, str(tmp_path / "one"))
    assert data == {
        "stone": {
            "singan": {"seeds": [0], "swd": [0.05], "diversity": [0.5]},
            "agan3": {"seeds": [0, 1], "swd": [0.02, 0.03], "diversity": [0.3, 0.25]},
            "agan3-min-step": {"seeds": [2], "swd": [0.025], "diversity": [0.4]},
        }
    }
    with open(tmp_path / "one" / frontier.FRONTIER_JSON) as f:
        assert json.load(f) == data
    w1, h1 = _png_size(tmp_path / "one" / frontier.FRONTIER_PNG)
    assert 300 <= w1 <= 2000 and 200 <= h1 <= 2000
    frontier.write_frontier({"a": rows, "b": rows, "c": rows}, str(tmp_path / "three"))
    w3, h3 = _png_size(tmp_path / "three" / frontier.FRONTIER_PNG)
    assert w3 > w1 and h3 > h1  # a 2x2 grid of panels, the fourth hidden
    assert frontier.split_run_name("agan3-no-tv.seed12") == ("agan3-no-tv", 12)
    assert frontier.run_name("agan3", 0) == "agan3"


def _goal_shade_pixels(png) -> int:
    """Pixels of the goal corner's shade: tab:green at alpha 0.12 over white."""
    from PIL import Image

    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    shade = np.array([230, 244, 230])
    return int((np.abs(rgb - shade).max(axis=-1) <= 3).sum())


def test_frontier_shades_the_goal_corner_against_singan(tmp_path):
    """Patch SWD <= 0.8x and diversity >= 0.9x SinGAN's mean over its seeds; a
    panel without SinGAN has no corner (and no shade)."""
    rows = {
        "singan": {"swd": 0.04, "diversity": 0.5},
        "singan.seed1": {"swd": 0.06, "diversity": 0.7},
        "agan3": {"swd": 0.02, "diversity": 0.3},
    }
    points = frontier.panel_points(rows)
    swd_max, div_min = frontier.goal_corner(points)
    np.testing.assert_allclose([swd_max, div_min], [0.8 * 0.05, 0.9 * 0.6])
    assert frontier.goal_corner(frontier.panel_points({"agan3": rows["agan3"]})) is None
    frontier.write_frontier({"with": rows}, str(tmp_path / "with"))
    without = {k: v for k, v in rows.items() if not k.startswith("singan")}
    frontier.write_frontier({"without": without}, str(tmp_path / "without"))
    shaded = _goal_shade_pixels(tmp_path / "with" / frontier.FRONTIER_PNG)
    w, h = _png_size(tmp_path / "with" / frontier.FRONTIER_PNG)
    assert shaded > 0.02 * w * h, (shaded, w, h)
    assert _goal_shade_pixels(tmp_path / "without" / frontier.FRONTIER_PNG) == 0


def test_compare_draws_every_seed_as_in_the_table(
    tiny_agan_run, tiny_singan_run, tmp_path
):
    """--train_seeds=0,1 with the four runs already trained (seed 1's run.json
    says seed 1): nothing retrained, a row per run, the plot's points are the
    table's."""
    out = tmp_path / "cmp"
    for method, (workdir, _) in (("singan", tiny_singan_run), ("agan3", tiny_agan_run)):
        for seed in (0, 1):
            dst = out / frontier.run_name(method, seed)
            shutil.copytree(workdir, dst)
            meta = json.loads((dst / "run.json").read_text())
            meta["config"]["seed"] = seed
            (dst / "run.json").write_text(json.dumps(meta))
    p = launch(
        "launch.compare",
        f"--image={BUNDLED_IMAGE}",
        "--size=tiny",
        "--methods=singan,agan3",
        "--train_seeds=0,1",
        "--num_samples=2",
        f"--out={out}",
    )
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.count("already trained") == 4
    with open(out / "evaluation.json") as f:
        rows = json.load(f)["runs"]
    assert [r["run"] for r in rows] == [
        "singan",
        "singan.seed1",
        "agan3",
        "agan3.seed1",
    ]
    with open(out / frontier.FRONTIER_JSON) as f:
        drawn = json.load(f)
    stem = os.path.splitext(os.path.basename(BUNDLED_IMAGE))[0]
    assert list(drawn) == [stem]
    for method in ("singan", "agan3"):
        mine = [r for r in rows if r["run"].split(".")[0] == method]
        assert drawn[stem][method] == {
            "seeds": [0, 1],
            "swd": [r["swd"] for r in mine],
            "diversity": [r["diversity"] for r in mine],
        }
    w, h = _png_size(out / frontier.FRONTIER_PNG)
    assert 300 <= w <= 2000 and 200 <= h <= 2000


@pytest.mark.parametrize("seeds", ["0,0", "a", "-1"])
def test_compare_refuses_bad_train_seeds(tmp_path, seeds):
    p = launch(
        "launch.compare",
        f"--image={BUNDLED_IMAGE}",
        f"--train_seeds={seeds}",
        f"--out={tmp_path / 'c'}",
    )
    assert p.returncode == 2 and "--train_seeds" in p.stderr, p.stderr
    assert not (tmp_path / "c").exists()


def test_compare_folder_draws_a_panel_per_image(tmp_path):
    """--images with two training seeds: a panel per image, each holding the
    method's two runs (OUT/singan/<image>, OUT/singan.seed1/<image>) as the
    per-image tables have them."""
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    # 21x16: two SinGAN stages at the tiny size (32x25 trains four, 2.3x longer).
    base = np.asarray(Image.open(BUNDLED_IMAGE).convert("RGB").resize((21, 16)))
    for name in ("a", "b"):
        noise = rng.integers(-20, 20, base.shape)
        pixels = np.clip(base.astype(int) + noise, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{name}.png")
    out = tmp_path / "cmp"
    with quick_compiles(children=True):
        p = launch(
            "launch.compare",
            f"--images={folder}",
            "--size=tiny",
            "--methods=singan",
            "--train_seeds=0,1",
            "--iters_per_stage=2",
            "--num_samples=2",
            f"--out={out}",
        )
    assert p.returncode == 0, p.stderr[-3000:]
    with open(out / frontier.FRONTIER_JSON) as f:
        drawn = json.load(f)
    assert sorted(drawn) == ["a", "b"]
    for name in ("a", "b"):
        assert (out / "singan" / name / "run.json").is_file()
        meta = json.loads((out / "singan.seed1" / name / "run.json").read_text())
        assert meta["config"]["seed"] == 1
        with open(out / "images" / name / "evaluation.json") as f:
            rows = json.load(f)["runs"]
        assert drawn[name] == {
            "singan": {
                "seeds": [0, 1],
                "swd": [r["swd"] for r in rows],
                "diversity": [r["diversity"] for r in rows],
            }
        }
    w, h = _png_size(out / frontier.FRONTIER_PNG)
    assert w > h  # two panels side by side
