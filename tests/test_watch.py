"""Watching a run: metric writers (metrics.jsonl, TensorBoard), loss plots, reports.

Two tiny trainings: the session's `tiny_agan_run` (configs/agan.py:tiny, 3 stages
of 20 iterations, no stage grids; `launch.compare` finds it finished) and
`grid_run` (2 stages of 2 iterations with stage grids, trained in two invocations
so the TensorBoard writer appends). TensorBoard's own reader (EventAccumulator)
reads their event files back; reports are parsed with html.parser.
"""

from __future__ import annotations

import base64
import dataclasses
import html.parser
import io
import json
import math
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator

from agan_jax import evaluation, image_io, plots, report, sampling, train
from agan_jax.models import families
from agan_jax.sampling import make_sampler
from agan_jax.settings import LogSettings, Settings
from agan_jax.train import log as train_log
from agan_jax.train import metrics
from agan_jax.train.log import (
    GRID_KEY,
    MIN_CELL,
    grid_batch,
    stage_image_names,
    visible_grid,
    write_stage_images,
)
from agan_jax.train.runner import learning_rates
from agan_jax.train.updates import d_tx
from tests.conftest import BUNDLED_IMAGE, ROOT, tiny_config

ITERS, LOG_EVERY, GRID = 2, 1, 2
LOSS_KEYS = {"d_loss", "gp", "g_adv", "rec", "tv"}
NEW_KEYS = {"d_wgan", "lr_d", "lr_g", "noise_amp", "s_per_iter"}


def grid_config():
    config = tiny_config("agan")
    config.pyramid.num_stages = 2
    config.model.num_layers = 2  # compiles in half the time of 5 layers
    config.train.iters_per_stage = ITERS
    config.train.log_every = LOG_EVERY
    config.train.stage_samples = GRID
    return config


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory):
    """(workdir, Run): tiny AGAN, 2 stages with grids: stage 0, then a resume."""
    workdir = str(tmp_path_factory.mktemp("grids") / "agan")
    train.train(grid_config(), workdir, stop_after=0, progress=False)
    run = train.train(grid_config(), workdir, progress=False)
    return workdir, run


def logged_iters(config) -> list[int]:
    """The iterations a stage logs: every log_every, and the last."""
    iters, every = config.train.iters_per_stage, config.train.log_every
    return sorted({*range(every, iters + 1, every), iters})


def read_events(workdir: str) -> event_accumulator.EventAccumulator:
    acc = event_accumulator.EventAccumulator(
        workdir,
        size_guidance={event_accumulator.SCALARS: 0, event_accumulator.IMAGES: 0},
    )
    acc.Reload()
    return acc


def records(workdir: str) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "PNG"
        return im.size


# -- the learning rate on the host is the optimisers' -----------------------------
def test_learning_rates_follow_the_optimisers():
    """With a constant gradient Adam's update is -lr (m_hat = g, v_hat = g^2): the
    host's learning rate of every iteration equals the optimisers' last step."""
    settings = Settings.from_config(tiny_config("singan"))
    ts = dataclasses.replace(
        settings.train, iters=20, d_steps=3, g_steps=2, lr_decay_iter=13
    )
    model = families.of(settings.model).make_stage(
        settings.model, [(16, 22)], 0, settings.augment, False
    )
    for key, tx, steps in (
        ("lr_d", d_tx(ts), ts.d_steps),
        ("lr_g", model.g_tx(ts), ts.g_steps),
    ):
        params = {"w": jnp.zeros(())}
        grads = {"w": jnp.ones(())}
        update = jax.jit(tx.update)
        opt = tx.init(params)
        for it in range(1, ts.iters + 1):
            for _ in range(steps):
                u, opt = update(grads, opt, params)
            expected = learning_rates(ts, it)[key]
            np.testing.assert_allclose(-float(u["w"]), expected, rtol=1e-5)
        assert learning_rates(ts, 1)[key] != learning_rates(ts, ts.iters)[key]


