"""launch.train_many and agan_jax.train.many: a folder of images trained as groups.

A 'shared' group (the CPU default) must give every image bit for bit the run
that `agan_jax.train.train` gives it alone; a 'vmap' group (one program over a
model axis, sharded over the devices) agrees on the first iteration's losses
only (agan_jax/train/group.py). Every group and single run compared here
compiles under the same flags (`quick_compiles`, launcher children included);
all use one small setting (`BASE`), so the runs of one family share compiled
programs through the persistent cache.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from agan_jax import checkpoint, pyramid, sampling, train
from agan_jax.errors import UserError
from agan_jax.models import families
from agan_jax.train import many
from agan_jax.train.group import Models, model_mesh
from agan_jax.train.loop import fit_image, prepare_image, stage_key
from agan_jax.train.programs import Stages
from tests.conftest import (
    BUNDLED_IMAGE,
    ROOT,
    quick_compiles,
    run_launcher,
    tiny_config,
)

FIT = (16, 24)
# Small runs: 3 convolutions per stage, 4 iterations, no stage grids, one update
# per compiled call (the quickest compiles), one metrics record per iteration.
BASE = {
    "data.fit": f"{FIT[0]}x{FIT[1]}",
    "data.max_size": 32,
    "model.num_layers": 3,
    "train.iters_per_stage": 4,
    "train.stage_samples": 0,
    "train.compile_unit": "update",
    "train.log_every": 1,
    "log.tensorboard": False,
}


def many_config(name: str = "singan", **overrides):
    """configs/<name>.py:tiny with BASE and `overrides` ("section__field": value)."""
    config = tiny_config(name)
    items = {**BASE, **{k.replace("__", "."): v for k, v in overrides.items()}}
    for key, value in items.items():
        section, field = key.split(".")
        setattr(getattr(config, section), field, value)
    return config


def config_flags(name: str = "singan", **overrides) -> list[str]:
    """The launcher flags of `many_config(name, **overrides)`."""
    items = {**BASE, **{k.replace("__", "."): v for k, v in overrides.items()}}
    return [f"--config=configs/{name}.py:tiny", "--quiet"] + [
        f"--config.{k}={v}" for k, v in items.items()
    ]


launch = run_launcher


def write_images(folder, names=("a", "b", "c")) -> list[str]:
    """Distinct images made from the bundled one: a (as is), b (mirrored, cropped
    at the top), c (channels reversed, darker)."""
    os.makedirs(folder, exist_ok=True)
    img = np.asarray(Image.open(BUNDLED_IMAGE).convert("RGB"))
    variants = {
        "a": img,
        "b": np.ascontiguousarray(img[20:, ::-1]),
        "c": (img[:, :, ::-1] * 0.8).astype(np.uint8),
    }
    paths = []
    for n in names:
        path = os.path.join(folder, f"{n}.png")
        Image.fromarray(variants[n]).save(path)
        paths.append(path)
    return paths


def metrics(workdir: str) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def first_iteration(workdir: str) -> dict:
    """The stage-0 record of iteration 1 in metrics.jsonl."""
    (record,) = [
        r for r in metrics(workdir) if r.get("stage") == 0 and r.get("iter") == 1
    ]
    return record


def summary(workdir: str) -> dict:
    with open(os.path.join(workdir, many.SUMMARY)) as f:
        return json.load(f)


def assert_trees_equal(got, want, what: str) -> None:
    assert jax.tree.structure(got) == jax.tree.structure(want), what
    leaves = jax.tree_util.tree_leaves_with_path(got)
    assert leaves, what
    for (path, x), y in zip(leaves, jax.tree.leaves(want), strict=True):
        np.testing.assert_array_equal(
            np.asarray(x), np.asarray(y), err_msg=f"{what}{jax.tree_util.keystr(path)}"
        )


def assert_same_run(got_dir: str, want_dir: str) -> None:
    """Every generator leaf of every stage, the noise amplitudes, z_rec and the
    last stage's critic of two runs are equal, bit for bit."""
    got, want = checkpoint.load_run(got_dir), checkpoint.load_run(want_dir)
    assert got.sizes == want.sizes
    assert len(got.g_vars) == len(want.g_vars) == len(want.sizes)
    for s, (g, w) in enumerate(zip(got.g_vars, want.g_vars, strict=True)):
        assert_trees_equal(g, w, f"{got_dir} stage {s} generator")
    np.testing.assert_array_equal(got.noise_amps, want.noise_amps)
    assert_trees_equal(got.z_rec, want.z_rec, f"{got_dir} z_rec")
    last = len(want.sizes) - 1
    stores = [checkpoint.RunStore(d) for d in (got_dir, want_dir)]
    try:
        d_got, d_want = (st.load_d_vars(last) for st in stores)
    finally:
        for st in stores:
            st.close()
    assert_trees_equal(d_got, d_want, f"{got_dir} stage {last} critic")


