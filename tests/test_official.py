"""SinGAN and ConSinGAN against their official programs' rules, and the library's
own promises (injection, patch SWD, compile-once, checkpoints, resume) against
references computed independently here: plain Python, NumPy and SciPy written
from the rules (README, "SinGAN and ConSinGAN against their official code"),
never by calling the function under test to make its own expectation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import re
import shutil
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from scipy import stats

from agan_jax import checkpoint, metrics, pyramid, sampling, train
from agan_jax.applications import inject
from agan_jax.models import families
from agan_jax.settings import Settings
from agan_jax.state import StageData
from agan_jax.train import loop
from agan_jax.train.group import Models
from agan_jax.train.loop import prepare_image
from agan_jax.train.lower import LowerStages
from agan_jax.train.updates import d_tx, make_stage_fns
from configs import consingan as consingan_config
from configs import singan as singan_config
from tests.conftest import (
    BUNDLED_IMAGE,
    loss_settings,
    model_spec,
    quick_compiles,
    settings_for,
    tiny_config,
)

# -- 1. stage sizes -------------------------------------------------------------------


def official_singan_sizes(h, w, max_size, min_size, r0=0.75):
    """Official SinGAN (adjust_scales2image, creat_reals_pyramid, imresize's
    output size ceil(side * scale) of the float64 product)."""
    num_scales = math.ceil(math.log(min_size / min(h, w), r0)) + 1
    scale2stop = math.ceil(math.log(min(max_size, max(h, w)) / max(h, w), r0))
    stop_scale = num_scales - scale2stop
    scale1 = min(max_size / max(h, w), 1)
    fh, fw = math.ceil(h * scale1), math.ceil(w * scale1)
    factor = (min_size / min(fh, fw)) ** (1 / stop_scale)
    out = []
    for i in range(stop_scale + 1):
        scale = factor ** (stop_scale - i)
        out.append((math.ceil(fh * scale), math.ceil(fw * scale)))
    return out


def official_consingan_sizes(h, w, max_size, min_size, stages):
    """Official ConSinGAN (its adjust_scales2image and create_reals_pyramid)."""
    stop_scale = stages - 1
    scale1 = min(max_size / max(h, w), 1)
    fh, fw = math.ceil(h * scale1), math.ceil(w * scale1)
    factor = (min_size / min(fh, fw)) ** (1 / stop_scale)
    out = []
    for i in range(stop_scale):
        power = ((stop_scale - 1) / math.log(stop_scale)) * math.log(stop_scale - i) + 1
        scale = factor**power
        out.append((math.ceil(fh * scale), math.ceil(fw * scale)))
    return out + [(fh, fw)]


# The lists both official programs train on for the bundled 188x250 image.
COLUSSEUM_SINGAN_64 = [(25, 33), (30, 39), (35, 46), (42, 55), (49, 64)]
COLUSSEUM_SINGAN_128 = [
    (26, 33),
    (32, 42),
    (40, 52),
    (50, 65),
    (62, 82),
    (78, 103),
    (97, 128),
]
COLUSSEUM_CONSINGAN_64_6 = [(25, 33), (27, 36), (30, 39), (34, 45), (43, 56), (49, 64)]


def _image_file(tmp_path, h, w) -> str:
    """An h x w RGB PNG (a smooth pattern) written with Pillow."""
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack(
        [xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), (xx + yy) % 256], -1
    )
    path = str(tmp_path / f"img_{h}x{w}.png")
    Image.fromarray(rgb.astype(np.uint8)).save(path)
    return path


def _sizes_through_entry_point(config, image, max_size, min_size=None):
    """Stage sizes as training computes them: Settings.from_config, then
    train.loop.prepare_image, then pyramid.stage_sizes_for."""
    config.data.image = image
    config.data.max_size = max_size
    if min_size is not None:
        config.data.min_size = min_size
    s = Settings.from_config(config)
    img, original_hw, _ = prepare_image(s.data)
    sizes = pyramid.stage_sizes_for(s.pyramid, s.data, img.shape[:2], original_hw)
    return sizes, s, original_hw


def test_reference_rules_give_the_lists_the_official_programs_train():
    # The references above, checked on the lists both programs print for colusseum.
    assert official_singan_sizes(188, 250, 64, 25) == COLUSSEUM_SINGAN_64
    assert official_singan_sizes(188, 250, 128, 25) == COLUSSEUM_SINGAN_128
    assert official_consingan_sizes(188, 250, 64, 25, 6) == COLUSSEUM_CONSINGAN_64_6


@pytest.mark.parametrize(
    "h,w,max_size,min_size",
    [
        (188, 250, 64, 25),  # colusseum (the bundled file)
        (188, 250, 128, 25),
        (250, 188, 96, 25),  # portrait
        (600, 243, 250, 25),  # portrait, resized
        (101, 333, 80, 20),  # wide
        (30, 27, 250, 25),  # tiny, not resized
        (26, 26, 250, 25),  # tiny: float noise makes the coarsest 26, as theirs
    ],
)
def test_singan_stage_sizes_equal_official(tmp_path, h, w, max_size, min_size):
    colusseum = (h, w) == (188, 250)
    image = BUNDLED_IMAGE if colusseum else _image_file(tmp_path, h, w)
    sizes, s, original_hw = _sizes_through_entry_point(
        singan_config.get_config(), image, max_size, min_size
    )
    assert original_hw == (h, w)
    assert s.pyramid.schedule == "geometric"
    want = official_singan_sizes(h, w, max_size, min_size)
    if colusseum:
        assert want == {64: COLUSSEUM_SINGAN_64, 128: COLUSSEUM_SINGAN_128}[max_size]
    assert sizes == want


@pytest.mark.parametrize(
    "variant,h,w,max_size,min_size,stages",
    [
        (None, 188, 250, 64, 25, 6),  # colusseum, generation
        ("harmonization", 188, 250, 64, None, 3),  # min_size 31 = 0.48 x 64
        (None, 188, 250, 128, 25, 7),
        (None, 250, 188, 96, 20, 7),  # portrait
        (None, 40, 36, 250, 25, 3),  # tiny, not resized
    ],
)
def test_consingan_stage_sizes_equal_official(
    tmp_path, variant, h, w, max_size, min_size, stages
):
    colusseum = (h, w) == (188, 250)
    image = BUNDLED_IMAGE if colusseum else _image_file(tmp_path, h, w)
    config = consingan_config.get_config(variant)
    config.pyramid.num_stages = stages
    sizes, s, original_hw = _sizes_through_entry_point(
        config, image, max_size, min_size
    )
    assert original_hw == (h, w) and s.pyramid.schedule == "log"
    if min_size is None:  # harmonization: max(16, round(0.48 x max_size))
        min_size = s.data.min_size
        assert min_size == 31
    want = official_consingan_sizes(h, w, max_size, min_size, stages)
    if (variant, max_size, stages) == (None, 64, 6) and colusseum:
        assert want == COLUSSEUM_CONSINGAN_64_6
    assert sizes == want


# -- 2. SinGAN's update rule -----------------------------------------------------------

RULE_SIZES = [(10, 12), (13, 16)]


def _recording_family(log: list):
    """The SinGAN family whose StageModel reports every generator input drawn
    (`draw_inputs`) and every generator call (`apply`) to `log`, in the order the
    compiled programs run them."""
    base = families.get("singan")

    def record(tag):
        return lambda prev, z: log.append((tag, np.asarray(prev), np.asarray(z)))

    def make_stage(spec, sizes, stage, augment=None, finetune=False):
        model = base.make_stage(spec, sizes, stage, augment, finetune)

        def draw_inputs(keys, data, lower=None):
            inputs = model.draw_inputs(keys, data, lower)
            jax.debug.callback(record("draw"), *inputs)
            return inputs

        def apply(g_vars, inputs, data):
            jax.debug.callback(record("apply"), *inputs)
            return model.apply(g_vars, inputs, data)

        return model._replace(draw_inputs=draw_inputs, apply=apply)

    return dataclasses.replace(base, make_stage=make_stage)


RULE_SPEC = model_spec("singan", nfc=8, max_nfc=8, num_layers=3)


@jax.jit
def _rule_stage_data(key):
    """StageData of stage 1 (one program: eager flax init compiles dozens)."""
    k = jax.random.split(key, 3)
    x0 = jnp.zeros((1, *RULE_SIZES[0], 3))
    g0 = families.get("singan").make_generator(RULE_SPEC, 0)
    g0 = g0.init(k[0], x0, x0, 1.0, train=False)
    # Kernels N(0, 0.5) instead of N(0, 0.02): lower-stage samples that differ
    # visibly from one noise to the next.
    g0 = jax.tree_util.tree_map_with_path(
        lambda path, x: x * 25 if "kernel" in jax.tree_util.keystr(path) else x, g0
    )
    h, w = RULE_SIZES[1]
    return StageData(
        real=jax.random.uniform(k[1], (h, w, 3), minval=-1, maxval=1),
        amps=jnp.asarray([1.0, 0.1], jnp.float32),
        rec_inputs=(jax.random.uniform(k[2], (h, w, 3)), jnp.zeros((h, w, 3))),
        lower_vars=(g0,),
        source=jnp.zeros((*RULE_SIZES[0], 3)),
    )


def _run_iterations(rule: str, iters: int, fed: bool = False):
    """`iters` iterations of stage 1 of a tiny SinGAN under `rule`; returns the log
    split per iteration, the reconstruction inputs and the train settings.
    `fed`: the lower-stage samples drawn before each iteration by the stage
    loop's own programs (train/lower.py), as training draws them."""
    log: list = []
    family = _recording_family(log)
    ts = settings_for("singan", update_rule=rule, d_steps=3, g_steps=3).train
    fns = make_stage_fns(family, RULE_SPEC, RULE_SIZES, 1, ts, loss_settings("singan"))
    data = _rule_stage_data(jax.random.key(0))
    state = fns.init_state(jax.random.key(1))
    lower = LowerStages(RULE_SPEC, RULE_SIZES, Models())
    per_iter = []
    for _ in range(iters):
        if fed:
            x = lower.draw(
                state, 1, fns.lower_slots, 6, data.lower_vars, [data.amps[0]]
            )
            state = state.replace(lower=x)
        state, _ = fns.iteration(state, data)
        jax.block_until_ready(state)
        jax.effects_barrier()
        per_iter.append(list(log))
        log.clear()
    return per_iter, data.rec_inputs, ts


