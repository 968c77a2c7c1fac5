"""The family registry: a new family is one record plus one registry line, and the
one stage loop, checkpoints and sampling train and sample it unchanged."""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from agan_jax import checkpoint, sampling, train
from agan_jax.errors import UserError
from agan_jax.models import families, singan
from agan_jax.models.layers import conv_init, pad_hw
from tests.conftest import tiny_config


class ToyGenerator(nn.Module):
    """prev + tanh(conv(pad(prev + noise_amp * z))): one 3x3 convolution."""

    features: int

    @nn.compact
    def __call__(self, prev, z, noise_amp, train: bool = False):
        x = pad_hw(prev + noise_amp * z, 1)
        out = nn.Conv(3, (3, 3), padding="VALID", kernel_init=conv_init)(x)
        return prev + jnp.tanh(out), None


def make_toy_generator(spec, stage):
    return ToyGenerator(spec.width(stage))


TOY = singan.family("toy", make_toy_generator, lambda schedule: "Toy")


@pytest.fixture
def toy_registered(monkeypatch):
    monkeypatch.setitem(families.FAMILIES, "toy", TOY)
    return TOY


def test_registry_knows_every_kind():
    assert set(families.KINDS) == {"singan", "agan", "consingan"}
    for kind in families.KINDS:
        assert families.get(kind).kind == kind
    with pytest.raises(UserError, match="unknown model kind 'gan'.*singan, agan"):
        families.get("gan")


def test_a_toy_family_trains_and_samples_through_the_one_loop(toy_registered, tmp_path):
    config = tiny_config("singan")
    config.model.kind = "toy"
    config.train.iters_per_stage = 6
    config.train.log_every = 3
    workdir = str(tmp_path / "toy")
    run = train.train(config, workdir, progress=False)
    assert run.num_stages == len(run.sizes) >= 2
    # The toy generator has exactly one conv per stage.
    params = run.g_vars[-1]["params"]
    assert set(params) == {"Conv_0"}
    assert params["Conv_0"]["kernel"].shape == (3, 3, 3, 3)
    # Every stage trained and logged finite losses.
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    logged = [r for r in records if "iter" in r]
    assert {r["stage"] for r in logged} == set(range(run.num_stages))
    assert all(np.isfinite(r["d_loss"]) and np.isfinite(r["rec"]) for r in logged)
    # Sampling and checkpoints read it as any other run.
    loaded = checkpoint.load_run(workdir)
    assert loaded.spec.kind == "toy"
    images = sampling.Sampler(loaded).sample(jax.random.key(1), 3)
    assert images.shape == (3, *run.sizes[-1], 3)
    assert np.isfinite(np.asarray(images)).all()


def test_unregistered_kind_fails_before_any_work(tmp_path):
    config = tiny_config("singan")
    config.model.kind = "toy"
    workdir = tmp_path / "x"
    with pytest.raises(UserError, match="unknown model kind 'toy'"):
        train.train(config, str(workdir), progress=False)
    assert not workdir.exists()


def test_a_family_refuses_an_update_rule_it_does_not_have(tmp_path):
    config = tiny_config("singan")
    config.train.update_rule = "consingan"
    with pytest.raises(UserError, match="not a rule of singan"):
        train.train(config, str(tmp_path / "x"), progress=False)
    assert not (tmp_path / "x").exists()


def test_family_records_name_their_own_hooks():
    # Each record is built explicitly from its module's functions (a misspelled
    # hook would be a TypeError at import, not a silent default).
    from agan_jax.models import agan, consingan

    con = families.get("consingan")
    assert con.check is consingan.check and con.default_rule is consingan.default_rule
    assert con.make_stage is consingan.make_stage and con.forward is consingan.forward
    assert con.can_finetune and not con.stage_generators and not con.attention
    for fam, module in ((families.get("singan"), singan), (families.get("agan"), agan)):
        assert fam.make_generator is module.make_generator
        assert fam.make_discriminator is singan.make_discriminator
        assert fam.rec_noises is singan.rec_noises
        assert fam.stage_generators and not fam.can_finetune
    assert families.get("agan").attention and not families.get("singan").attention
    assert not hasattr(families.Family, "from_hooks")
    with pytest.raises(TypeError, match="make_stag"):
        dataclasses.replace(con, make_stag=con.make_stage)
