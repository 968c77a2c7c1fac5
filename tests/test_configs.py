"""Configs: variants, schedules and the defaults every config shows
(configs/default.py)."""

from __future__ import annotations

import dataclasses
import json

import jax
import pytest

from agan_jax import methods, settings
from agan_jax.errors import UserError
from configs import agan, consingan, default, singan


def test_defaults_visible():
    c = default.get_config()
    assert c.data.max_size == 64 and c.data.min_size == 25
    assert (c.train.d_steps, c.train.g_steps) == (3, 3)
    assert c.train.lr_g == c.train.lr_d == 5e-4 and c.train.beta1 == 0.5
    assert (c.train.lr_milestone, c.train.gamma) == (0.8, 0.1)
    assert (c.loss.lambda_gp, c.loss.alpha) == (0.1, 10.0)
    assert c.noise_amp_base == 0.1 and c.seed == 0
    assert c.model.nfc == 32 and c.model.num_layers == 5 and c.model.batch_norm


@pytest.mark.parametrize(
    "arg,schedule", [(None, "circ"), ("cos", "cos"), ("quad", "quad")]
)
def test_agan_schedules(arg, schedule):
    c = agan.get_config(arg)
    assert c.pyramid.schedule == schedule and c.model.kind == "agan"
    assert c.loss.tv_weight == 1.0 and c.pyramid.num_stages == 6


def test_variants():
    assert agan.get_config("quad,tiny").data.max_size == 32
    g = singan.get_config("gpu")
    assert g.data.max_size == 250 and g.train.iters_per_stage == 2000
    assert g.model.kind == "singan" and g.loss.tv_weight == 0.0
    with pytest.raises(ValueError, match="unknown config variant"):
        agan.get_config("huge")
    with pytest.raises(ValueError, match="one AGAN schedule"):
        agan.get_config("cos,quad")


def _flat(config) -> dict:
    return {
        f"{section}.{k}": v
        for section, fields in config.to_dict().items()
        if isinstance(fields, dict)
        for k, v in fields.items()
    }


@pytest.mark.parametrize(
    "arg, changed",
    [
        ("tv-from-1,tiny", {"loss.tv_from_stage": 1}),
        (
            "tiny,geometric,tv-from-1",
            {"pyramid.schedule": "geometric", "loss.tv_from_stage": 1},
        ),
        ("noise-floor,gpu", {"loss.noise_amp_floor": methods.NOISE_FLOOR}),
    ],
)
def test_agan_named_variants_change_exactly_their_fields(arg, changed):
    size = "gpu" if "gpu" in arg else "tiny"
    base, got = _flat(agan.get_config(size)), _flat(agan.get_config(arg))
    assert {k: v for k, v in got.items() if base[k] != v} == changed
    # The same config as launch.compare's method of the same name.
    name = "-".join(["agan3", *(t for t in arg.split(",") if t not in ("tiny", "gpu"))])
    same = methods.method_config(name, size, got["data.image"], None)
    assert _flat(same) == got


def test_agan_named_variants_are_checked():
    with pytest.raises(ValueError, match="unknown config variant 'tv-from-2'"):
        agan.get_config("tv-from-2")
    with pytest.raises(UserError, match="two tv modifiers"):
        agan.get_config("no-tv,tv-sum")
    assert agan.get_config("no-tv").loss.tv_weight == 0.0


def test_new_defaults_visible():
    c = default.get_config()
    assert c.data.min_size_ratio == 0.0
    assert (c.model.train_depth, c.model.lr_scale) == (3, 0.1)
    assert (c.model.mode, c.model.leaky_slope) == ("generation", 0.05)
    assert c.train.adam_eps == 1e-8 and c.train.remat is False
    assert c.train.update_rule == "auto" and c.train.compile_unit == "auto"
    a = c.augment
    assert (a.p_colour, a.p_noise, a.p_cutout, a.p_tiles) == (0.5, 0.5, 0.5, 0.5)
    assert (a.noise_std, a.cutout_max, a.tiles) == (0.1, 0.4, 4)


def test_settings_have_no_defaults_of_their_own():
    """Every default lives in configs/default.py: no settings field has one."""
    for cls in (
        settings.Settings,
        settings.DataSettings,
        settings.PyramidSettings,
        settings.ModelSpec,
        settings.TrainSettings,
        settings.LossSettings,
        settings.AugmentSettings,
    ):
        for f in dataclasses.fields(cls):
            assert f.default is dataclasses.MISSING, (cls.__name__, f.name)
            assert f.default_factory is dataclasses.MISSING, (cls.__name__, f.name)