# -- the writers ------------------------------------------------------------------
def test_writers_round_trip(tmp_path):
    workdir = str(tmp_path)
    image = np.linspace(-1, 1, 20 * 30 * 3, dtype=np.float32).reshape(20, 30, 3)
    for session in range(2):  # a resume appends a second event file
        w = metrics.make_writer(workdir, LogSettings(tensorboard=True))
        w.scalars(session, 10, {"rec": 0.5, "lr_d": 5e-4})
        w.scalars(session, 20, {"rec": 0.25, "lr_d": 5e-5})
        w.record(
            {"event": "stage_done", "stage": session, "noise_amp": 0.1, "size": [2]}
        )
        w.record({"event": "run_done", "stages": session + 1, "seconds": 1.0})
        w.image(session, 20, "samples", image)
        w.image(session, 20, "attention", image[..., :1])
        w.close()
    assert len([f for f in os.listdir(workdir) if "tfevents" in f]) == 2
    lines = records(workdir)
    assert lines[0] == {"stage": 0, "iter": 10, "rec": 0.5, "lr_d": 5e-4}
    assert lines[2] == {
        "event": "stage_done",
        "stage": 0,
        "noise_amp": 0.1,
        "size": [2],
    }
    assert len(lines) == 8

    acc = read_events(workdir)
    tags = acc.Tags()
    assert set(tags["scalars"]) == {
        "stage_00/rec",
        "stage_00/lr_d",
        "stage_01/rec",
        "stage_01/lr_d",
        "stage_done/noise_amp",
    }
    assert [(e.step, e.value) for e in acc.Scalars("stage_01/rec")] == [
        (10, 0.5),
        (20, 0.25),
    ]
    assert [e.step for e in acc.Scalars("stage_done/noise_amp")] == [0, 1]
    assert set(tags["images"]) == {
        f"stage_0{s}/{k}" for s in (0, 1) for k in ("samples", "attention")
    }
    im = acc.Images("stage_00/attention")[0]
    assert (im.step, im.width, im.height) == (20, 30, 20)
    decoded = np.asarray(Image.open(io.BytesIO(im.encoded_image_string)))
    assert decoded.shape == (20, 30, 3)


def test_json_only_runs_write_no_event_files(tmp_path):
    for log in (LogSettings(tensorboard=False), None):
        w = metrics.make_writer(str(tmp_path), log)
        assert isinstance(w, metrics.JsonlWriter)
        w.scalars(0, 1, {"rec": 1.0})
        w.image(0, 1, "samples", np.zeros((4, 4, 3)))
        w.close()
    assert os.listdir(tmp_path) == ["metrics.jsonl"]
    # The TensorBoard writer opens its file at the first write, not before.
    metrics.TensorBoardWriter(str(tmp_path / "tb")).close()
    assert not os.path.exists(tmp_path / "tb")


# -- a tiny training --------------------------------------------------------------
def test_training_writes_tensorboard_scalars(tiny_agan_run):
    """Every logged scalar of every stage, at the logged iterations, with the
    values of metrics.jsonl; the stage records at step = stage."""
    workdir, run = tiny_agan_run
    acc = read_events(workdir)
    lines = [r for r in records(workdir) if "iter" in r]
    steps = logged_iters(tiny_config("agan"))
    for s in range(run.num_stages):
        for key in LOSS_KEYS | NEW_KEYS:
            events = acc.Scalars(f"stage_{s:02d}/{key}")
            assert [e.step for e in events] == steps, (s, key)
            logged = [r[key] for r in lines if r["stage"] == s]
            np.testing.assert_allclose([e.value for e in events], logged, rtol=1e-6)
    compile_parts = (
        "compile_setup_s",
        "compile_runners_s",
        "compile_lower_s",
        "compile_grid_s",
    )
    memory = ("rss_mib", "peak_rss_mib") if sys.platform.startswith("linux") else ()
    for key in ("noise_amp", "train_s", "compile_s", "iters_per_s", *compile_parts):
        steps = [e.step for e in acc.Scalars(f"stage_done/{key}")]
        assert steps == list(range(run.num_stages))
    for key in memory:  # resident memory at each stage's end (Linux)
        values = [e.value for e in acc.Scalars(f"stage_done/{key}")]
        assert len(values) == run.num_stages and min(values) > 0
    # + stage_done's numbers
    n = run.num_stages * len(LOSS_KEYS | NEW_KEYS) + 10 + len(memory)
    assert len(acc.Tags()["scalars"]) == n
    assert acc.Tags()["images"] == []  # configs/agan.py:tiny draws no stage grids


