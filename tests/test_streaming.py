"""Streamed sampling: batches before the end, keys by index, whole files, resume,
manifests, unfinished runs, and the benchmark suite at tiny N."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from agan_jax import image_io, sampling, streaming
from agan_jax.errors import UserError
from tests.conftest import ROOT
from tests.test_launch import launch

KEY_SEED = 5


def files_of(folder) -> dict[str, bytes]:
    """Every file of a folder, name -> bytes."""
    out = {}
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), "rb") as f:
            out[name] = f.read()
    return out


def sample_files(folder) -> list[str]:
    return sorted(f for f in os.listdir(folder) if f.startswith("sample_"))


@pytest.fixture(scope="module")
def sampler(tiny_agan_run):
    _, run = tiny_agan_run
    return sampling.Sampler(run)


def test_stream_hands_over_batches_before_the_end(sampler, tmp_path):
    key = jax.random.key(KEY_SEED)
    # An endless index stream: the first batches come without the end.
    first = list(
        itertools.islice(sampler.stream(key, itertools.count(), batch_size=3), 2)
    )
    assert [b.indices.tolist() for b in first] == [[0, 1, 2], [3, 4, 5]]
    assert first[0].images.shape == (3, *sampler.run.sizes[-1], 3)
    assert first[0].attentions is None
    # write_samples: each batch is on disk when it is handed over, later ones not.
    seen = []

    def on_batch(b):
        names = os.listdir(tmp_path / "out")
        seen.append((b.indices.tolist(), sample_files(tmp_path / "out"), names))

    out = str(tmp_path / "out")
    r = streaming.write_samples(
        sampler, KEY_SEED, 10, out, batch_size=4, progress=False, on_batch=on_batch
    )
    assert [s[0] for s in seen] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert seen[0][1] == [streaming.sample_name(i) for i in range(4)]
    assert seen[1][1] == [streaming.sample_name(i) for i in range(8)]
    # The manifest is there from the start; the grid comes after the last batch.
    assert all("manifest.json" in s[2] and "grid.png" not in s[2] for s in seen)
    assert "grid.png" in os.listdir(out)
    assert r.drawn == r.total == 10 and r.size == tuple(sampler.run.sizes[-1])
    assert sample_files(out) == [f"sample_{i:06d}.png" for i in range(10)]
    # Batches reach the disk while later ones are still to be drawn: count the
    # calls of the compiled batch function when the first batch is handed over.
    sampler.draw(jax.random.key(0), [0, 1])  # compiles the batch-2 function
    (name,) = [k for k in sampler.cache if k[0] == "draw" and k[1] == 2]
    compiled, calls, at_first = sampler.cache[name], [], []

    def counting(*args):
        calls.append(1)
        return compiled(*args)

    sampler.cache[name] = counting
    streaming.write_samples(
        sampler,
        KEY_SEED,
        40,
        str(tmp_path / "calls"),
        batch_size=2,
        progress=False,
        on_batch=lambda b: at_first.append(len(calls)) if not at_first else None,
    )
    sampler.cache[name] = compiled
    assert len(calls) == 20 and 1 <= at_first[0] < 20


def test_sample_i_is_its_key_alone_whatever_the_batch(sampler):
    run = sampler.run
    key = jax.random.key(KEY_SEED)
    by3 = np.concatenate(
        [b.images for b in sampler.stream(key, range(7), batch_size=3)]
    )
    by4 = np.concatenate(
        [b.images for b in sampler.stream(key, range(7), batch_size=4)]
    )
    resumed = np.concatenate(
        [b.images for b in sampler.stream(key, range(5, 7), batch_size=4)]
    )
    np.testing.assert_allclose(by3, by4, atol=1e-5)
    np.testing.assert_allclose(resumed, by4[5:], atol=1e-5)
    # Independent recomputation: make_sampler on the key fold_in(key, i) alone.
    f = jax.jit(sampling.make_sampler(run.spec, run.sizes, 0, run.num_stages))
    amps, base = jnp.asarray(run.noise_amps), jnp.zeros((1, 1, 3), jnp.float32)
    for i in (0, 4, 6):
        alone = f(jax.random.fold_in(key, i)[None], run.g_vars, amps, base)
        np.testing.assert_allclose(by3[i], np.asarray(alone)[0], atol=1e-5)
        np.testing.assert_allclose(
            by3[i], np.asarray(sampler.draw(key, [i]))[0], atol=1e-5
        )
    assert np.abs(by3[0] - by3[1]).mean() > 1e-3
    # 7 samples by 3: the last batch (one sample) is padded, not compiled anew.
    draws = [k for k in sampler.cache if k[0] == "draw" and k[1] == 3]
    assert len(draws) == 1


def test_resume_gives_the_files_of_an_uninterrupted_run(sampler, tmp_path):
    whole, cut = str(tmp_path / "whole"), str(tmp_path / "cut")
    kw = {"batch_size": 3, "progress": False, "attention": True}
    streaming.write_samples(sampler, KEY_SEED, 11, whole, **kw)

    class Stop(Exception):
        pass

    def stop_after_two(b):
        if b.indices[0] >= 3:
            raise Stop

    with pytest.raises(Stop):
        streaming.write_samples(
            sampler, KEY_SEED, 11, cut, on_batch=stop_after_two, **kw
        )
    # Only whole files, no grid yet, and fewer samples than asked.
    assert 0 < len(sample_files(cut)) < 11 and "grid.png" not in os.listdir(cut)
    r = streaming.write_samples(sampler, KEY_SEED, 11, cut, **kw)
    assert r.drawn == 11 - 6 and r.total == 11
    assert files_of(cut) == files_of(whole)
    # A deleted file in the middle is drawn again, to the same bytes.
    os.unlink(os.path.join(cut, streaming.sample_name(4)))
    r = streaming.write_samples(sampler, KEY_SEED, 11, cut, **kw)
    assert r.drawn == 1 and files_of(cut) == files_of(whole)
    # Another batch size continues the same stream (equal up to 8-bit rounding).
    os.unlink(os.path.join(cut, streaming.sample_name(10)))
    streaming.write_samples(sampler, KEY_SEED, 11, cut, batch_size=2, progress=False)
    a = streaming.first_samples(cut, "png", 11)
    b = streaming.first_samples(whole, "png", 11)
    assert np.abs(a - b).max() <= 1.0 / 127.5 + 1e-6


def test_npy_format_streams_and_resumes(sampler, tmp_path):
    png, npy, cut = (str(tmp_path / n) for n in ("png", "npy", "cut"))
    streaming.write_samples(sampler, KEY_SEED, 7, png, batch_size=2, progress=False)
    streaming.write_samples(
        sampler, KEY_SEED, 7, npy, batch_size=2, fmt="npy", progress=False
    )
    arr = np.load(os.path.join(npy, "samples.npy"))
    assert arr.dtype == np.uint8 and arr.shape == (7, *sampler.run.sizes[-1], 3)
    for i in range(7):
        with Image.open(os.path.join(png, streaming.sample_name(i))) as im:
            np.testing.assert_array_equal(np.asarray(im), arr[i])
    assert sorted(os.listdir(npy)) == ["grid.png", "manifest.json", "samples.npy"]

    class Stop(Exception):
        pass

    def stop(b):
        if b.indices[0] >= 2:
            raise Stop

    with pytest.raises(Stop):
        streaming.write_samples(
            sampler, KEY_SEED, 7, cut, batch_size=2, fmt="npy", progress=False,
            on_batch=stop,
        )  # fmt: skip
    # The unfinished array is not under the final name.
    assert not os.path.exists(os.path.join(cut, "samples.npy"))
    # Written every 2 s: here the manifest may say 0; resume redraws the rest.
    r = streaming.write_samples(
        sampler, KEY_SEED, 7, cut, batch_size=2, fmt="npy", progress=False
    )
    assert r.total == 7
    assert files_of(cut) == files_of(npy)
    # npy holds exactly N samples: another N is another request.
    with pytest.raises(UserError, match="num_samples 7 there, 8 now"):
        streaming.write_samples(sampler, KEY_SEED, 8, cut, fmt="npy", progress=False)


def test_attention_only_when_asked(tiny_agan_run, tmp_path):
    _, run = tiny_agan_run
    sampler = sampling.Sampler(run)
    out = str(tmp_path / "plain")
    streaming.write_samples(sampler, 0, 5, out, batch_size=2, progress=False)
    assert not [f for f in os.listdir(out) if f.startswith("attention")]
    # Nothing compiled returns attention maps (the last part of the cache key).
    assert sampler.cache and all(
        k[-1] is False for k in sampler.cache if k[0] == "draw"
    )
    out = str(tmp_path / "attn")
    streaming.write_samples(
        sampler, 0, 70, out, batch_size=8, attention=True, progress=False
    )
    names = sorted(f for f in os.listdir(out) if f.startswith("attention"))
    assert names == [f"attention_stage_{s:02d}.png" for s in range(1, run.num_stages)]
    assert any(k[-1] is True for k in sampler.cache if k[0] == "draw")
    # Grids hold the first 64 samples only (8 x 8 cells).
    h, w = run.sizes[-1]
    grid = image_io.make_grid(np.zeros((64, h, w, 3), np.float32))
    with Image.open(os.path.join(out, "grid.png")) as im:
        assert im.size == (grid.shape[1], grid.shape[0])
    with Image.open(os.path.join(out, names[-1])) as im:
        assert im.size == (grid.shape[1], grid.shape[0])


def test_another_request_into_the_same_out_is_refused(sampler, tmp_path):
    out = str(tmp_path / "s")
    streaming.write_samples(sampler, 1, 3, out, progress=False)
    before = files_of(out)
    manifest = json.loads(before["manifest.json"])
    assert manifest["seed"] == 1 and manifest["written"] == 3
    assert manifest["workdir"] == os.path.realpath(sampler.run.workdir)
    assert manifest["start_stage"] == 0 and manifest["scale"] == [1.0, 1.0]
    with pytest.raises(UserError, match=r"seed 1 there, 2 now.*--overwrite"):
        streaming.write_samples(sampler, 2, 3, out, progress=False)
    with pytest.raises(UserError, match=r"scale \[1.0, 1.0\] there"):
        streaming.write_samples(sampler, 1, 3, out, scale=(1.0, 1.5), progress=False)
    with pytest.raises(UserError, match="start_stage 0 there, 1 now"):
        streaming.write_samples(sampler, 1, 3, out, start_stage=1, progress=False)
    assert files_of(out) == before
    # The same request asking for more continues; --overwrite starts anew.
    assert streaming.write_samples(sampler, 1, 4, out, progress=False).drawn == 1
    other = str(tmp_path / "other")
    streaming.write_samples(sampler, 2, 4, other, progress=False)
    streaming.write_samples(sampler, 2, 4, out, overwrite=True, progress=False)
    assert files_of(out) == files_of(other)
    # Samples without a manifest (an older launch.sample) are refused too.
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "notes.txt").write_text("kept")
    image_io.save_image(legacy / "sample_0000.png", np.zeros((4, 4, 3)))
    with pytest.raises(UserError, match="no manifest.json"):
        streaming.write_samples(sampler, 1, 2, str(legacy), progress=False)
    streaming.write_samples(sampler, 1, 2, str(legacy), overwrite=True, progress=False)
    assert sorted(os.listdir(legacy)) == [
        "grid.png",
        "manifest.json",
        "notes.txt",
        "sample_000000.png",
        "sample_000001.png",
    ]


def test_kill_9_leaves_whole_files_and_a_rerun_completes(tiny_agan_run, tmp_path):
    workdir, run = tiny_agan_run
    out = tmp_path / "killed"
    n = 1000
    args = [
        sys.executable,
        "-m",
        "launch.sample",
        f"--workdir={workdir}",
        f"--num_samples={n}",
        "--batch_size=1",
        f"--out={out}",
        "--seed=3",
    ]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    log = open(tmp_path / "stderr.txt", "wb")  # noqa: SIM115
    p = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and p.poll() is None:
            if out.exists() and len(sample_files(out)) >= 10:
                break
            time.sleep(0.01)
        assert p.poll() is None, (tmp_path / "stderr.txt").read_text()[-2000:]
        p.send_signal(signal.SIGKILL)
        p.wait()
    finally:
        if p.poll() is None:
            p.kill()
        log.close()
    names = os.listdir(out)
    written = sample_files(out)
    assert 10 <= len(written) < n and "grid.png" not in names
    # Every PNG decodes whole; the rest is the manifest or hidden temporary files.
    for name in names:
        if name.endswith(".png"):
            with Image.open(out / name) as im:
                im.load()
                assert im.size == (run.sizes[-1][1], run.sizes[-1][0])
        else:
            assert name == "manifest.json" or name.startswith("."), name
    p2 = launch(*args[2:])
    assert p2.returncode == 0, p2.stderr
    assert f"wrote {n - len(written)} new samples" in p2.stdout
    assert not [f for f in os.listdir(out) if f.startswith(".")]
    whole = str(tmp_path / "whole")
    streaming.write_samples(
        sampling.Sampler(run), 3, n, whole, batch_size=1, progress=False
    )
    assert files_of(out) == files_of(whole)


def test_launcher_refuses_unfinished_runs_and_file_outs(tiny_agan_run, tmp_path):
    workdir, run = tiny_agan_run
    partial = tmp_path / "partial"
    shutil.copytree(workdir, partial)
    shutil.rmtree(partial / "checkpoints" / str(run.num_stages - 1))
    out = tmp_path / "out"
    p = launch("launch.sample", f"--workdir={partial}", f"--out={out}")
    assert p.returncode == 2, p.stderr
    assert f"has {run.num_stages - 1} of {run.num_stages} stages" in p.stderr
    assert "launch.train" in p.stderr and "--allow_partial" in p.stderr
    assert "Traceback" not in p.stderr and not out.exists()
    p = launch(
        "launch.sample",
        f"--workdir={partial}",
        f"--out={out}",
        "--num_samples=2",
        "--allow_partial",
    )
    assert p.returncode == 0, p.stderr
    with Image.open(out / streaming.sample_name(0)) as im:
        h, w = run.sizes[run.num_stages - 2]
        assert im.size == (w, h)
    # --out an existing file: refused before any work (the run is not even read).
    f = tmp_path / "a_file.png"
    f.write_bytes(b"x")
    p = launch("launch.sample", f"--workdir={tmp_path / 'nothing'}", f"--out={f}")
    assert p.returncode == 2 and f"--out={f} is an existing file" in p.stderr
    assert "Traceback" not in p.stderr and f.read_bytes() == b"x"
    # A manifest of another seed: exit 2 naming the fix.
    p = launch(
        "launch.sample",
        f"--workdir={partial}",
        f"--out={out}",
        "--num_samples=2",
        "--allow_partial",
        "--seed=9",
    )
    assert p.returncode == 2 and "seed 0 there, 9 now" in p.stderr, p.stderr
    assert "--overwrite" in p.stderr and "Traceback" not in p.stderr


def test_bench_suite_at_tiny_n(tiny_agan_run):
    from benchmarks import streaming as bench

    workdir, _ = tiny_agan_run
    text, result = bench.suite([16, 8], workdir, log=lambda _: None)
    rows = [r for r in result["results"]]
    assert [r["n"] for r in rows] == [8, 16]
    for r in rows:
        assert "error" not in r, r
        assert r["files"] == r["n"] + 2  # samples, grid, manifest
        assert r["rss_mib"] > 50 and r["sampling_s"] > 0
    lines = text.splitlines()
    assert lines[0] == "Streaming sampling"
    table = [ln for ln in lines if ln.startswith("| ")]
    assert table[0].startswith("| N | process wall s") and len(table) == 3
    assert "Goal for N=16" in text