def test_settings_from_config_and_from_run_json_agree():
    config = agan.get_config("tiny")
    s = settings.Settings.from_config(config)
    as_json = json.loads(json.dumps(settings.config_to_dict(config)))
    assert settings.Settings.from_config(as_json) == s
    assert s.model.kind == "agan" and s.pyramid.schedule == "circ"
    assert s.train.iters == 20 and s.train.xla_opt_level == 0  # tiny: LLVM O0
    # Loss weights and the noise amplitude rule are the loss settings.
    assert s.loss == settings.LossSettings(
        lambda_gp=0.1,
        alpha=10.0,
        tv_weight=1.0,
        tv_reduction="mean",
        tv_from_stage=0,
        noise_amp_base=0.1,
        noise_amp_floor=0.0,
    )
    if jax.default_backend() == "cpu":  # steps_per_call 0: the backend's default
        assert s.train.steps_per_call == 1
    as_json["train"]["remat"] = "True"  # strings are read as their values
    as_json["train"]["iters_per_stage"] = "30"
    t = settings.Settings.from_config(as_json).train
    assert t.remat is True and t.iters == 30


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["train"].pop("adam_eps"), "no field train.adam_eps"),
        (lambda c: c.pop("augment"), "no 'augment' section"),
        (
            lambda c: c["train"].update(iters_per_stage="many"),
            "config.train.iters_per_stage = 'many': must be an integer",
        ),
        (
            lambda c: c["train"].update(d_steps=2.5),
            "config.train.d_steps = 2.5: must be an integer",
        ),
        (lambda c: c["model"].update(batch_norm="maybe"), "model.batch_norm"),
        (
            lambda c: c["pyramid"].update(r0=1.5),
            r"config.pyramid.r0 = 1.5: must be a finite number in \(0, 1\)",
        ),
        (
            lambda c: c["pyramid"].update(schedule="cosine"),
            "config.pyramid.schedule = 'cosine': must be one of",
        ),
        (
            lambda c: c["data"].update(min_size_ratio=2.0),
            "config.data.min_size_ratio = 2.0: must be a finite number in",
        ),
        (
            lambda c: c["model"].update(train_depth=0),
            "config.model.train_depth = 0: must be an integer >= 1",
        ),
        (
            lambda c: c["augment"].update(tiles=0),
            "config.augment.tiles = 0: must be an integer >= 1",
        ),
        (
            lambda c: c.update(noise_amp_base=float("nan")),
            "config.noise_amp_base = nan: must be a finite number >= 0",
        ),
        (
            lambda c: c["loss"].update(tv_reduction="median"),
            "config.loss.tv_reduction = 'median': must be one of mean, sum",
        ),
        (lambda c: c["train"].pop("lr_decay_iter"), "no field train.lr_decay_iter"),
        (
            lambda c: c["train"].update(update_rule="sometimes"),
            "config.train.update_rule = 'sometimes': must be one of",
        ),
    ],
)
def test_bad_settings_are_named(edit, message):
    c = settings.config_to_dict(singan.get_config("tiny"))
    edit(c)
    with pytest.raises(UserError, match=message):
        settings.Settings.from_config(c)


def test_consingan_modes_and_derived_min_size():
    c = consingan.get_config()
    assert c.model.kind == "consingan" and c.pyramid.schedule == "log"
    assert (c.model.nfc, c.model.num_layers, c.model.batch_norm) == (64, 3, False)
    assert consingan.get_config("retarget").model.mode == "retarget"
    with pytest.raises(ValueError, match="one ConSinGAN mode"):
        consingan.get_config("retarget,animation")
    # Harmonization: BatchNorm, 3 stages, the coarsest ~0.48 x max_size, computed
    # from max_size after command-line overrides.
    h = consingan.get_config("harmonization")
    assert h.model.batch_norm and h.pyramid.num_stages == 3
    assert h.data.min_size_ratio == 0.48
    assert settings.Settings.from_config(h).data.min_size == round(0.48 * 64)
    h.data.max_size = 250  # --config.data.max_size=250
    assert settings.Settings.from_config(h).data.min_size == 120
    tiny = consingan.get_config("editing,tiny")
    assert settings.Settings.from_config(tiny).data.min_size == 16  # tiny's own
    assert consingan.get_config("harmonization,gpu").train.iters_per_stage == 1000
    # Without a ratio, min_size is used as given.
    assert settings.Settings.from_config(c).data.min_size == c.data.min_size == 25