def test_stage_images_and_a_resume_in_tensorboard(grid_run):
    workdir, run = grid_run
    assert len([f for f in os.listdir(workdir) if "tfevents" in f]) == 2  # resumed
    acc = read_events(workdir)
    for s in range(run.num_stages):
        assert [e.step for e in acc.Scalars(f"stage_{s:02d}/rec")] == [1, 2]
        kinds = ["samples", "reconstruction"] + (["attention"] if s > 0 else [])
        for kind in kinds:
            (im,) = acc.Images(f"stage_{s:02d}/{kind}")
            assert im.step == ITERS and im.height >= MIN_CELL
    assert "stage_00/attention" not in acc.Tags()["images"]  # none at AGAN's stage 0
    assert [e.step for e in acc.Scalars("stage_done/noise_amp")] == [0, 1]


@pytest.mark.parametrize("batch", ["default", 4])
def test_stage_grid_drawn_in_batches_shows_the_run_samples(
    grid_run, tmp_path, monkeypatch, batch
):
    """The grid sampler runs `grid_batch(n)` keys per call (1 on CPU: the whole
    grid at once added 218 MiB at 97x128); 6 samples in calls of 1, or of 4 with
    the last padded, give the samples one call of 6 draws with the grid's keys."""
    workdir, run = grid_run
    n, s, seed = 6, run.num_stages - 1, 3
    if batch == "default":
        batch = grid_batch(n)
        assert batch == (1 if jax.default_backend() == "cpu" else n)
    else:
        monkeypatch.setattr(train_log, "grid_batch", lambda n: batch)
    f = jax.jit(make_sampler(run.spec, run.sizes, 0, s + 1, with_attention=True))
    real = np.zeros((*run.sizes[s], 3), np.float32)
    write_stage_images(f, n, seed, run.g_vars, run.noise_amps, str(tmp_path), s, real)
    assert f._cache_size() == 1  # one shape of keys: `batch`, never n
    key = jax.random.fold_in(jax.random.key(seed), GRID_KEY + s)
    images, attns = sampling.Sampler(run).sample(
        key, n, batch_size=n, with_attention=True
    )
    expected = {
        "samples": visible_grid(np.concatenate([real[None], np.asarray(images)])),
        "attention": visible_grid(np.asarray(attns[-1]) * 2.0 - 1.0),
    }
    names = stage_image_names(s)
    for kind, grid in expected.items():
        want = str(tmp_path / f"want_{kind}.png")
        image_io.save_image(want, grid)
        got = np.asarray(Image.open(tmp_path / "stages" / names[kind]), np.int16)
        ref = np.asarray(Image.open(want), np.int16)
        assert got.shape == ref.shape and np.abs(got - ref).max() <= 1, kind


def test_metrics_jsonl_keeps_its_records(grid_run):
    workdir, run = grid_run
    lines = records(workdir)
    logged = [r for r in lines if "iter" in r]
    assert [(r["stage"], r["iter"]) for r in logged] == [(0, 1), (0, 2), (1, 1), (1, 2)]
    for r in logged:
        assert set(r) == {"stage", "iter"} | LOSS_KEYS | NEW_KEYS
        assert r["noise_amp"] == pytest.approx(float(run.noise_amps[r["stage"]]))
        assert r["d_wgan"] == pytest.approx(r["d_loss"] - 0.1 * r["gp"], abs=1e-6)
        assert r["s_per_iter"] > 0
    ts = Settings.from_config(grid_config()).train
    for r in logged:
        assert r["lr_d"] == learning_rates(ts, r["iter"])["lr_d"]
        assert r["lr_g"] == learning_rates(ts, r["iter"])["lr_g"]
    events = [r["event"] for r in lines if "event" in r]
    assert events == ["stage_done", "run_done", "stage_done", "run_done"]
    assert evaluation.read_train_seconds(workdir) > 0
    meta = json.load(open(os.path.join(workdir, "run.json")))
    assert "log" not in meta["config"]  # how a run is watched is not the run


