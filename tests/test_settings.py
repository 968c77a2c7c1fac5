"""Settings read once: every field from configs/default.py, derived values after
overrides, clear errors; nothing else in the package reads the ConfigDict."""

from __future__ import annotations

import dataclasses
import os
import re

import pytest

from agan_jax import pyramid, settings
from agan_jax.errors import UserError
from agan_jax.models import families
from agan_jax.train import loop
from configs import consingan, default
from tests.conftest import ROOT, tiny_config

# Settings field -> config key, where they differ.
KEYS = {
    ("train", "iters"): "iters_per_stage",
    ("train", "xla_opt_level"): "xla_backend_opt_level",
}


def _fields():
    for section in ("data", "pyramid", "model", "train", "loss", "augment"):
        cls = type(
            getattr(settings.Settings.from_config(default.get_config()), section)
        )
        for f in dataclasses.fields(cls):
            yield section, KEYS.get((section, f.name), f.name)


@pytest.mark.parametrize("name", ["default", "singan", "agan", "consingan"])
def test_every_config_reads(name):
    config = tiny_config(name) if name != "default" else default.get_config("tiny")
    s = settings.Settings.from_config(config)
    assert s.train.iters == config.train.iters_per_stage
    assert s.loss.noise_amp_base == config.noise_amp_base
    # A plain dict (run.json) reads the same.
    assert settings.Settings.from_config(settings.config_to_dict(config)) == s


@pytest.mark.parametrize("section,key", list(_fields()))
def test_every_field_read_is_in_default_config(section, key):
    """Each field the settings read exists in configs/default.py; without it the
    error names the field."""
    config = settings.config_to_dict(default.get_config())
    section_name = (
        "config" if section == "loss" and key == "noise_amp_base" else section
    )
    if section_name == "config":
        del config[key]
    else:
        assert key in config[section], f"{section}.{key} missing from default.py"
        del config[section][key]
    with pytest.raises(UserError, match=re.escape(key)):
        settings.Settings.from_config(config)


def test_adam_eps_is_a_config_field():
    config = default.get_config()
    config.lock()  # as launchers do: an unknown field would raise here
    config.train.adam_eps = 1e-6
    assert settings.Settings.from_config(config).train.adam_eps == 1e-6


def test_harmonization_min_size_derived_after_overrides():
    """--config.data.max_size=250 on :harmonization gives the :harmonization,gpu
    pyramid (min_size derived from max_size after the override)."""
    cpu = consingan.get_config("harmonization")
    cpu.data.max_size = 250
    gpu = consingan.get_config("harmonization,gpu")
    a, b = settings.Settings.from_config(cpu), settings.Settings.from_config(gpu)
    assert a.data.min_size == b.data.min_size == 120
    sizes = []
    for s in (a, b):
        image, original_hw, _ = loop.prepare_image(s.data)
        sizes.append(
            pyramid.stage_sizes_for(s.pyramid, s.data, image.shape[:2], original_hw)
        )
    # The bundled image is 188x250 at max_size 250: 3 stages from 120 px up.
    assert sizes[0] == sizes[1]
    assert len(sizes[0]) == 3 and sizes[0][0][0] == 120 and sizes[0][-1] == (188, 250)


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("train.iters_per_stage", "many", "iters_per_stage"),
        ("train.iters_per_stage", 2.5, "iters_per_stage"),
        ("train.iters_per_stage", 0, "iters_per_stage"),
        ("train.gp_mode", "exact", "gp_mode"),
        ("train.compile_unit", "stage", "compile_unit"),
        ("train.update_rule", "sgd", "update_rule"),
        ("train.adam_eps", 0.0, "adam_eps"),
        ("model.batch_norm", "maybe", "batch_norm"),
        ("pyramid.schedule", "linear", "schedule"),
        ("pyramid.r0", 1.5, "r0"),
        ("model.upsample", "nearest", "upsample"),
        ("data.min_size_ratio", 2.0, "min_size_ratio"),
    ],
)
def test_bad_values_are_named(key, value, match):
    config = settings.config_to_dict(default.get_config())
    section, name = key.split(".")
    config[section][name] = value
    with pytest.raises(UserError, match=match):
        settings.Settings.from_config(config)


def _package_sources():
    pkg = os.path.join(ROOT, "agan_jax")
    for dirpath, _, files in os.walk(pkg):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(dirpath, f)
                with open(path) as fh:
                    yield os.path.relpath(path, ROOT), fh.read()


def test_only_settings_reads_the_config():
    sections = "seed|noise_amp_base|data|pyramid|model|train|loss|augment"
    pattern = re.compile(
        rf"(?<![-\w.])config\.({sections})\b|ml_collections|ConfigDict\("
    )
    offenders = [
        path
        for path, text in _package_sources()
        if path != os.path.join("agan_jax", "settings.py") and pattern.search(text)
    ]
    assert offenders == []


def test_kind_checks_live_in_the_registry_only():
    kinds = "|".join(families.FAMILIES)
    pattern = re.compile(
        rf"\bkind\s*(==|!=)\s*[\"']({kinds})[\"']"
        rf"|[\"']({kinds})[\"']\s*(==|!=)\s*[\w.]*\bkind\b"
        r"|\.kind\s+(not\s+)?in\b"
    )
    offenders = [
        path
        for path, text in _package_sources()
        if path != os.path.join("agan_jax", "models", "families.py")
        and pattern.search(text)
    ]
    assert offenders == []


def test_official_upsampling_needs_the_geometric_pyramid():
    config = settings.config_to_dict(default.get_config())
    config["model"]["upsample"] = "official"
    assert settings.Settings.from_config(config).model.upsample == "official"
    config["pyramid"]["schedule"] = "circ"
    with pytest.raises(UserError, match="upsample.*geometric"):
        settings.Settings.from_config(config)
