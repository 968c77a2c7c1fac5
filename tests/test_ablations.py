"""Ablations (issue 12): composed methods of launch.compare switch one AGAN
component each; the TV reductions against NumPy; the warm-start switch; the
per-stage diagnostics (agan_jax/diagnostics.py, launch.evaluate --per_stage)."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agan_jax import (
    checkpoint,
    diagnostics,
    losses,
    methods,
    metrics,
    pyramid,
    sampling,
    settings,
)
from agan_jax.errors import UserError
from agan_jax.models import families
from tests.conftest import BUNDLED_IMAGE
from tests.test_launch import launch


def _settings(method: str, iters: int | None = None) -> settings.Settings:
    config = methods.method_config(method, "tiny", BUNDLED_IMAGE, iters)
    return settings.Settings.from_config(config)


def _flat(s: settings.Settings) -> dict[str, object]:
    out = {}
    for section, value in dataclasses.asdict(s).items():
        if isinstance(value, dict):
            out.update({f"{section}.{k}": v for k, v in value.items()})
        else:
            out[section] = value
    return out


def _changes(method: str, base: str) -> dict[str, object]:
    new, old = _flat(_settings(method)), _flat(_settings(base))
    assert new.keys() == old.keys()
    return {k: new[k] for k in new if new[k] != old[k]}


# --- composed methods --------------------------------------------------------


@pytest.mark.parametrize(
    "method, base, changed",
    [
        ("agan3-no-tv", "agan3", {"loss.tv_weight": 0.0}),
        ("agan3-tv-sum", "agan3", {"loss.tv_reduction": "sum"}),
        ("agan3-tv-pytorch", "agan3", {"loss.tv_reduction": "pytorch"}),
        ("agan3-no-attention", "agan3", {"model.kind": "singan"}),
        ("agan3-no-warm", "agan3", {"model.warm_start": False}),
        ("agan3-res-blend", "agan3", {"model.blend": "residual"}),
        ("singan-no-warm", "singan", {"model.warm_start": False}),
        ("singan-circ", "singan", {"pyramid.schedule": "circ"}),
        ("agan3-cos", "agan3", {"pyramid.schedule": "cos"}),
        ("agan1-geometric", "agan1", {"pyramid.schedule": "geometric"}),
        (
            "agan2-no-tv-circ-no-warm",
            "agan2",
            {
                "loss.tv_weight": 0.0,
                "pyramid.schedule": "circ",
                "model.warm_start": False,
            },
        ),
        (
            "agan3-no-attention-tv-sum",
            "agan3",
            {"model.kind": "singan", "loss.tv_reduction": "sum"},
        ),
        ("agan3-min-step", "agan3", {"pyramid.min_step": 1.1}),
        ("agan3-noise-floor", "agan3", {"loss.noise_amp_floor": 0.02}),
        ("agan3-tv-from-1", "agan3", {"loss.tv_from_stage": 1}),
        ("agan3-iters-by-step", "agan3", {"train.iters_by_step": True}),
        ("singan-noise-floor", "singan", {"loss.noise_amp_floor": 0.02}),
        (
            "agan3-min-step-noise-floor-tv-from-1-iters-by-step",
            "agan3",
            {
                "pyramid.min_step": 1.1,
                "loss.noise_amp_floor": 0.02,
                "loss.tv_from_stage": 1,
                "train.iters_by_step": True,
            },
        ),
    ],
)
def test_modifier_changes_exactly_its_fields(method, base, changed):
    assert _changes(method, base) == changed


def test_parse_method_reads_modifiers_in_order():
    assert methods.parse_method("agan3") == ("agan3", [])
    assert methods.parse_method("agan3-tv-pytorch-no-warm-quad") == (
        "agan3",
        ["tv-pytorch", "no-warm", "quad"],
    )


@pytest.mark.parametrize(
    "method, message",
    [
        ("agan3-no-foo", "unknown modifier 'no-foo' in method 'agan3-no-foo'"),
        ("agan3-tv", "unknown modifier 'tv'"),
        ("agan3-cos-attention", "unknown modifier 'attention'"),
        ("agan9-no-tv", "unknown method 'agan9-no-tv'"),
        ("agan3-tv-sum-no-tv", "two tv modifiers"),
        ("agan3-cos-quad", "two schedule modifiers"),
        ("singan-no-tv", "loss.tv_weight=0"),
        ("singan-tv-sum", "loss.tv_weight=0"),
        ("singan-no-attention", "this base trains model.kind=singan"),
        ("agan3-circ", "changes nothing"),
        ("singan-geometric", "changes nothing"),
        ("consingan-no-warm", "'no-warm' applies to singan, agan"),
        ("singan-res-blend", "'res-blend' changes AGAN's attention blend"),
        ("agan3-no-attention-res-blend", "this base trains model.kind=singan"),
        ("singan-tv-from-1", "loss.tv_weight=0"),
        ("agan3-no-tv-tv-from-1", "loss.tv_weight=0"),
        ("agan3-min-step-min-step", "two min_step modifiers"),
    ],
)
def test_bad_methods_are_user_errors(method, message):
    with pytest.raises(UserError, match=message):
        methods.method_config(method, "tiny", BUNDLED_IMAGE, None)


def test_unknown_modifier_lists_the_valid_ones():
    with pytest.raises(UserError) as e:
        methods.parse_method("agan3-no-foo")
    for modifier in methods.MODIFIERS:
        assert modifier in str(e.value)
    for schedule in ("geometric", "cos", "quad", "circ"):
        assert schedule in str(e.value)


def test_compare_cli_refuses_unknown_modifier_and_documents_them(tmp_path):
    p = launch(
        "launch.compare",
        f"--image={BUNDLED_IMAGE}",
        "--size=tiny",
        f"--out={tmp_path / 'c'}",
        "--methods=agan3,agan3-no-foo",
    )
    assert p.returncode == 2, p.stderr
    assert "unknown modifier 'no-foo'" in p.stderr and "tv-pytorch" in p.stderr
    assert not (tmp_path / "c").exists()  # refused before any training
    p = launch("launch.compare", "--help")  # absl's --help exits with status 1
    assert "--methods:" in p.stdout, p.stderr
    text = " ".join(p.stdout.split())
    for modifier in methods.MODIFIERS:
        assert f"{modifier}:" in text
    assert "BASE[-MODIFIER...]" in text


# --- TV reductions ---------------------------------------------------------------


def _tv_sum_reference(x: np.ndarray) -> float:
    """AGAN eq. 13 as written: every squared difference of adjacent pixels summed."""
    x = x.astype(np.float64)
    return float(np.sum((x[1:] - x[:-1]) ** 2) + np.sum((x[:, 1:] - x[:, :-1]) ** 2))


def _tv_pytorch_reference(x_nchw: np.ndarray) -> float:
    """The TVLoss module common in PyTorch code, on an NCHW batch:
    2 * (h_tv / count_h + w_tv / count_w) / batch_size, where h_tv and w_tv sum
    the squared differences along H and W and count_* = C * H' * W' of the
    shifted tensors (without the batch)."""
    x = x_nchw.astype(np.float64)
    batch, c, h, w = x.shape
    count_h = c * (h - 1) * w
    count_w = c * h * (w - 1)
    h_tv = np.sum((x[:, :, 1:, :] - x[:, :, : h - 1, :]) ** 2)
    w_tv = np.sum((x[:, :, :, 1:] - x[:, :, :, : w - 1]) ** 2)
    return float(2 * (h_tv / count_h + w_tv / count_w) / batch)


def test_tv_reductions_match_numpy_references():
    x = np.random.default_rng(3).uniform(-1, 1, (6, 9, 3)).astype(np.float32)
    xj = jnp.asarray(x)
    mean = float(losses.total_variation(xj, "mean"))
    np.testing.assert_allclose(
        float(losses.total_variation(xj, "pytorch")),
        _tv_pytorch_reference(x.transpose(2, 0, 1)[None]),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        float(losses.total_variation(xj, "sum")), _tv_sum_reference(x), rtol=1e-6
    )
    # The three differ on a non-square image: pytorch is twice the mean.
    assert float(losses.total_variation(xj, "pytorch")) == pytest.approx(2 * mean)
    assert float(losses.total_variation(xj, "sum")) > 10 * mean


def test_blend_setting_reaches_the_generator():
    spec = _settings("agan3-res-blend").model
    assert spec.blend == "residual"
    assert families.of(spec).make_generator(spec, 1).blend == "residual"
    assert _settings("agan3").model.blend == "convex"
    config = methods.method_config("agan3", "tiny", BUNDLED_IMAGE, None)
    config.model.blend = "additive"
    with pytest.raises(UserError, match="model.blend.*must be one of convex, residual"):
        settings.Settings.from_config(config)


def test_every_tv_reduction_reads_and_runs():
    assert settings.TV_REDUCTIONS == losses.TV_REDUCTIONS
    config = methods.method_config("agan3-tv-pytorch", "tiny", BUNDLED_IMAGE, None)
    assert settings.Settings.from_config(config).loss.tv_reduction == "pytorch"
    config.loss.tv_reduction = "median"
    with pytest.raises(UserError, match="must be one of mean, sum, pytorch"):
        settings.Settings.from_config(config)
    with pytest.raises(ValueError, match="median"):
        losses.total_variation(jnp.zeros((4, 4, 3)), "median")


# --- warm start ------------------------------------------------------------------


def _params(tree, name):
    return jax.tree.leaves(tree["params"][name])


def _same(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("warm", [True, False])
def test_warm_start_switch_at_stage_init(tiny_agan_run, warm):
    """AGAN stage 1 from the stage-0 weights of a trained run: warm, G_A and the
    critic are copied (G_B is fresh); cold, everything equals a fresh init."""
    workdir, run = tiny_agan_run
    store = checkpoint.RunStore(workdir)
    prev_d = store.load_d_vars(0)
    store.close()
    prev_g = run.g_vars[0]
    spec = dataclasses.replace(run.spec, warm_start=warm)
    model = families.of(spec).make_stage(spec, run.sizes, 1)
    key = jax.random.key(7)
    g, d, _ = model.init(key, prev_g, prev_d)
    fresh_g, fresh_d, _ = model.init(key, None, None)
    assert _same(_params(fresh_g, "G_B"), _params(g, "G_B"))
    if warm:
        assert _same(_params(g, "G_A"), _params(prev_g, "G_A"))
        assert _same(_params(d, "D"), _params(prev_d, "D"))
    else:
        assert not _same(_params(g, "G_A"), _params(prev_g, "G_A"))
        assert _same(_params(g, "G_A"), _params(fresh_g, "G_A"))
        assert _same(_params(d, "D"), _params(fresh_d, "D"))


# --- per-stage diagnostics -------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny_agan_run", "tiny_singan_run"])
def test_per_stage_rows(name, request):
    workdir, run = request.getfixturevalue(name)
    n, seed = 3, 5
    sampler = sampling.Sampler(run)
    rows = diagnostics.per_stage(sampler, num_samples=n, seed=seed)
    assert len(rows) == run.num_stages == 3
    reals = pyramid.build(jnp.asarray(run.real), run.sizes)
    has_attention = name == "tiny_agan_run"
    for s, row in enumerate(rows):
        assert set(row) == {key for _, key in diagnostics.COLUMNS}
        assert row["stage"] == s and tuple(row["size"]) == tuple(run.sizes[s])
        real = np.asarray(reals[s], np.float64)
        assert real.shape[:2] == tuple(run.sizes[s])
        assert row["real_std"] == pytest.approx(float(np.std(real)), rel=1e-6)
        assert row["std_ratio"] == pytest.approx(row["sample_std"] / row["real_std"])
        assert 0 < row["diversity"] < 5
        assert row["noise_amp"] == pytest.approx(float(run.noise_amps[s]), rel=1e-7)
        rec = np.asarray(sampler.reconstruct(s + 1), np.float64)
        rmse = np.sqrt(np.mean((rec - real) ** 2))
        assert row["rec_rmse"] == pytest.approx(rmse, rel=1e-6)
        assert row["sample_std"] > 0
        blend = ("input_diversity", "proposal_diversity", "proposal_corr")
        if has_attention and s > 0:
            assert 0.0 <= row["attention"] <= 1.0
            assert all(row[k] is not None for k in blend)
        else:
            assert row["attention"] is None
            assert all(row[k] is None for k in blend)
    # The finest stage's samples are those of Sampler.sample with the same keys.
    images, maps = sampler.sample(jax.random.key(seed), n, with_attention=True)
    flat = np.asarray(images, np.float64).reshape(n, -1)
    # SinGAN's diversity by hand: grey per-pixel std over the samples / std(grey real).
    grey = np.asarray(images, np.float64) @ np.array([0.299, 0.587, 0.114])
    real_grey = np.asarray(reals[-1], np.float64) @ np.array([0.299, 0.587, 0.114])
    want = np.mean(np.std(grey, axis=0)) / np.std(real_grey)
    assert rows[-1]["diversity"] == pytest.approx(want, rel=1e-5)
    assert rows[-1]["sample_std"] == pytest.approx(np.mean(np.std(flat, axis=1)), 1e-5)
    if has_attention:
        assert len(maps) == 2
        assert rows[-1]["attention"] == pytest.approx(float(np.mean(maps[-1])), 1e-5)
    # Stage 0 stopped early: not the finest samples' spread.
    assert rows[0]["sample_std"] != pytest.approx(rows[-1]["sample_std"], rel=1e-6)


def test_per_stage_of_a_partially_trained_run(tiny_agan_run):
    """A run stopped after 2 of its 3 stages (as while it trains) gets the first
    2 rows of the whole run: each stage's real image resized from the image at
    the finest size, not from a pyramid that ends at the last trained stage."""
    _, run = tiny_agan_run
    part = dataclasses.replace(
        run, g_vars=run.g_vars[:2], noise_amps=run.noise_amps[:2]
    )
    assert not part.complete and len(part.reals()) == 2
    rows = diagnostics.per_stage(part, num_samples=3, seed=1)
    assert rows == diagnostics.per_stage(run, num_samples=3, seed=1)[:2]


@pytest.mark.parametrize("blend", ["convex", "residual"])
def test_per_stage_blend_columns_rebuild_the_samples(tiny_agan_run, blend):
    """AGAN's input x and proposal x_hat of each stage, as the diagnostics draw
    them, give back that stage's samples through eq. 12; the blend columns are
    their diversities and their per-pixel correlation (NumPy reference). With
    model.blend=residual (the trained weights sampled as that generator), x_hat
    is x + tanh(G_A(...)): within 1 of x, not of 0."""
    _, trained = tiny_agan_run
    run = dataclasses.replace(
        trained, spec=dataclasses.replace(trained.spec, blend=blend)
    )
    n, seed = 4, 3
    sampler = sampling.Sampler(run)
    convex = sampling.Sampler(trained) if blend == "residual" else None
    rows = diagnostics.per_stage(sampler, num_samples=n, seed=seed)
    key = jax.random.key(seed)
    reals = pyramid.build(jnp.asarray(run.real), run.sizes)
    grey = np.array([0.299, 0.587, 0.114])
    below, _ = diagnostics.stage_samples(sampler, key, n, 1, True)
    for s in range(1, run.num_stages):
        images, maps = diagnostics.stage_samples(sampler, key, n, s + 1, True)
        x, x_hat = (
            np.asarray(a, np.float64)
            for a in diagnostics.stage_proposals(sampler, key, s, below)
        )
        assert x.shape == x_hat.shape == (n, *run.sizes[s], 3)
        if blend == "convex":
            assert np.all(np.abs(x_hat) <= 1.0)  # G_A ends in tanh
        else:  # the same weights' tanh proposal, added to x
            _, tanh_part = diagnostics.stage_proposals(convex, key, s, below)
            np.testing.assert_allclose(x_hat, x + np.asarray(tanh_part), atol=1e-5)
        c = np.asarray(maps[-1], np.float64)
        np.testing.assert_allclose(
            x_hat * c + x * (1.0 - c), np.asarray(images, np.float64), atol=1e-5
        )
        real = np.asarray(reals[s], np.float64)
        row = rows[s]
        assert row["input_diversity"] == pytest.approx(
            metrics.pixel_diversity(x, real), rel=1e-6
        )
        assert row["proposal_diversity"] == pytest.approx(
            metrics.pixel_diversity(x_hat, real), rel=1e-6
        )
        ga, gb = x_hat @ grey, x @ grey
        want = np.mean(
            [
                np.corrcoef(ga[:, i, j], gb[:, i, j])[0, 1]
                for i, j in np.ndindex(ga.shape[1:])
            ]
        )
        assert row["proposal_corr"] == pytest.approx(want, rel=1e-6, abs=1e-9)
        assert -1.0 <= row["proposal_corr"] <= 1.0
        below = images


def test_evaluate_per_stage_cli_writes_tables(tiny_agan_run, tiny_singan_run, tmp_path):
    out = tmp_path / "diag"
    p = launch(
        "launch.evaluate",
        f"--workdirs={tiny_agan_run[0]},{tiny_singan_run[0]}",
        "--per_stage",
        "--num_samples=2",
        f"--out={out}",
    )
    assert p.returncode == 0, p.stderr
    md = (out / "per_stage.md").read_text()
    assert md.count("| stage | size | sample std | real std |") == 2
    assert "AGAN(3)" in md and "SinGAN" in md and "| stage |" in p.stdout
    data = json.loads((out / "per_stage.json").read_text())
    assert data["num_samples"] == 2 and len(data["runs"]) == 2
    agan_rows, singan_rows = (r["stages"] for r in data["runs"])
    run = tiny_agan_run[1]
    assert [r["noise_amp"] for r in agan_rows] == pytest.approx(
        [float(a) for a in run.noise_amps]
    )
    assert agan_rows[0]["attention"] is None
    assert all(0 <= r["attention"] <= 1 for r in agan_rows[1:])
    assert all(r["attention"] is None for r in singan_rows)
    assert not (out / "evaluation.json").exists()  # the metrics are not computed