def test_stage_grids_are_upscaled(grid_run):
    workdir, run = grid_run
    for s, (h, w) in enumerate(run.sizes):
        f = math.ceil(MIN_CELL / h)
        assert f * h >= MIN_CELL
        with Image.open(os.path.join(workdir, "stages", f"stage_{s:02d}.png")) as im:
            # the training image and GRID samples in a 2x2 grid, pad 2, times f
            assert im.size == (f * (2 * (w + 2) + 2), f * (2 * (h + 2) + 2))
        name = f"stage_{s:02d}_reconstruction.png"
        with Image.open(os.path.join(workdir, "stages", name)) as im:
            assert im.size == (f * (2 * (w + 2) + 2), f * (h + 4))


def test_losses_png_after_training_and_launch_plot(tiny_agan_run, grid_run, tmp_path):
    tiny = logged_iters(tiny_config("agan"))
    for workdir, its in ((tiny_agan_run[0], tiny), (grid_run[0], [1, 2])):
        with open(os.path.join(workdir, plots.LOSSES_PNG), "rb") as f:
            w, h = png_size(f.read())
        assert w >= 1000 and h >= 600
        series = plots.stage_series(records(workdir))
        assert set(series) == LOSS_KEYS | NEW_KEYS
        assert series["rec"][1][0] == its
    # Two runs overlaid from the command line, then a folder without a run.
    out = str(tmp_path / "cmp.png")
    cmd = [sys.executable, "-m", "launch.plot", f"--out={out}"]
    both = [f"--workdir={tiny_agan_run[0]},{grid_run[0]}"]
    proc = subprocess.run(cmd + both, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    with open(out, "rb") as f:
        png_size(f.read())
    empty = str(tmp_path / "empty")
    os.makedirs(empty)
    repeated = [f"--workdir={grid_run[0]}", f"--workdir={empty}"]
    proc = subprocess.run(cmd + repeated, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"error: {empty} holds no run (no metrics.jsonl); pass a run directory "
        "written by python -m launch.train"
    )


# -- reports ----------------------------------------------------------------------
class PageParser(html.parser.HTMLParser):
    """Checks nesting; collects ids, tables (rows of cells) and images."""

    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.ids: dict[str, str] = {}
        self.doctype = False
        self.tables: dict[str, list[list[str]]] = {}
        self.images: dict[str, bytes] = {}  # figure id -> PNG bytes
        self._table = self._cell = self._figure = None

    def handle_decl(self, decl):
        self.doctype = decl.lower() == "doctype html"

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            assert a["id"] not in self.ids, f"duplicate id {a['id']}"
            self.ids[a["id"]] = tag
        if tag == "table":
            self._table = self.tables.setdefault(a.get("id", "?"), [])
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "figure":
            self._figure = a.get("id")
        elif tag == "img":
            prefix = "data:image/png;base64,"
            assert a["src"].startswith(prefix) and a.get("alt")
            self.images[self._figure] = base64.b64decode(a["src"][len(prefix) :])
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, (tag, self.stack[-3:])
        self.stack.pop()
        if tag in ("td", "th"):
            self._table[-1].append("".join(self._cell))
            self._cell = None
        elif tag == "table":
            self._table = None
        elif tag == "figure":
            self._figure = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def parse_page(path: str) -> PageParser:
    p = PageParser()
    with open(path, encoding="utf-8") as f:
        p.feed(f.read())
    p.close()
    assert p.doctype and not p.stack
    assert p.ids.get("losses-plot") == "figure"
    return p


def test_run_report(grid_run):
    workdir, run = grid_run
    # An evaluation of this run written by launch.evaluate to a sibling folder.
    row = {
        "workdir": workdir,
        "run": "agan",
        "method": "AGAN(3)",
        "schedule": "circ",
        "stages": 2,
        "train_seconds": 12.0,
        "swd": 0.1234,
        "diversity": 0.5,
        "ssim": 0.25,
        "rmse": 0.4,
        "sifid": None,
        "num_samples": 2,
    }
    eval_dir = os.path.join(os.path.dirname(workdir), "eval")
    evaluation.write_json(os.path.join(eval_dir, "evaluation.json"), [row], {})
    path = report.write_run_report(workdir)
    assert path == os.path.join(workdir, "report.html")
    p = parse_page(path)
    assert [i for i in p.ids if p.ids[i] == "section"] == list(report.SECTION_IDS)
    summary = dict((r[0], r[1]) for r in p.tables["summary-table"][1:])
    assert summary["method"] == "AGAN(3)" and summary["stages trained"] == "2 of 2"
    stages = p.tables["stages-table"]
    assert [r[1] for r in stages[1:]] == [f"{h}x{w}" for h, w in run.sizes]
    assert p.tables["evaluation-table"][1][:2] == ["agan", "AGAN(3)"]
    config = dict((r[0], r[1]) for r in p.tables["config-table"][1:])
    assert config["train.iters_per_stage"] == str(ITERS)
    # 16 samples in a 4x4 grid, cells >= MIN_CELL px high
    h = run.sizes[-1][0]
    f = math.ceil(MIN_CELL / h)
    assert png_size(p.images["samples-grid"])[1] == f * (4 * (h + 2) + 2)
    cells = {"samples": GRID + 1, "attention": GRID, "reconstruction": 2}
    for s in range(run.num_stages):
        kinds = ["samples", "reconstruction"] + (["attention"] if s else [])
        for kind in kinds:
            _, h_px = png_size(p.images[f"stage-{s:02d}-{kind}"])
            n = cells[kind]
            rows = 1 if kind == "reconstruction" else math.ceil(n / math.ceil(n**0.5))
            assert h_px >= rows * MIN_CELL, (s, kind)
    assert png_size(p.images["losses-plot"])[0] >= 1000
    assert png_size(p.images["training-image"])[1] >= MIN_CELL


def test_comparison_report(grid_run, tiny_agan_run, tmp_path):
    """Two methods: the metric table, a row of samples each, losses overlaid."""
    runs = [grid_run, tiny_agan_run]
    rows, samples = [], []
    methods = ("AGAN(3)", "SinGAN")
    for i, ((w, run), method) in enumerate(zip(runs, methods, strict=True)):
        rows.append(
            {
                "workdir": w,
                "run": os.path.basename(w),
                "method": method,
                "schedule": "-",
                "stages": run.num_stages,
                "train_seconds": 10.0 + i,
                "swd": 0.1,
                "diversity": 0.2,
                "ssim": 0.3,
                "rmse": 0.4,
                "sifid": {"mean": 1.0, "std": 0.5},
            }
        )
        samples.append(np.full((5, *run.sizes[-1], 3), 0.1 * i, np.float32))
    out = str(tmp_path / "cmp")
    reals = [r.real for _, r in runs]
    path = report.write_comparison_report(out, rows, reals, samples, k=4)
    p = parse_page(path)
    table = p.tables["metrics-table"]
    assert [r[1] for r in table[1:]] == ["AGAN(3)", "SinGAN"]
    assert table[2][-1] == "1.0000 ± 0.5000"
    for r, (_, run) in zip(rows, runs, strict=True):  # training image, 4 samples
        h, w = run.sizes[-1]
        f = math.ceil(MIN_CELL / h)
        assert png_size(p.images[f"samples-{r['run']}"]) == (
            f * (5 * (w + 2) + 2),
            f * (h + 4),
        )
    assert os.path.isfile(os.path.join(out, plots.LOSSES_PNG))


def test_compare_launcher_writes_reports(tiny_agan_run, tmp_path):
    """launch.compare on a finished run: OUT/report.html, OUT/plots/losses.png and
    the run's report.html (nothing retrained)."""
    workdir, _ = tiny_agan_run
    out = tmp_path / "cmp"
    shutil.copytree(workdir, out / "agan3")
    for name in ("report.html", "plots"):
        shutil.rmtree(out / "agan3" / name, ignore_errors=True)
    cmd = [sys.executable, "-m", "launch.compare", f"--image={BUNDLED_IMAGE}"]
    cmd += ["--size=tiny", "--methods=agan3", "--num_samples=2", f"--out={out}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "already trained (3 stages)" in proc.stdout
    p = parse_page(str(out / "report.html"))
    assert [r[1] for r in p.tables["metrics-table"][1:]] == ["AGAN(3)"]
    assert "samples-agan3" in p.images
    assert (out / "plots" / "losses.png").is_file()
    run_page = parse_page(str(out / "agan3" / "report.html"))
    assert run_page.tables["evaluation-table"][1][1] == "AGAN(3)"
    assert png_size(run_page.images["samples-grid"])[1] >= MIN_CELL  # 2 samples


def test_report_launcher_refuses_a_folder_without_run(tmp_path):
    cmd = [sys.executable, "-m", "launch.report", f"--workdir={tmp_path}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and str(tmp_path) in proc.stderr