def _same(a, b) -> bool:
    return (
        a[1].shape == b[1].shape
        and np.array_equal(a[1], b[1])
        and np.array_equal(a[2], b[2])
    )


@pytest.mark.parametrize("fed", [False, True])
def test_singan_rule_one_noise_map_lower_sample_per_critic_update(fed):
    """Official SinGAN: one noise map per iteration; each of the d_steps critic
    updates draws a fresh sample of the frozen stages below and makes its fake
    from it; the g_steps generator updates use the last critic update's noise and
    lower-stage sample (their fake recomputed each step). `fed`: the samples
    drawn for the iteration by the loop's per-stage programs, as training does."""
    with quick_compiles():
        iterations, rec_inputs, ts = _run_iterations("singan", 2, fed)
    rec = ("apply", np.asarray(rec_inputs[0]), np.asarray(rec_inputs[1]))
    noises = []
    for log in iterations:
        draws = [e for e in log if e[0] == "draw"]
        fakes = [e for e in log if e[0] == "apply" and not _same(e, rec)]
        recs = [e for e in log if e[0] == "apply" and _same(e, rec)]
        # d_steps lower-stage samples per iteration (not d_steps + g_steps).
        assert len(draws) == ts.d_steps == 3
        # Generator calls: one fake per critic update, one fake and one
        # reconstruction per generator update.
        assert len(fakes) == ts.d_steps + ts.g_steps and len(recs) == ts.g_steps
        # The critic updates' fakes come from their own draws...
        for draw, fake in zip(draws, fakes[: ts.d_steps], strict=True):
            assert _same(draw, fake)
        # ...with one noise map and a fresh lower-stage sample each.
        for a in draws[1:]:
            np.testing.assert_array_equal(a[2], draws[0][2])
        for i in range(3):
            for j in range(i):
                assert np.abs(draws[i][1] - draws[j][1]).max() > 1e-3
        # The generator updates see exactly the last critic update's input.
        for fake in fakes[ts.d_steps :]:
            assert _same(fake, draws[-1])
        noises.append(draws[0][2])
    # A new noise map in the next iteration.
    assert np.abs(noises[0] - noises[1]).max() > 1e-3