def runs_differ(dir_a: str, dir_b: str) -> bool:
    """Whether the last generators of two runs differ (different images)."""
    a, b = checkpoint.load_run(dir_a), checkpoint.load_run(dir_b)
    return any(
        not np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(
            jax.tree.leaves(a.g_vars[-1]), jax.tree.leaves(b.g_vars[-1]), strict=True
        )
    )


# -- helpers: find_images, run_names, chunks -----------------------------------


def test_find_images_folder_glob_and_list(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    for f in ("b.png", "a.JPG", "c.webp"):
        (d / f).write_bytes(b"x")
    (d / "notes.txt").write_text("not an image")
    (d / "sub.png").mkdir()  # a folder with an image suffix
    (d / "sub.png" / "inner.png").write_bytes(b"x")
    assert many.find_images(str(d)) == [
        str(d / f) for f in ("a.JPG", "b.png", "c.webp")
    ]
    assert many.find_images(str(d / "*.png")) == [str(d / "b.png")]
    listed = f"{d / 'c.webp'}, {d / 'b.png'},"
    assert many.find_images(listed) == [str(d / "b.png"), str(d / "c.webp")]
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    for images in (str(empty), str(empty / "*.png")):
        with pytest.raises(UserError, match="--images=") as e:
            many.find_images(images)
        assert images in str(e.value)


def test_run_names_are_stems_and_distinct():
    assert many.run_names(["/x/b.png", "/x/a.jpg"]) == ["b", "a"]
    names = many.run_names(["/x/a.png", "/x/a.jpg", "/x/b.png"])
    assert names == ["a_png", "a_jpg", "b"]
    twice = many.run_names(["/x/a.png", "/y/a.png", "/z/a.jpg"])
    assert len(set(twice)) == 3 and twice[2] == "a_jpg"
    assert all(n.startswith("a_png") for n in twice[:2])


def test_chunks_cover_in_order_at_most_n_as_even_as_possible():
    assert many.chunks([], 4) == []
    assert many.chunks(list(range(4)), 4) == [[0, 1, 2, 3]]
    assert many.chunks(list(range(5)), 4) == [[0, 1, 2], [3, 4]]
    for total in range(1, 13):
        for n in range(1, 6):
            parts = many.chunks(list(range(total)), n)
            assert [x for p in parts for x in p] == list(range(total))
            assert len(parts) == -(-total // n)  # as few calls as possible
            assert max(map(len, parts)) <= n
            sizes = [len(p) for p in parts]
            # The docstring's "as even as possible": sizes differ by at most 1.
            assert max(sizes) - min(sizes) <= 1, (
                f"chunks({total} items, {n}) gave sizes {sizes}; "
                "'as even as possible' allows a difference of at most 1"
            )


# -- data.fit -------------------------------------------------------------------


def test_fit_image_shape_identity_and_centred_crop():
    rng = np.random.default_rng(0)
    same = rng.uniform(-1, 1, (16, 24, 3)).astype(np.float32)
    out = fit_image(same, (16, 24))
    assert out.shape == (16, 24, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, same, atol=1e-6)
    # Wide (20x60 to 2:3): the centre 20x30 crop, columns 15..44, resized.
    wide = rng.uniform(-1, 1, (20, 60, 3)).astype(np.float32)
    want = np.clip(np.asarray(pyramid.resize(jnp.asarray(wide[:, 15:45]), FIT)), -1, 1)
    out = fit_image(wide, FIT)
    assert out.shape == (*FIT, 3)
    np.testing.assert_allclose(out, want, atol=1e-6)
    # Another crop (the left one) gives another image: the test sees the offset.
    left = np.asarray(pyramid.resize(jnp.asarray(wide[:, :30]), FIT))
    assert np.abs(out - left).max() > 0.1
    # Tall (90x30 to 2:3): the centre 20x30 rows 35..54.
    tall = rng.uniform(-1, 1, (90, 30, 3)).astype(np.float32)
    want = np.clip(np.asarray(pyramid.resize(jnp.asarray(tall[35:55]), FIT)), -1, 1)
    np.testing.assert_allclose(fit_image(tall, FIT), want, atol=1e-6)
    # An upscale (8x12 to 16x24) keeps the values in [-1, 1].
    up = fit_image(np.sign(rng.uniform(-1, 1, (8, 12, 3))).astype(np.float32), FIT)
    assert up.shape == (*FIT, 3) and up.min() >= -1 and up.max() <= 1


def test_prepare_image_with_fit_gives_the_fit_size(tmp_path):
    (path,) = write_images(tmp_path, ("b",))
    config = many_config()
    config.data.image = path
    image, hw, _ = prepare_image(families.settings_from_config(config).data)
    assert image.shape == (*FIT, 3) and hw == FIT


def test_fit_refuses_an_image_below_min_size(tmp_path):
    """An image whose shorter side is below data.min_size is refused with
    data.fit as without it (not silently upscaled to the fit size)."""
    path = str(tmp_path / "small.png")
    Image.fromarray(np.full((10, 12, 3), 128, np.uint8)).save(path)
    config = many_config()
    config.data.image = path
    data = families.settings_from_config(config).data
    assert data.min_size == 16
    try:
        image, _, _ = prepare_image(data)
        refused = ""
    except UserError as e:
        image, refused = None, str(e)
    assert refused, (
        f"prepare_image with data.fit={data.fit} accepted a 10x12 image below "
        f"min_size={data.min_size} (upscaled to {image.shape[:2]})"
    )
    assert "min_size" in refused, refused


@pytest.mark.parametrize(
    "fit,message",
    [
        ("abc", "config.data.fit = 'abc': must be '' (off) or HxW"),
        ("0x24", "config.data.fit = '0x24': must be '' (off) or HxW"),
        ("48x64", "config.data.fit = '48x64': must be HxW with both sides <= "),
        ("16x33", "data.max_size (32)"),
    ],
)
def test_bad_fit_is_refused_naming_data_fit(fit, message):
    config = many_config(data__fit=fit)
    with pytest.raises(UserError) as e:
        families.settings_from_config(config)
    assert message in str(e.value), str(e.value)
    assert "config.data.fit" in str(e.value)


def test_fit_at_max_size_is_accepted():
    settings = families.settings_from_config(many_config(data__fit="32x32"))
    assert settings.data.fit_hw == (32, 32)


# -- shared groups equal single runs ---------------------------------------------


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> str:
    folder = str(tmp_path_factory.mktemp("many_images"))
    write_images(folder)
    return folder


def train_group_and_alone(tmp_path_factory, name, images, alone, config):
    """(group workdir, entries, alone workdir): `images` trained by train_many,
    and image `alone` of them by train.train, under the same compile flags."""
    group_dir = str(tmp_path_factory.mktemp(f"{name}_group"))
    alone_dir = str(tmp_path_factory.mktemp(f"{name}_alone"))
    with quick_compiles():
        entries = many.train_many(config, images, group_dir, progress=False)
        single = config.copy_and_resolve_references()
        single.data.image = alone
        train.train(single, alone_dir, progress=False)
    return group_dir, entries, alone_dir


@pytest.fixture(scope="module")
def singan_group(tmp_path_factory, images):
    """SinGAN (2 stages of 16x24), a group of 3 images; c alone."""
    return train_group_and_alone(
        tmp_path_factory, "singan", images, os.path.join(images, "c.png"), many_config()
    )


@pytest.fixture(scope="module")
def agan_group(tmp_path_factory, images):
    """AGAN (2 stages), a group of 3 images; b alone."""
    return train_group_and_alone(
        tmp_path_factory,
        "agan",
        images,
        os.path.join(images, "b.png"),
        many_config("agan", pyramid__num_stages=2),
    )


@pytest.fixture(scope="module")
def consingan_images(images) -> str:
    return ",".join(os.path.join(images, f) for f in ("b.png", "a.png"))


@pytest.fixture(scope="module")
def consingan_group(tmp_path_factory, images, consingan_images):
    """ConSinGAN (3 stages, train_depth 2: stage 2 freezes a block), a group of 2
    images given as a comma-separated list (`consingan_images`); b alone."""
    return train_group_and_alone(
        tmp_path_factory,
        "consingan",
        consingan_images,
        os.path.join(images, "b.png"),
        many_config("consingan"),
    )


@pytest.mark.parametrize(
    "family,count,alone,stages",
    [("singan", 3, "c", 2), ("agan", 3, "b", 2), ("consingan", 2, "b", 3)],
)
def test_shared_group_equals_single_run_bit_for_bit(
    request, family, count, alone, stages
):
    group_dir, entries, alone_dir = request.getfixturevalue(f"{family}_group")
    assert [(e.status, e.stages) for e in entries] == [("trained", stages)] * count
    assert summary(group_dir)["counts"] == {"trained": count}
    names = sorted(e.name for e in entries)
    # Every image's run trained in the group (a stage_done record per stage,
    # 'models' = the group's size) and differs from the others'.
    for n in names:
        done = [r for r in metrics(os.path.join(group_dir, n)) if "models" in r]
        assert [r["stage"] for r in done] == list(range(stages))
        assert all(r["models"] == count for r in done)
    others = [n for n in names if n != alone]
    assert runs_differ(
        os.path.join(group_dir, alone), os.path.join(group_dir, others[0])
    )
    run = checkpoint.load_run(os.path.join(group_dir, alone))
    assert run.sizes[-1] == FIT and len(run.sizes) == stages
    assert_same_run(os.path.join(group_dir, alone), alone_dir)
    # The logged losses too.
    strip = ("s_per_iter",)
    got = [
        {k: v for k, v in r.items() if k not in strip}
        for r in metrics(os.path.join(group_dir, alone))
        if "iter" in r
    ]
    want = [{k: v for k, v in r.items() if k not in strip} for r in metrics(alone_dir)]
    want = [r for r in want if "iter" in r]
    assert len(got) == stages * 4 and got == want


# -- vmap groups ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def singan_vmap(tmp_path_factory, images):
    """SinGAN, images c and a as one vmap'd group (train.group_mode='vmap')."""
    workdir = str(tmp_path_factory.mktemp("singan_vmap"))
    listed = ",".join(os.path.join(images, f) for f in ("c.png", "a.png"))
    with quick_compiles():
        entries = many.train_many(
            many_config(train__group_mode="vmap"), listed, workdir, progress=False
        )
    return workdir, entries


LOSSES = ("d_loss", "gp", "rec")


def first_losses_off(pairs: dict[str, tuple[str, str]]) -> dict[str, dict]:
    """{name: {loss: relative error}} of every stage-0 iteration-1 loss of run
    got_dir against want_dir (pairs: {name: (got_dir, want_dir)}) beyond rtol
    1e-4; empty when all agree."""
    off = {}
    for name, (got_dir, want_dir) in pairs.items():
        got, want = first_iteration(got_dir), first_iteration(want_dir)
        errors = {k: abs(got[k] - want[k]) / abs(want[k]) for k in LOSSES}
        if any(not e <= 1e-4 for e in errors.values()):
            off[name] = {k: float(f"{e:.3g}") for k, e in errors.items()}
    return off


@pytest.mark.parametrize("family", ["singan", "agan", "consingan"])
def test_vmap_init_gives_every_model_the_single_run_init(family):
    """A vmap'd group's stage init (train.group_mode='vmap', Models.each as the
    stage loop calls it) gives model i the initial weights that the unbatched
    init gives its run alone (the same key): the init draws from an 'rbg' key
    (agan_jax/models/family.py rbg_key), whose bits differ under vmap for every
    row but the first, so it must not be vmap'd."""
    settings = families.settings_from_config(many_config(family))
    stages = Stages(families.of(settings.model), settings, [FIT, FIT])
    fns = stages.fns(0)
    key = stage_key(settings.seed, 0)
    models = Models.group(2, "vmap", model_mesh())
    with quick_compiles():
        one = jax.jit(fns.init_state)(key)
        init = jax.jit(models.fns(fns).init_state)
        both = models.each(init, models.repeat(key), None, None)
    for i in range(models.count):
        got = models.take(both, i)
        for part in ("g_vars", "d_vars"):
            a, b = getattr(got, part), getattr(one, part)
            same = all(
                np.array_equal(np.asarray(x), np.asarray(y))
                for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
            )
            assert same, (
                f"model {i} of a vmap'd group starts from other {part} than its "
                "run alone (same key)"
            )


def test_vmap_group_first_losses_match_single_runs_and_sample(
    singan_vmap, singan_group
):
    workdir, entries = singan_vmap
    group_dir, _, alone_dir = singan_group
    assert [(e.name, e.status, e.stages) for e in entries] == [
        ("a", "trained", 2),
        ("c", "trained", 2),
    ]
    # The two images' losses differ by far more than the tolerance: a swap shows.
    ref_a, ref_c = (first_iteration(os.path.join(group_dir, n)) for n in "ac")
    assert abs(ref_a["rec"] - ref_c["rec"]) > 1e-2 * abs(ref_c["rec"])
    # c against its single run; a against its shared-group run (bit-identical to
    # a single run: test_shared_group_equals_single_run_bit_for_bit).
    off = first_losses_off(
        {
            "a (model 0)": (os.path.join(workdir, "a"), os.path.join(group_dir, "a")),
            "c (model 1)": (os.path.join(workdir, "c"), alone_dir),
        }
    )
    assert not off, (
        "vmap'd models' first-iteration losses differ from their single runs' "
        f"(relative errors): {off}"
    )
    for name in "ac":
        run_dir = os.path.join(workdir, name)
        done = [r for r in metrics(run_dir) if r.get("event") == "stage_done"]
        assert [(r["stage"], r["models"]) for r in done] == [(0, 2), (1, 2)]
        # Resident memory per stage (Linux): current <= peak, peak never falls.
        assert all(0 < r["rss_mib"] <= r["peak_rss_mib"] for r in done)
        assert done[0]["peak_rss_mib"] <= done[1]["peak_rss_mib"]
        run = checkpoint.load_run(run_dir)
        assert run.sizes == checkpoint.load_run(os.path.join(group_dir, name)).sizes
        assert run.noise_amps[0] == 1.0 and np.isfinite(run.noise_amps).all()
        with quick_compiles():
            images = np.asarray(sampling.Sampler(run).sample(jax.random.key(1), 3))
        assert images.shape == (3, *FIT, 3)
        assert np.isfinite(images).all()
        assert images.min() >= -1 and images.max() <= 1
        assert images.std() > 0


def test_vmap_group_over_two_devices(tmp_path, images, singan_group):
    """3 models over 2 (virtual) devices: padded to 4, sharded, 1 stage."""
    group_dir = singan_group[0]
    workdir = tmp_path / "w"
    flags = os.environ.get("XLA_FLAGS", "")
    with quick_compiles(children=True):
        p = launch(
            "launch.train_many",
            f"--images={images}",
            f"--workdir={workdir}",
            "--stop_after_stage=0",
            *config_flags(train__group_mode="vmap"),
            env={"XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count=2"},
        )
    assert p.returncode == 0, p.stderr
    s = summary(workdir)
    assert s["counts"] == {"trained": 3}, s
    assert sorted(s["runs"]) == ["a", "b", "c"]
    for name in "abc":
        run = checkpoint.load_run(str(workdir / name))  # in this 1-device process
        assert len(run.g_vars) == 1 and run.sizes[-1] == FIT
        assert np.isfinite(run.noise_amps).all()
        done = [
            r for r in metrics(str(workdir / name)) if r.get("event") == "stage_done"
        ]
        assert [(r["stage"], r["models"]) for r in done] == [(0, 3)]
    # Models 0, 1 (a, b) on device 0; model 2 (c) and its padding copy on device 1.
    where = {
        "a": "model 0, device 0",
        "b": "model 1, device 0",
        "c": "model 2, device 1",
    }
    off = first_losses_off(
        {
            f"{n} ({where[n]})": (str(workdir / n), os.path.join(group_dir, n))
            for n in "abc"
        }
    )
    assert not off, (
        "vmap'd models sharded over 2 devices: first-iteration losses differ from "
        f"their single runs' (relative errors): {off}"
    )


# -- launcher: resume after kill -9, re-run, faults ---------------------------------


def test_resume_after_kill_equals_uninterrupted_run(
    tmp_path, consingan_images, consingan_group
):
    """ConSinGAN (3 stages) killed (SIGKILL) after its first checkpoint, then
    resumed by the same command: the runs of an uninterrupted group."""
    reference = consingan_group[0]
    workdir = tmp_path / "w"
    cmd = [
        sys.executable,
        "-m",
        "launch.train_many",
        f"--images={consingan_images}",
        f"--workdir={workdir}",
        *config_flags("consingan"),
    ]
    log = open(tmp_path / "killed.log", "w")
    with quick_compiles(children=True):
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.time() + 240
            while not glob.glob(str(workdir / "*" / "checkpoints" / "0")):
                assert proc.poll() is None, (tmp_path / "killed.log").read_text()
                assert time.time() < deadline, "no checkpoint within 240 s"
                time.sleep(0.02)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
            log.close()
        assert proc.returncode == -signal.SIGKILL
        saved = {
            n: len(glob.glob(str(workdir / n / "checkpoints" / "[0-9]"))) for n in "ab"
        }
        assert min(saved.values()) < 3, f"the kill came after training: {saved}"
        p = launch("launch.train_many", *cmd[3:])
        assert p.returncode == 0, p.stderr
        assert summary(workdir)["counts"] == {"trained": 2}
        for name in "ab":
            assert_same_run(str(workdir / name), os.path.join(reference, name))
            # A stage trained again does not log twice.
            logged = [
                (r["stage"], r["iter"]) for r in metrics(workdir / name) if "iter" in r
            ]
            assert logged == [(s, i) for s in range(3) for i in range(1, 5)]
        # Re-running a finished folder trains nothing.
        mtimes = {n: os.path.getmtime(workdir / n / "metrics.jsonl") for n in "ab"}
        t0 = time.time()
        p = launch("launch.train_many", *cmd[3:])
        took = time.time() - t0
    assert p.returncode == 0, p.stderr
    s = summary(workdir)
    assert s["counts"] == {"done": 2}, s
    assert all(r["status"] == "done" and r["stages"] == 3 for r in s["runs"].values())
    assert {n: os.path.getmtime(workdir / n / "metrics.jsonl") for n in "ab"} == mtimes
    assert "2 done" in p.stdout, p.stdout
    assert took < 60, f"re-running a finished folder took {took:.1f} s"


def test_faulty_images_are_skipped_and_the_rest_train(tmp_path, images, singan_group):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for n in "ac":
        (folder / f"{n}.png").write_bytes(
            open(os.path.join(images, f"{n}.png"), "rb").read()
        )
    (folder / "bad.png").write_text("this is text, not a PNG")
    Image.fromarray(np.full((10, 12, 3), 90, np.uint8)).save(folder / "small.png")
    workdir = tmp_path / "w"
    with quick_compiles(children=True):
        p = launch(
            "launch.train_many",
            f"--images={folder}",
            f"--workdir={workdir}",
            *config_flags(),
        )
    assert p.returncode == 1, p.stderr
    runs = summary(workdir)["runs"]
    assert sorted(runs) == ["a", "bad", "c", "small"]
    for n in "ac":
        assert runs[n]["status"] == "trained" and runs[n]["stages"] == 2, runs[n]
        run = checkpoint.load_run(str(workdir / n))
        assert len(run.g_vars) == 2 and run.sizes[-1] == FIT
        # The same group programs as the fixture's (same images and settings).
        assert_same_run(str(workdir / n), os.path.join(singan_group[0], n))
    assert runs["bad"]["status"] == "skipped", runs["bad"]
    assert "not an image" in runs["bad"]["reason"], runs["bad"]
    assert "bad.png" in p.stdout + p.stderr
    assert runs["small"]["status"] == "skipped", (
        "a 10x12 image below min_size=16 was not skipped with data.fit "
        f"(upscaled and trained instead): {runs['small']}"
    )
    assert "min_size" in runs["small"]["reason"], runs["small"]


def test_folder_without_usable_image_exits_2(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "bad.png").write_text("this is text, not a PNG")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    workdir = tmp_path / "w"
    p = launch(
        "launch.train_many",
        f"--images={folder}",
        f"--workdir={workdir}",
        *config_flags(),
    )
    assert p.returncode == 2, p.stderr
    assert p.stderr.startswith("error:") or "\nerror:" in p.stderr, p.stderr
    assert "no usable image" in p.stderr and "Traceback" not in p.stderr, p.stderr
    runs = summary(workdir)["runs"]
    assert {n: r["status"] for n, r in runs.items()} == {
        "bad": "skipped",
        "broken": "skipped",
    }
    assert not glob.glob(str(workdir / "*" / "checkpoints"))


def test_two_processes_split_the_folder(tmp_path, images, singan_group):
    """2 local CPU processes at once (process 0 from flags, process 1 from srun's
    environment): process 0 trains a and c (every 2nd image by name), process 1
    trains b; each run equals the shared group's run of its image bit for bit
    and loads, and summary.json holds every image."""
    workdir = tmp_path / "w"
    how = {
        0: (["--num_processes=2", "--process_id=0"], {}),
        1: (["--distributed"], {"SLURM_PROCID": "1", "SLURM_NTASKS": "2"}),
    }
    with quick_compiles(children=True):
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "launch.train_many",
                    f"--images={images}",
                    f"--workdir={workdir}",
                    *how[rank][0],
                    *config_flags(),
                ],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env={**os.environ, "PYTHONWARNINGS": "ignore", **how[rank][1]},
            )
            for rank in (0, 1)
        ]
        outs = [p.communicate(timeout=400) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    assert "2 trained" in outs[0][0] and "1 trained" in outs[1][0], outs
    runs = summary(workdir)["runs"]
    assert {n: r["status"] for n, r in runs.items()} == dict.fromkeys("abc", "trained")
    for n in "abc":
        assert_same_run(str(workdir / n), os.path.join(singan_group[0], n))


def test_process_split_and_cluster_environment():
    """Rank and count from srun / mpirun variables; bad values name the fix."""
    env = many.process_from_environment
    assert env({"SLURM_PROCID": "3", "SLURM_NTASKS": "4"}) == many.Process(3, 4)
    assert env({"OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "2"}) == (
        many.Process(0, 2)
    )
    assert env({"PMI_RANK": "1", "PMI_SIZE": "2"}) == many.Process(1, 2)
    with pytest.raises(UserError, match="--num_processes=N --process_id=I"):
        env({})
    with pytest.raises(UserError, match="not integers"):
        env({"SLURM_PROCID": "x", "SLURM_NTASKS": "2"})
    with pytest.raises(UserError, match="0..1"):
        many.Process(2, 2)
    with pytest.raises(UserError, match="at least 1"):
        many.Process(0, 0)


def test_bench_many_table_from_measured_children(monkeypatch, tmp_path):
    """launch.bench --suite=many's arithmetic: sequential time is the sum of the
    lone runs (K x their mean beyond them, marked), images per hour and the ratio
    follow from the whole-process walls; the launchers get the K images."""
    from benchmarks import common as bench_common
    from benchmarks import many as bench_many

    calls = []

    def fake(args, env=None, cwd=None, timeout=0):
        calls.append(list(args))
        if "launch.train" in args:
            wall = 100.0 + 20.0 * sum("launch.train" in c for c in calls[:-1])
        else:
            folder = next(a for a in args if a.startswith("--images="))[9:]
            wall = 50.0 + 40.0 * len(os.listdir(folder))
        return bench_common.Measured(wall, wall, 500.0, 0, "")

    monkeypatch.setattr(bench_common, "run_measured", fake)
    text, raw = bench_many.suite(
        "configs/singan.py:tiny", [1, 2, 4], "16x24", 3, None, lambda m: None, (), 2
    )
    assert sum("launch.train" in c for c in calls) == 2  # two lone runs: 100, 120 s
    runs = raw["runs"]
    assert runs[1]["sequential_s"] == 100.0 and runs[1]["grouped_s"] == 100.0
    assert runs[2]["sequential_s"] == 220.0 and runs[2]["sequential_measured"]
    assert runs[2]["grouped_s"] == 130.0
    assert runs[4]["sequential_s"] == 440.0 and not runs[4]["sequential_measured"]
    assert runs[4]["grouped_s"] == 210.0
    assert "| 4 | 440 (K x mean) |" in text and "2.1x" in text
    group4 = next(c for c in calls if "--config.train.models_per_call=4" in c)
    assert "--config.data.fit=16x24" in group4
    assert "--config.train.iters_per_stage=3" in group4
