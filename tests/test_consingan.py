"""ConSinGAN: learning rates per group, freezing, growth, augmentations, fine-tune,
sampling and resume (configs/consingan.py:tiny, train_depth 2, so stage 2 freezes
block 0 and the head)."""

from __future__ import annotations

import dataclasses
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agan_jax import augment as aug
from agan_jax import checkpoint, forward, image_io, pyramid, sampling, train
from agan_jax.errors import UserError
from agan_jax.models import consingan, families
from agan_jax.settings import Settings
from agan_jax.state import StageData
from agan_jax.train.finetune import fine_tune
from agan_jax.train.loop import noise_amp, stage_key
from agan_jax.train.updates import make_stage_fns, resolve_rule
from benchmarks import train_table
from tests.conftest import (
    model_spec,
    settings_for,
    tiny_config,
    train_settings,
)
from tests.test_pyramid import HAND_SIZES_250x188

FAMILY = families.get("consingan")
# configs/consingan.py without a variant: 64 features, 3 convolutions per block,
# no BatchNorm, train_depth 3, lr_scale 0.1.
SPEC = model_spec("consingan", None)


def _count(tree) -> int:
    """Number of scalars in a parameter tree."""
    return int(sum(np.size(x) for x in jax.tree.leaves(tree)))


def _params(stage: int) -> dict:
    """A stand-in parameter tree with the generator's top-level groups."""
    names = ["head", "tail"] + [f"block_{i}" for i in range(stage + 1)]
    return {n: {"kernel": jnp.ones((2, 3)), "bias": jnp.ones((3,))} for n in names}


# Hand-written from the issue: newest block k=0 at lr, the next at lr*0.1, the one
# below at lr*0.01, older frozen; the head with block 0 while stage < 3; tail lr.
LR = 5e-4
HAND_LRS = {
    0: {"head": LR, "tail": LR, "block_0": LR},
    1: {"head": LR / 10, "tail": LR, "block_0": LR / 10, "block_1": LR},
    2: {"head": LR / 100, "tail": LR, "block_0": LR / 100, "block_1": LR / 10},
    3: {"head": 0, "tail": LR, "block_0": 0, "block_1": LR / 100, "block_3": LR},
    5: {"block_2": 0, "block_3": LR / 100, "block_4": LR / 10, "block_5": LR},
}


@pytest.mark.parametrize("stage", sorted(HAND_LRS))
def test_learning_rate_of_every_group_from_the_optimiser(stage):
    assert (SPEC.nfc, SPEC.num_layers, SPEC.batch_norm) == (64, 3, False)
    assert (SPEC.train_depth, SPEC.lr_scale) == (3, 0.1)
    ts = train_settings("consingan", None, lr_g=LR)
    tx = consingan.make_g_tx(SPEC, stage, ts)
    params = _params(stage)
    labels = consingan.param_labels(params, stage, SPEC.train_depth)
    # One Adam step with gradient 1 moves every parameter by -lr (bias-corrected).
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = tx.update(grads, tx.init(params), params)
    expected = consingan.group_learning_rates(SPEC, stage, LR, params)
    for name, lr in HAND_LRS[stage].items():
        assert expected[name] == pytest.approx(lr, rel=1e-12)
        np.testing.assert_allclose(
            np.asarray(updates[name]["kernel"]), -lr, rtol=1e-4, atol=1e-12
        )
        want = "frozen" if lr == 0 else f"k{round(np.log10(LR / lr))}"
        assert set(jax.tree.leaves(labels[name])) == {want}


def test_log_schedule_sizes():
    # The hand-computed table of tests/test_pyramid.py, for the bundled 188x250
    # image at paper size (h and w swapped: the table is for a 250x188 image).
    s = Settings.from_config(tiny_config("consingan", "gpu"))
    sizes = pyramid.stage_sizes_for(s.pyramid, s.data, (188, 250), (188, 250))
    assert sizes == [(w, h) for h, w in HAND_SIZES_250x188["log"]]


def test_parameter_counts_at_paper_size():
    # head 3*64*9+64, blocks 3*(64*64*9+64), tail 64*3*9+3, critic 5 convs.
    x = jnp.zeros((1, 30, 40, 3))
    zs = [x] + [
        jnp.zeros((1, *consingan.noise_shape(SPEC, (30 + 4 * s, 40), s)))
        for s in range(1, 6)
    ]
    shapes = jax.eval_shape(
        lambda: FAMILY.make_generator(SPEC, 5).init(jax.random.key(0), zs, jnp.ones(6))
    )
    assert _count(shapes["params"]) == 1792 + 6 * 110784 + 1731
    d = jax.eval_shape(
        lambda: FAMILY.make_discriminator(SPEC, 5).init(jax.random.key(0), x)
    )
    assert _count(d["params"]) == 1792 + 3 * 36928 + 577
    # What each stage adds: block s (with the head and the tail at stage 0).
    added = [_count(consingan.stage_params(shapes["params"], s)) for s in range(6)]
    assert added == [1792 + 110784 + 1731] + [110784] * 5
    assert sum(added) == _count(shapes["params"])