def test_fed_lower_samples_are_the_ones_an_update_draws():
    """Under SinGAN's rule the samples the loop draws before a call (one
    vmap'd program per frozen stage) are the ones each critic update would draw
    itself from its keys: same inputs, to float rounding."""
    with quick_compiles():
        own, _, _ = _run_iterations("singan", 2)
        fed, _, _ = _run_iterations("singan", 2, fed=True)
    for a_log, b_log in zip(own, fed, strict=True):
        a = [e for e in a_log if e[0] == "draw"]
        b = [e for e in b_log if e[0] == "draw"]
        assert len(a) == len(b) == 3
        for x, y in zip(a, b, strict=True):
            np.testing.assert_allclose(x[1], y[1], atol=1e-5)
            np.testing.assert_array_equal(x[2], y[2])


def test_fresh_rule_draws_an_input_per_update():
    with quick_compiles():
        iterations, rec_inputs, ts = _run_iterations("fresh", 1, fed=True)
    rec = ("apply", np.asarray(rec_inputs[0]), np.asarray(rec_inputs[1]))
    (log,) = iterations
    draws = [e for e in log if e[0] == "draw"]
    fakes = [e for e in log if e[0] == "apply" and not _same(e, rec)]
    assert len(draws) == ts.d_steps + ts.g_steps == 6
    for draw, fake in zip(draws, fakes, strict=True):
        assert _same(draw, fake)
    assert not _same(fakes[-1], draws[ts.d_steps - 1])


