"""Configs: variants, schedules and the defaults SPEC 10 asks to be visible."""

from __future__ import annotations

import pytest

from configs import agan, default, singan


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