def test_learning_rate_step_per_family():
    """SinGAN/AGAN: official SinGAN's MultiStepLR(milestones=[1600]), stepped at
    the start of every iteration, so iterations 1599.. train at lr x gamma;
    ConSinGAN (and the default): x gamma from round(0.8 x iters) on."""
    assert default.get_config().train.lr_decay_iter == -1
    for cfg in (singan.get_config(), agan.get_config(), singan.get_config("gpu")):
        assert cfg.train.lr_decay_iter == 1599
        t = settings.Settings.from_config(cfg).train
        assert t.decay_iter == 1599
        assert t.decay_boundary(3) == 1599 * 3
    c = consingan.get_config()
    assert c.train.lr_decay_iter == -1
    t = settings.Settings.from_config(c).train
    assert t.decay_iter == 160  # 0.8 x 200
    assert t.decay_boundary(3) == 480
    g = settings.Settings.from_config(consingan.get_config("gpu")).train
    assert g.decay_iter == 1600 and g.decay_boundary(1) == 1600
    # Iterations at the CPU size never reach SinGAN's step.
    assert settings.Settings.from_config(singan.get_config()).train.iters < 1599


def test_tv_reduction_default_and_agan_weight():
    for cfg in (default.get_config(), agan.get_config(), consingan.get_config()):
        assert cfg.loss.tv_reduction == "mean"
    assert agan.get_config().loss.tv_weight == 1.0
    assert singan.get_config().loss.tv_weight == 0.0
    assert consingan.get_config().loss.tv_weight == 0.0


def test_consingan_recipes_per_mode():
    """ConSinGAN's README / main_train.py recipes, at 250 px (`:gpu`)."""
    read = settings.Settings.from_config
    h = read(consingan.get_config("harmonization,gpu"))
    assert (h.pyramid.num_stages, h.data.min_size) == (3, 120)
    assert (h.model.leaky_slope, h.model.batch_norm) == (0.3, True)
    assert h.train.iters == 1000
    e = read(consingan.get_config("editing,gpu"))
    assert (e.pyramid.num_stages, e.data.min_size, e.data.min_size_ratio) == (6, 25, 0)
    assert (e.model.leaky_slope, e.model.batch_norm) == (0.05, True)
    assert e.train.iters == 1000
    a = read(consingan.get_config("animation,gpu"))
    assert (a.data.min_size, a.model.batch_norm, a.train.iters) == (20, False, 2000)
    for mode in ("generation", "retarget"):
        g = read(consingan.get_config(f"{mode},gpu"))
        assert (g.pyramid.num_stages, g.data.min_size) == (6, 25)
        assert (g.model.leaky_slope, g.model.batch_norm) == (0.05, False)
        assert g.train.iters == 2000
    # CPU-sized: 200 iterations in every mode.
    for mode in consingan.MODES:
        assert read(consingan.get_config(mode)).train.iters == 200


@pytest.mark.parametrize(
    "name,arg,rule",
    [
        ("singan", None, "singan"),
        ("agan", None, "singan"),
        ("agan", "cos", "singan"),
        ("consingan", None, "consingan"),
        ("consingan", "harmonization", "consingan"),
        ("consingan", "editing", "consingan"),
        ("consingan", "animation", "consingan"),
    ],
)
def test_auto_update_rule_is_the_family_own(name, arg, rule):
    from agan_jax.models import families
    from agan_jax.train import updates

    mod = {"singan": singan, "agan": agan, "consingan": consingan}[name]
    s = settings.Settings.from_config(mod.get_config(arg))
    assert s.train.update_rule == "auto"
    family = families.of(s.model)
    assert updates.resolve_rule(family, s.model, s.train) == rule
    # SinGAN and AGAN may also train with our earlier rule; ConSinGAN only its own.
    other = "fresh" if name != "consingan" else "singan"
    t = dataclasses.replace(s.train, update_rule=other)
    if name != "consingan":
        assert updates.resolve_rule(family, s.model, t) == "fresh"
    else:
        with pytest.raises(UserError, match="not a rule of consingan"):
            updates.resolve_rule(family, s.model, t)