# -- 3. learning-rate step ---------------------------------------------------------------


def _step_sizes(tx, params, n: int) -> dict:
    """The step each of n Adam updates applies to every leaf, for a constant
    gradient of 1 (Adam's bias-corrected moments are then 1: the step is the
    learning rate, up to eps)."""
    grads = jax.tree.map(jnp.ones_like, params)

    def body(opt, _):
        updates, opt = tx.update(grads, opt, params)
        return opt, jax.tree.map(lambda u: -u[0], updates)

    _, steps = jax.jit(lambda: jax.lax.scan(body, tx.init(params), None, length=n))()
    return jax.tree.map(np.asarray, steps)


def singan_lr(base, gamma, update, per_iter, milestone=1600):
    """Official SinGAN: MultiStepLR(milestones=[1600]) stepped at the start of
    every iteration (epoch), so epoch e trains at lr x gamma once e + 1 >= 1600."""
    epoch = update // per_iter
    return base * gamma if epoch + 1 >= milestone else base


def consingan_lr(base, gamma, update, per_iter, niter):
    """Official ConSinGAN: MultiStepLR(milestones=[0.8 * niter]) stepped at the
    end of every iteration, so iteration it trains at lr x gamma once it >= 0.8 niter."""
    it = update // per_iter
    return base * gamma if it >= 0.8 * niter else base


def test_singan_learning_rate_steps_at_iteration_1599():
    s = Settings.from_config(singan_config.get_config())
    ts = s.train
    assert (ts.lr_decay_iter, ts.d_steps, ts.g_steps, ts.gamma) == (1599, 3, 3, 0.1)
    family = families.of(s.model)
    g_tx = family.make_stage(s.model, [(8, 8)], 0).g_tx(ts)
    params = {"w": jnp.zeros((2,))}
    n = 1601 * 3
    for tx, base, per_iter in (
        (d_tx(ts), ts.lr_d, ts.d_steps),
        (g_tx, ts.lr_g, ts.g_steps),
    ):
        got = _step_sizes(tx, params, n)["w"]
        want = [singan_lr(base, ts.gamma, u, per_iter) for u in range(n)]
        np.testing.assert_allclose(got, want, rtol=1e-5)
        first = 1599 * per_iter  # the first update at lr x gamma
        assert got[first - 1] == pytest.approx(base, rel=1e-5)
        assert got[first] == pytest.approx(base * ts.gamma, rel=1e-5)