# -- augmentations ------------------------------------------------------------------


def test_augmentations_keep_shape_and_range():
    x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (20, 27, 3)), jnp.float32)
    always = dataclasses.replace(
        Settings.from_config(tiny_config("consingan")).augment,
        p_colour=1,
        p_noise=1,
        p_cutout=1,
        p_tiles=1,
    )
    for mode in ("harmonization", "editing"):
        for i in range(4):
            y = aug.augment(jax.random.key(i), x, mode, always)
            assert y.shape == x.shape
            assert float(y.min()) >= -1.0 and float(y.max()) <= 1.0
            assert float(jnp.abs(y - x).mean()) > 1e-3
    key = jax.random.key(5)
    for y in (
        aug.colour_transform(key, x),
        aug.additive_noise(key, x, 0.1),
        aug.cutout(key, x, 0.4),
        aug.shuffle_tiles(key, x, 4),
    ):
        assert y.shape == x.shape
        assert float(y.min()) >= -1.0 and float(y.max()) <= 1.0
    # Shuffling permutes 5x6 tiles and leaves the remainder rows/columns in place.
    y = np.asarray(aug.shuffle_tiles(key, x, 4))
    np.testing.assert_array_equal(y[20:], np.asarray(x)[20:])
    np.testing.assert_array_equal(y[:, 24:], np.asarray(x)[:, 24:])
    np.testing.assert_allclose(np.sort(y.ravel()), np.sort(np.asarray(x).ravel()))
    assert not np.array_equal(y, np.asarray(x))
    # Cut-out: one rectangle of one colour.
    changed = np.any(np.asarray(aug.cutout(key, x, 0.4)) != np.asarray(x), axis=-1)
    rows, cols = np.where(changed)
    assert changed[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()


# -- a tiny trained run (conftest.tiny_consingan_run: 3 stages, train_depth 2) -------


def test_run_layout_and_params_per_stage(tiny_consingan_run):
    _, run = tiny_consingan_run
    assert run.spec.kind == "consingan" and run.num_stages == 3
    for s, v in enumerate(run.g_vars):
        want = {"head", "tail", *(f"block_{i}" for i in range(s + 1))}
        assert set(v["params"]) == want
    rows = [
        (s, _count(consingan.stage_params(run.g_vars[s]["params"], s)))
        for s in range(run.num_stages)
    ]
    total = _count(run.g_vars[-1]["params"])
    assert sum(g for _, g in rows) == total
    assert rows[1][1] == rows[2][1] == _count(run.g_vars[2]["params"]["block_2"])
    # The benchmarks' table counts the same (benchmarks/train_table.py).
    table = train_table.stage_param_counts(run)
    assert [(s, g) for s, g, _ in table] == rows


def test_frozen_groups_unchanged_across_a_stage(tiny_consingan_run):
    _, run = tiny_consingan_run
    before, after = run.g_vars[1]["params"], run.g_vars[2]["params"]
    same = lambda a, b: all(  # noqa: E731
        np.array_equal(x, y)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )
    # train_depth 2 at stage 2: block_0 and the head are frozen...
    assert same(before["block_0"], after["block_0"])
    assert same(before["head"], after["head"])
    # ...block_1 (k=1), block_2 (k=0, started as a copy of block_1) and the tail train.
    assert not same(before["block_1"], after["block_1"])
    assert not same(before["tail"], after["tail"])
    assert not same(after["block_1"], after["block_2"])


def test_new_block_and_critic_start_as_copies(tiny_consingan_run):
    workdir, run = tiny_consingan_run
    store = checkpoint.RunStore(workdir)
    d_prev = store.load_d_vars(1)
    store.close()
    s = settings_for("consingan")
    assert s.model == run.spec
    fns = make_stage_fns(FAMILY, run.spec, run.sizes, 2, s.train, s.loss, s.augment)
    to_jnp = lambda t: jax.tree.map(jnp.asarray, t)  # noqa: E731
    state = fns.init_state(stage_key(0, 2), run.g_vars[1], to_jnp(d_prev))
    p, prev = state.g_vars["params"], run.g_vars[1]["params"]
    jax.tree.map(np.testing.assert_array_equal, p["block_2"], prev["block_1"])
    for name in prev:
        jax.tree.map(np.testing.assert_array_equal, p[name], prev[name])
    jax.tree.map(np.testing.assert_array_equal, state.d_vars, d_prev)


def test_noise_amp_is_a_tenth_of_the_reconstruction_rmse(tiny_consingan_run):
    _, run = tiny_consingan_run
    reals = run.reals()
    # Stage 1's generator at its start: stage 0's weights plus a copied block 1,
    # its own amplitude 0, the fixed reconstruction noise.
    g1 = consingan.grow(run.g_vars[0], 1)
    amps = [run.noise_amps[0], 0.0]
    noises = forward.rec_noises(run.spec, run.z_rec, run.sizes, 2)
    rec, _ = forward.pyramid_forward(
        run.spec, [None, g1], run.sizes, amps, noises, None, 0, 2
    )
    rmse = float(jnp.sqrt(jnp.mean((rec - reals[1]) ** 2)))
    assert run.noise_amps[1] == pytest.approx(0.1 * rmse, rel=1e-4)
    np.testing.assert_array_equal(run.z_rec, reals[0])  # generation: the real image


def test_vmapped_sample_equals_alone_and_sizes(tiny_consingan_run):
    _, run = tiny_consingan_run
    key = jax.random.key(3)
    batch = np.asarray(sampling.sample(run, key, 3))
    f = jax.jit(sampling.make_sampler(run.spec, run.sizes, 0, run.num_stages))
    amps = jnp.asarray(run.noise_amps)
    for i in range(3):  # sample i: key fold_in(key, i)
        k = jax.random.fold_in(key, i)
        alone = np.asarray(f(k[None], run.g_vars, amps, jnp.zeros((1, 1, 3))))
        np.testing.assert_allclose(batch[i], alone[0], atol=1e-5)
    assert np.abs(batch[0] - batch[1]).mean() > 1e-3
    h, w = run.sizes[-1]
    wide = sampling.sample(run, key, 1, start_stage=1, scale=(1.0, 1.5))
    assert wide.shape == (1, h, round(1.5 * w), 3)
    assert np.isfinite(np.asarray(wide)).all()


def test_generic_noise_is_refused_with_a_message(tiny_consingan_run):
    _, run = tiny_consingan_run
    # SinGAN's noise (3 channels at every stage) where ConSinGAN takes features.
    singan = model_spec("singan")
    noises = forward.stage_noises(singan, jax.random.key(0), run.sizes, 0, 3)
    with pytest.raises(UserError, match="ConSinGAN noise of stage 1"):
        forward.pyramid_forward(
            run.spec, run.g_vars, run.sizes, run.noise_amps, noises, None, 0, 3
        )
    # Its own noise passes.
    noises = forward.stage_noises(run.spec, jax.random.key(0), run.sizes, 0, 3)
    assert noises[1].shape == consingan.noise_shape(run.spec, run.sizes[1], 1)
    out, attns = forward.pyramid_forward(
        run.spec, run.g_vars, run.sizes, run.noise_amps, noises, None, 0, 3
    )
    assert out.shape == (*run.sizes[2], 3) and attns == []


def test_noise_error_names_the_current_api(tiny_consingan_run):
    _, run = tiny_consingan_run
    z = jnp.zeros((*run.sizes[1], 3))
    with pytest.raises(UserError, match=r"forward\.draw_noise\(run\.spec, key"):
        consingan.check_noise(run.spec, z, run.sizes[1], 1)


def test_animation_starts_at_the_reconstruction(tiny_consingan_run):
    from agan_jax import applications

    _, run = tiny_consingan_run
    frames = applications.animate(run, jax.random.key(0), frames=3)
    assert frames.shape == (3, *run.sizes[-1], 3)
    np.testing.assert_allclose(frames[0], sampling.reconstruct(run), atol=1e-5)
    assert np.abs(frames[2] - frames[0]).mean() > 1e-4


def test_resume_equals_uninterrupted(tiny_consingan_run, tmp_path):
    # The run with its last stage deleted, trained again: resumes at stage 2 from
    # the saved stages 0 and 1 and reproduces the uninterrupted run exactly.
    workdir, run = tiny_consingan_run
    copy = str(tmp_path / "resumed")
    shutil.copytree(workdir, copy)
    shutil.rmtree(os.path.join(copy, "checkpoints", "2"))
    assert checkpoint.load_run(copy).num_stages == 2
    resumed = train.train(tiny_config("consingan"), copy, progress=False)
    np.testing.assert_array_equal(resumed.noise_amps, run.noise_amps)
    for a, b in zip(resumed.g_vars, run.g_vars, strict=True):
        jax.tree.map(np.testing.assert_array_equal, a, b)


def test_fine_tune_changes_only_the_last_stage(tiny_consingan_run, tmp_path):
    workdir, run = tiny_consingan_run
    naive = np.array(run.real)
    naive[5:15, 5:15] = [1.0, -1.0, -1.0]  # a pasted red square
    path = str(tmp_path / "naive.png")
    image_io.save_image(path, naive)
    out = str(tmp_path / "ft")
    tuned = fine_tune(None, workdir, path, iters=2, out_workdir=out, progress=False)
    assert (
        tuned.workdir == os.path.abspath(out) and tuned.meta["fine_tune"]["iters"] == 2
    )
    for s in range(run.num_stages - 1):
        jax.tree.map(np.testing.assert_array_equal, tuned.g_vars[s], run.g_vars[s])
    last_old, last_new = run.g_vars[-1]["params"], tuned.g_vars[-1]["params"]
    assert not np.array_equal(last_old["tail"]["kernel"], last_new["tail"]["kernel"])
    jax.tree.map(np.testing.assert_array_equal, last_old["head"], last_new["head"])
    np.testing.assert_array_equal(tuned.noise_amps, run.noise_amps)
    # The source run is untouched, and the output directory is not overwritten.
    again = checkpoint.load_run(workdir)
    jax.tree.map(np.testing.assert_array_equal, again.g_vars[-1], run.g_vars[-1])
    with pytest.raises(UserError, match="already exists"):
        fine_tune(None, workdir, path, iters=2, out_workdir=out, progress=False)


def _stage0(update_rule: str, g_steps: int):
    """Stage 0 of a tiny ConSinGAN (Adam eps 1), its fns, fresh state and data."""
    cfg = tiny_config("consingan")
    with cfg.unlocked():
        cfg.train.update_rule = update_rule
        cfg.train.g_steps = g_steps
        cfg.train.adam_eps = 1.0
    s = Settings.from_config(cfg)
    sizes = [(16, 20)]
    real = jax.random.uniform(jax.random.key(1), (*sizes[0], 3), minval=-1, maxval=1)
    fns = make_stage_fns(FAMILY, s.model, sizes, 0, s.train, s.loss, s.augment)
    state = fns.init_state(stage_key(0, 0))
    z_rec = FAMILY.stage0_rec(s.model, s.seed, sizes, state.g_vars, real)
    rec_inputs, rmse = fns.prepare(state.g_vars, (), jnp.zeros((0,)), z_rec, real)
    # Generation mode: the head reconstructs from the real coarsest image.
    assert len(rec_inputs) == 1 and noise_amp(s.loss, rmse) == 1.0
    np.testing.assert_array_equal(rec_inputs[0], real)
    data = StageData(
        real=real,
        amps=jnp.ones((1,), jnp.float32),
        rec_inputs=rec_inputs,
        lower_vars=(),
        source=real,
    )
    return fns, state, data


def test_consingan_rule_applies_one_gradient_g_steps_times():
    """ConSinGAN's rule: from a fresh Adam state, the same gradient three times
    moves every parameter by exactly 3x one step (Adam's bias-corrected moments of
    a constant gradient are that gradient), and the critic updates keep the
    iteration's noise key, which the generator update then advances."""
    fns3, state, data = _stage0("consingan", 3)
    assert fns3.g_calls == 1
    after_d, _ = jax.jit(fns3.d_step)(state, data)
    np.testing.assert_array_equal(
        jax.random.key_data(after_d.key), jax.random.key_data(state.key)
    )
    new3, _ = jax.jit(fns3.g_step)(after_d, data)
    assert int(new3.step) == int(after_d.step) + 3
    assert not np.array_equal(
        jax.random.key_data(new3.key), jax.random.key_data(after_d.key)
    )
    fns1, _, _ = _stage0("consingan", 1)
    new1, _ = jax.jit(fns1.g_step)(after_d, data)
    p0 = after_d.g_vars["params"]
    moved = jax.tree.map(
        lambda a, b, c: (np.asarray(a) - c, 3 * (np.asarray(b) - c)),
        new3.g_vars["params"],
        new1.g_vars["params"],
        p0,
    )
    for d3, d1 in jax.tree.leaves(moved, is_leaf=lambda x: isinstance(x, tuple)):
        np.testing.assert_allclose(d3, d1, rtol=1e-4, atol=1e-7)
    assert (
        max(
            np.abs(d).max()
            for d, _ in jax.tree.leaves(moved, is_leaf=lambda x: isinstance(x, tuple))
        )
        > 0
    )


def test_fresh_rule_takes_g_steps_gradients():
    fns, state, data = _stage0("fresh", 3)
    assert fns.g_calls == 3
    after_d, _ = jax.jit(fns.d_step)(state, data)
    assert not np.array_equal(
        jax.random.key_data(after_d.key), jax.random.key_data(state.key)
    )
    new, _ = jax.jit(fns.g_step)(after_d, data)
    assert int(new.step) == int(after_d.step) + 1


@pytest.mark.parametrize("kind", ["singan", "agan"])
def test_consingan_rule_is_refused_for_singan(tmp_path, kind):
    cfg = tiny_config(kind)
    with cfg.unlocked():
        cfg.train.update_rule = "consingan"
    message = (
        f"update_rule='consingan' is not a rule of {kind}, which trains with "
        "singan, fresh"
    )
    with pytest.raises(UserError, match=message):
        train.train(cfg, str(tmp_path), progress=False)
    assert os.listdir(tmp_path) == []
    s = Settings.from_config(cfg)
    with pytest.raises(UserError, match=message):
        make_stage_fns(families.of(s.model), s.model, [(16, 20)], 0, s.train, s.loss)


def _rule(config) -> str:
    s = Settings.from_config(config)
    return resolve_rule(families.of(s.model), s.model, s.train)


def test_singan_rule_is_refused_for_consingan():
    cfg = tiny_config("consingan")
    cfg.train.update_rule = "singan"
    with pytest.raises(UserError, match="'singan' is not a rule of consingan"):
        _rule(cfg)


def test_update_rule_auto_is_the_family_own_in_every_mode():
    """'auto': ConSinGAN's rule in every mode, with BatchNorm or not (its code
    trains them all so); official SinGAN's for SinGAN and AGAN."""
    from configs import consingan as con_cfg

    assert tiny_config("consingan").train.update_rule == "auto"
    assert _rule(tiny_config("consingan")) == "consingan"
    cfg = tiny_config("consingan")
    cfg.model.batch_norm = True
    assert _rule(cfg) == "consingan"
    for mode in ("harmonization", "editing"):
        c = con_cfg.get_config(f"{mode},tiny")
        assert c.model.batch_norm and _rule(c) == "consingan"
    assert _rule(tiny_config("agan")) == "singan"
    assert _rule(tiny_config("singan")) == "singan"
    cfg.train.update_rule = "fresh"
    assert _rule(cfg) == "fresh"
    cfg = tiny_config("singan")
    cfg.train.update_rule = "fresh"
    assert _rule(cfg) == "fresh"


def test_batchnorm_uses_batch_statistics_in_sampling():
    """With BatchNorm (harmonization, editing) every block normalises with the
    statistics of the image it is given, in training and in sampling, as official
    ConSinGAN (never in eval mode) does: the stored running averages play no part,
    and an image in a batch of two is normalised with the pair's statistics (so
    the sampler vmaps one image per batch)."""
    spec = model_spec("consingan", batch_norm=True, mode="harmonization")
    gen = FAMILY.make_generator(spec, 1)
    sizes = [(12, 14), (16, 19)]
    k = jax.random.split(jax.random.key(0), 4)
    zs = [jax.random.normal(k[0], (2, *sizes[0], 3))]
    zs.append(jax.random.normal(k[1], (2, *consingan.noise_shape(spec, sizes[1], 1))))
    amps = jnp.asarray([1.0, 0.3])
    variables = gen.init(k[2], [z[:1] for z in zs], amps)
    assert "batch_stats" in variables

    def run(v, z, train):
        (out, _), _ = gen.apply(v, z, amps, train=train, mutable=["batch_stats"])
        return np.asarray(out)

    sample = run(variables, zs, False)
    np.testing.assert_allclose(sample, run(variables, zs, True), rtol=0, atol=0)
    # Running averages far from the batch's: the output does not change.
    odd = jax.tree.map(lambda x: x + 100.0, variables["batch_stats"])
    np.testing.assert_allclose(
        run({**variables, "batch_stats": odd}, zs, False), sample, atol=0
    )
    # With running statistics an image alone would equal it in the pair.
    alone = run(variables, [z[:1] for z in zs], False)
    assert np.abs(alone[0] - sample[0]).max() > 1e-4