def test_consingan_learning_rate_steps_at_four_fifths():
    s = Settings.from_config(consingan_config.get_config())
    ts, spec = s.train, s.model
    assert (ts.lr_decay_iter, ts.iters, ts.gamma) == (-1, 200, 0.1)
    stage = 1
    g_tx = families.of(spec).make_stage(spec, [(8, 8), (9, 9)], stage).g_tx(ts)
    # Block k stages below the newest at lr_g x lr_scale**k (the head with block 0).
    groups = {"head": 1, "block_0": 1, "block_1": 0, "tail": 0}
    g_params = {name: {"kernel": jnp.zeros((2,))} for name in groups}
    n = ts.iters * 3
    got = _step_sizes(d_tx(ts), {"w": jnp.zeros((2,))}, n)["w"]
    want = [consingan_lr(ts.lr_d, ts.gamma, u, ts.d_steps, ts.iters) for u in range(n)]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert got[160 * 3 - 1] == pytest.approx(ts.lr_d, rel=1e-5)
    assert got[160 * 3] == pytest.approx(ts.lr_d * ts.gamma, rel=1e-5)
    # ConSinGAN's rule: g_steps optimiser updates per iteration.
    steps = _step_sizes(g_tx, g_params, n)
    for name, k in groups.items():
        base = ts.lr_g * spec.lr_scale**k
        want = [consingan_lr(base, ts.gamma, u, ts.g_steps, ts.iters) for u in range(n)]
        np.testing.assert_allclose(steps[name]["kernel"], want, rtol=1e-5)


# -- 4. injection ------------------------------------------------------------------------


def test_inject_recomputed_by_hand(tiny_singan_run):
    _, run = tiny_singan_run
    sizes, n_stages = run.sizes, run.num_stages
    gens = [families.of(run.spec).make_generator(run.spec, s) for s in range(n_stages)]
    # Each stage's module applied as SinGAN's generator: (prev, z, amp) -> image.
    applies = [jax.jit(g.apply, static_argnames="train") for g in gens]
    image = np.ascontiguousarray(np.asarray(run.real)[::-1])  # another image
    key = jax.random.key(11)
    for start in range(1, n_stages):
        got = inject(run, image, start, key, n=2)
        assert got.shape == (2, *sizes[-1], 3)
        for i in range(2):  # output i: key fold_in(key, i), as sampling's
            k = jax.random.fold_in(key, i)
            x = pyramid.resize(jnp.asarray(image), sizes[start - 1])
            for s in range(start, n_stages):
                h, w = sizes[s]
                prev = pyramid.resize(x, (h, w))
                # Stages above 0 draw 3-channel noise from fold_in(sample key, s).
                z = jax.random.normal(jax.random.fold_in(k, s), (h, w, 3))
                out, _ = applies[s](
                    run.g_vars[s], prev[None], z[None], run.noise_amps[s], train=False
                )
                x = out[0]
            np.testing.assert_allclose(got[i], x, atol=1e-5)
        assert np.abs(got[0] - got[1]).max() > 1e-3


# -- 5. patch SWD --------------------------------------------------------------------------


def swd_brute_force(real, fakes, seed, patch, num_projections, levels, max_patches):
    """Patch SWD as agan_jax.metrics defines it, by brute force: every patch
    extracted, projected in float64, and the 1-D W1 per direction from SciPy."""
    key = jax.random.key(seed)
    c = real.shape[-1]
    totals = []
    for fake in fakes:
        total = 0.0
        for level in range(levels):
            k_dir, k_sub = jax.random.split(jax.random.fold_in(key, level))
            dirs = np.asarray(
                jax.random.normal(k_dir, (num_projections, patch * patch * c)),
                np.float64,
            )
            dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
            projections = []
            for img in (real, fake):
                hw = (img.shape[0] >> level, img.shape[1] >> level)
                x = np.asarray(pyramid.resize(jnp.asarray(img), hw), np.float64)
                x = (x + 1) / 2
                rows = []
                for i in range(hw[0] - patch + 1):  # row-major patch positions
                    for j in range(hw[1] - patch + 1):
                        rows.append(x[i : i + patch, j : j + patch, :].reshape(-1))
                proj = np.stack(rows) @ dirs.T  # (patches, directions)
                if max_patches is not None and len(rows) > max_patches:
                    keep = np.asarray(jax.random.permutation(k_sub, len(rows)))
                    proj = proj[keep[:max_patches]]
                projections.append(proj)
            pr, pf = projections
            total += np.mean(
                [
                    stats.wasserstein_distance(pr[:, p], pf[:, p])
                    for p in range(num_projections)
                ]
            )
        totals.append(total / levels)
    return float(np.mean(totals))


@pytest.mark.parametrize("max_patches", [None, 50])
def test_patch_swd_against_brute_force(max_patches):
    rng = np.random.default_rng(0)
    real = rng.uniform(-1, 1, (14, 17, 3)).astype(np.float32)
    real = np.clip(real + np.linspace(-0.5, 0.5, 17)[None, :, None], -1, 1)
    fakes = np.stack([np.roll(real, 3, axis=1), rng.uniform(-1, 1, (14, 17, 3))])
    fakes = fakes.astype(np.float32)
    args = dict(patch=3, num_projections=16, levels=2, max_patches=max_patches)
    got = metrics.patch_swd(real, fakes, 5, **args)
    want = swd_brute_force(real, fakes, 5, **args)
    assert want > 0.01
    assert got == pytest.approx(want, rel=1e-4)
    assert metrics.patch_swd(real, real, 5, **args) == pytest.approx(0.0, abs=1e-7)


# -- 6. compile counts ------------------------------------------------------------------


@contextlib.contextmanager
def _log_compiles():
    """jax_log_compiles on in every thread (`jax.log_compiles()` sets it for the
    calling thread only; stages compile in a worker thread)."""
    old = jax.config.values["jax_log_compiles"]
    jax.config.update("jax_log_compiles", True)
    try:
        yield
    finally:
        jax.config.update("jax_log_compiles", old)


class _Records(logging.Handler):
    """Collects (thread name, message) of every log record."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[tuple[str, str]] = []

    def emit(self, record):
        self.records.append((record.threadName, record.getMessage()))


COMPILING = re.compile(r"Compiling jit\((\w+)\)")


def _compiled_names(records) -> list[str]:
    return [m.group(1) for _, msg in records if (m := COMPILING.match(msg))]


@pytest.fixture(scope="module")
def instrumented_run(tmp_path_factory):
    """A tiny SinGAN (3 iterations per stage, stages 0 and 1) trained with compile
    logging on; records every compile, the log position around each stage's
    training loop, and the state the loop handed to every save."""
    workdir = str(tmp_path_factory.mktemp("instrumented"))
    config = tiny_config("singan")
    config.train.iters_per_stage = 3
    config.train.compile_unit = "update"
    config.model.num_layers = 3  # smaller programs, the same stage structure
    handler = _Records()
    jax_logger = logging.getLogger("jax")
    saved, windows = {}, []
    save_stage, run_stage = checkpoint.RunStore.save_stage, loop.run_stage

    def save_spy(self, stage, state, z_rec, noise_amp, size):
        host = jax.device_get(state.replace(key=jax.random.key_data(state.key)))
        saved[stage] = dict(
            state=host, z_rec=np.asarray(z_rec), noise_amp=noise_amp, size=size
        )
        return save_stage(self, stage, state, z_rec, noise_amp, size)

    def run_spy(*args, **kwargs):
        start = len(handler.records)
        out = run_stage(*args, **kwargs)
        windows.append((start, len(handler.records)))
        return out

    patch = pytest.MonkeyPatch()
    patch.setattr(checkpoint.RunStore, "save_stage", save_spy)
    patch.setattr(loop, "run_stage", run_spy)
    jax_logger.addHandler(handler)
    try:
        with quick_compiles(), _log_compiles():
            run = train.train(config, workdir, stop_after=1, progress=False)
    finally:
        jax_logger.removeHandler(handler)
        patch.undo()
    return dict(
        workdir=workdir, run=run, records=handler.records, saved=saved, windows=windows
    )


def test_training_compiles_each_stage_program_once(instrumented_run):
    records, windows = instrumented_run["records"], instrumented_run["windows"]
    names = Counter(_compiled_names(records))
    stages = 2
    for program in ("init_state", "d_step", "g_step"):
        assert names[program] == stages, (program, names)
    # Stage 1's updates take stage 0's samples as data: stage 0's generator and
    # the keys of a call compiled once (train/lower.py). Its prepare is stage 0's
    # reconstruction program (shared with the stage grids) and its own `enter`.
    assert names["lower_stage"] == names["lower_keys"] == 1, names
    assert names["prepare"] == names["enter"] == names["lower_rec0"] == 1, names
    # Nothing is compiled on the main thread while a stage trains: every program
    # of a stage was compiled ahead (later stages' compiles run in a worker).
    assert len(windows) == stages
    for start, stop in windows:
        during = [r for r in records[start:stop] if r[0] == "MainThread"]
        assert _compiled_names(during) == []


def test_repeated_sampling_compiles_nothing(tiny_singan_run):
    _, run = tiny_singan_run
    sampler = sampling.Sampler(run)
    sampler.sample(jax.random.key(0), 3, batch_size=2)
    entries = dict(sampler.cache)
    handler = _Records()
    jax_logger = logging.getLogger("jax")
    jax_logger.addHandler(handler)
    try:
        with _log_compiles():
            for seed in (1, 2):
                jax.block_until_ready(
                    sampler.sample(jax.random.key(seed), 3, batch_size=2)
                )
    finally:
        jax_logger.removeHandler(handler)
    assert _compiled_names(handler.records) == []
    assert sampler.cache.keys() == entries.keys()
    assert all(sampler.cache[k] is f for k, f in entries.items())


# -- 7. checkpoints ---------------------------------------------------------------------


def _assert_trees_equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_loaded_checkpoint_equals_the_trained_state(instrumented_run):
    """What a save hands to Orbax (captured in memory, not loaded) is what
    RunStore.load_stage and checkpoint.load_run give back."""
    workdir, saved = instrumented_run["workdir"], instrumented_run["saved"]
    assert sorted(saved) == [0, 1]
    store = checkpoint.RunStore(workdir)
    try:
        for stage, ref in saved.items():
            tree = store.load_stage(stage)
            st = ref["state"]
            for name in ("g_vars", "d_vars"):
                jax.tree.map(
                    np.testing.assert_array_equal, tree[name], dict(getattr(st, name))
                )
            _assert_trees_equal(tree["g_opt"], st.g_opt)
            _assert_trees_equal(tree["d_opt"], st.d_opt)
            np.testing.assert_array_equal(tree["key"], st.key)
            assert int(tree["step"]) == int(st.step) == 3 * 6
            np.testing.assert_array_equal(tree["z_rec"], ref["z_rec"])
            assert float(tree["noise_amp"]) == np.float32(ref["noise_amp"])
    finally:
        store.close()
    run = checkpoint.load_run(workdir)
    assert run.num_stages == 2
    for stage, ref in saved.items():
        jax.tree.map(
            np.testing.assert_array_equal, run.g_vars[stage], dict(ref["state"].g_vars)
        )
        assert run.noise_amps[stage] == np.float32(ref["noise_amp"])
    np.testing.assert_array_equal(run.z_rec, saved[0]["z_rec"])


# -- 8. resume from a partial stage ----------------------------------------------------


def test_resume_after_a_save_killed_midway(tiny_singan_run, tmp_path):
    """A kill during stage 2's save leaves Orbax's temporary directory and no
    finished stage 2; re-running trains stage 2 again (only it) and ends equal to
    the uninterrupted run."""
    workdir, full = tiny_singan_run
    assert full.num_stages == 3
    copy = str(tmp_path / "killed")
    shutil.copytree(workdir, copy)
    ckpt = os.path.join(copy, "checkpoints")
    tmp = os.path.join(ckpt, "2.orbax-checkpoint-tmp-1764230400123456")
    shutil.copytree(os.path.join(ckpt, "2"), tmp)
    shutil.rmtree(os.path.join(tmp, "train"))  # the save stopped halfway
    for name in os.listdir(tmp):
        if "METADATA" in name.upper():
            os.remove(os.path.join(tmp, name))
    shutil.rmtree(os.path.join(ckpt, "2"))
    before = {s: os.path.getmtime(os.path.join(ckpt, str(s))) for s in (0, 1)}
    store = checkpoint.RunStore(copy)
    assert store.finished_stages(3) == [0, 1]
    store.close()

    resumed = train.train(tiny_config("singan"), copy, progress=False)

    assert resumed.num_stages == 3
    for a, b in zip(resumed.g_vars, full.g_vars, strict=True):
        jax.tree.map(np.testing.assert_array_equal, a, b)
    np.testing.assert_array_equal(resumed.noise_amps, full.noise_amps)
    np.testing.assert_array_equal(resumed.z_rec, full.z_rec)
    # Only stage 2 trained again; stages 0 and 1 were left as saved.
    assert {s: os.path.getmtime(os.path.join(ckpt, str(s))) for s in (0, 1)} == before
    with open(os.path.join(copy, "metrics.jsonl")) as f:
        done = [
            r["stage"] for r in map(json.loads, f) if r.get("event") == "stage_done"
        ]
    # The resume dropped the unsaved stage 2's records before training it again.
    assert Counter(done) == {0: 1, 1: 1, 2: 1}
    store = checkpoint.RunStore(copy)
    assert store.finished_stages(3) == [0, 1, 2]
    store.close()


def test_stage0_rec_noise_redraw_as_official_singan(tmp_path):
    """SinGAN's default (train.stage0_rec_noise='auto' -> 'redraw', official
    SinGAN's z_opt): stage 0's reconstruction loss sees a new noise map every
    iteration, and the run keeps the last iteration's map as z*; 'fixed' keeps
    the map drawn from the seed."""
    config = tiny_config("singan")
    assert config.train.stage0_rec_noise == "auto"
    config.train.iters_per_stage = 3
    s = families.settings_from_config(config)
    family = families.of(s.model)
    workdir = str(tmp_path / "redraw")
    with quick_compiles():
        run = train.train(config, workdir, stop_after=0, progress=False)
        sizes = run.sizes
        fns = make_stage_fns(family, s.model, sizes, 0, s.train, s.loss)
        state = fns.init_state(loop.stage_key(s.seed, 0))
        draws = [np.asarray(fns.rec_draw(state.key, i)[1]) for i in range(3)]
        # A generator update of iteration 1 sees iteration 1's map, not z*.
        stage0_fixed = family.stage0_rec(s.model, s.seed, sizes, None, None)
        zeros = jnp.zeros((*sizes[0], 3))
        data = StageData(
            real=jnp.asarray(pyramid.build(jnp.asarray(run.real), sizes)[0]),
            amps=jnp.ones((1,), jnp.float32),
            rec_inputs=(zeros, jnp.asarray(stage0_fixed)),
            lower_vars=(),
            source=zeros,
        )
        per_iter = s.train.d_steps + s.train.g_steps
        at_1 = state.replace(step=state.step + per_iter + s.train.d_steps)
        _, m_redraw = fns.g_step(at_1, data)
        fixed = dataclasses.replace(s.train, stage0_rec_noise="fixed")
        fixed_fns = make_stage_fns(family, s.model, sizes, 0, fixed, s.loss)
        _, m_fixed = fixed_fns.g_step(at_1, data)
        data_1 = dataclasses.replace(data, rec_inputs=(zeros, jnp.asarray(draws[1])))
        _, m_expect = fixed_fns.g_step(at_1, data_1)
    assert fixed_fns.rec_draw is None
    np.testing.assert_array_equal(np.asarray(run.z_rec), draws[-1])
    assert np.abs(draws[0] - draws[1]).max() > 1e-3
    assert draws[0].shape == (*sizes[0], 3)
    np.testing.assert_array_equal(draws[0][..., 0], draws[0][..., 2])  # 1 channel
    assert np.abs(np.asarray(run.z_rec) - np.asarray(stage0_fixed)).max() > 1e-3
    assert float(m_redraw["rec"]) == pytest.approx(float(m_expect["rec"]), rel=1e-6)
    assert float(m_redraw["rec"]) != pytest.approx(float(m_fixed["rec"]), rel=1e-3)


@pytest.mark.parametrize(
    "kind,variant,redraws",
    [("singan", "tiny", True), ("agan", "tiny", True), ("consingan", "tiny", False)],
)
def test_stage0_rec_noise_auto_follows_the_update_rule(kind, variant, redraws):
    """'auto' redraws z* under SinGAN's rule (SinGAN, AGAN) and keeps one map
    under ConSinGAN's (as official ConSinGAN keeps its z_opt); never while fine-
    tuning or above stage 0."""
    s = families.settings_from_config(tiny_config(kind, variant))
    assert s.train.stage0_rec_noise == "auto"
    family = families.of(s.model)
    sizes = [(16, 16), (20, 20)]
    fns = [make_stage_fns(family, s.model, sizes, k, s.train, s.loss) for k in (0, 1)]
    assert (fns[0].rec_draw is not None) == redraws
    assert fns[1].rec_draw is None


def test_stage0_rec_noise_redraw_needs_the_singan_rule(tmp_path):
    config = tiny_config("consingan")
    config.train.stage0_rec_noise = "redraw"
    with pytest.raises(Exception, match="stage0_rec_noise = 'redraw'.*'consingan'"):
        train.train(config, str(tmp_path / "x"), progress=False)
    assert not (tmp_path / "x").exists()
