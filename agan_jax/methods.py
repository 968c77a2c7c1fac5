"""Methods of a comparison: a base config plus ablation modifiers, BASE[-MODIFIER...].

A base is one of METHODS (a config module of configs/ and its schedule); each
modifier switches one component, i.e. sets one config field (MODIFIERS), at most
one modifier per group. `method_config("agan3-no-tv", "cpu", image, None)` is
configs/agan.py:circ with loss.tv_weight=0. `launch.compare` trains and evaluates
methods given this way; the table's `run` column names them.
"""

from __future__ import annotations

import importlib
import os

from agan_jax.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# method -> (config module, schedule argument or "")
METHODS: dict[str, tuple[str, str]] = {
    "singan": ("singan", ""),
    "agan1": ("agan", "cos"),
    "agan2": ("agan", "quad"),
    "agan3": ("agan", "circ"),
    "consingan": ("consingan", ""),
}
SIZES = {"cpu": "", "tiny": "tiny", "gpu": "gpu"}
SCHEDULES = ("geometric", "cos", "quad", "circ")
# Values the diversity modifiers set. MIN_STEP: circ at 64 px then keeps 4 of its
# 6 stages (pyramid.merge_close_stages); NOISE_FLOOR: about the noise amplitude of
# SinGAN's own stages 2-3 at 64 px (docs/evaluation.md).
MIN_STEP = 1.1
NOISE_FLOOR = 0.02
# modifier -> (group: one modifier per group, (section, field), value, what it does)
MODIFIERS: dict[str, tuple[str, tuple[str, str], object, str]] = {
    "no-tv": ("tv", ("loss", "tv_weight"), 0.0, "TV loss off"),
    "tv-sum": ("tv", ("loss", "tv_reduction"), "sum", "the paper's summed TV"),
    "tv-pytorch": (
        "tv",
        ("loss", "tv_reduction"),
        "pytorch",
        "PyTorch's TVLoss, 2 x mean",
    ),
    "tv-from-1": (
        "tv_stage",
        ("loss", "tv_from_stage"),
        1,
        "no TV loss at stage 0, TV from stage 1 on",
    ),
    "no-attention": (
        "generator",
        ("model", "kind"),
        "singan",
        "SinGAN's residual generator",
    ),
    "no-warm": (
        "warm",
        ("model", "warm_start"),
        False,
        "every stage from fresh weights",
    ),
    "res-blend": (
        "blend",
        ("model", "blend"),
        "residual",
        "G_A's proposal x + tanh(G_A(..))",
    ),
    "min-step": (
        "min_step",
        ("pyramid", "min_step"),
        MIN_STEP,
        f"stages less than {MIN_STEP}x the one below merged",
    ),
    "noise-floor": (
        "noise",
        ("loss", "noise_amp_floor"),
        NOISE_FLOOR,
        f"noise amplitude at least {NOISE_FLOOR} above stage 0",
    ),
    "iters-by-step": (
        "iters",
        ("train", "iters_by_step"),
        True,
        "iterations per stage scaled by log of its size step",
    ),
    **{
        s: ("schedule", ("pyramid", "schedule"), s, f"the {s} pyramid")
        for s in SCHEDULES
    },
}
# Modifiers that change the attention generator, and why they need it.
ATTENTION_ONLY = {
    "no-attention": "swaps AGAN's attention generator for SinGAN's",
    "res-blend": "changes AGAN's attention blend",
}
# Modifiers of the TV term: the base must use it (loss.tv_weight > 0).
TV_MODIFIERS = ("no-tv", "tv-sum", "tv-pytorch", "tv-from-1")


def describe(modifier: str) -> str:
    """What `modifier` does, with the field it sets: "TV loss off (loss.tv_weight=0.0)"."""
    _, (section, name), value, what = MODIFIERS[modifier]
    return f"{what} ({section}.{name}={value})"


def available_methods() -> list[str]:
    """The base methods whose config file exists, in table order."""
    return [
        m
        for m, (mod, _) in METHODS.items()
        if os.path.exists(os.path.join(ROOT, "configs", f"{mod}.py"))
    ]


def parse_method(method: str) -> tuple[str, list[str]]:
    """Splits BASE[-MODIFIER...] into the base method and its modifiers (each a
    key of MODIFIERS, at most one per group); UserError naming the valid ones."""
    base, _, rest = method.partition("-")
    if base not in available_methods():
        raise UserError(
            f"unknown method {method!r}; choose from "
            f"{', '.join(available_methods())}, optionally followed by modifiers "
            f"-MODIFIER (one of {', '.join(MODIFIERS)}), e.g. agan3-no-tv"
        )
    modifiers: list[str] = []
    longest_first = sorted(MODIFIERS, key=len, reverse=True)
    while rest:
        found = next(
            (m for m in longest_first if rest == m or rest.startswith(m + "-")),
            None,
        )
        if found is None:
            raise UserError(
                f"unknown modifier {rest!r} in method {method!r}; valid modifiers: "
                f"{', '.join(MODIFIERS)} (e.g. {base}-no-tv-cos)"
            )
        group = MODIFIERS[found][0]
        clash = [m for m in modifiers if MODIFIERS[m][0] == group]
        if clash:
            raise UserError(
                f"method {method!r} has two {group} modifiers ({clash[0]}, {found}); "
                "give at most one"
            )
        modifiers.append(found)
        rest = rest[len(found) + 1 :]
    return base, modifiers


def _applies(config, modifier: str, method: str) -> None:
    """UserError when `modifier` does not apply to `config`'s family or loss.
    model.warm_start applies to the families whose every stage has a generator
    of its own (models/singan.py's StageModel; ConSinGAN grows one)."""
    from agan_jax.models import families

    kind = config["model"]["kind"]
    family = families.get(kind)
    if modifier in ATTENTION_ONLY and not family.attention:
        raise UserError(
            f"{method}: {modifier!r} {ATTENTION_ONLY[modifier]}; this base trains "
            f"model.kind={kind}"
        )
    if modifier == "no-warm" and not family.stage_generators:
        warm = [k for k, f in families.FAMILIES.items() if f.stage_generators]
        raise UserError(
            f"{method}: 'no-warm' applies to {', '.join(warm)}; "
            f"{kind} grows its generator from the trained blocks"
        )
    if modifier in TV_MODIFIERS and config["loss"]["tv_weight"] == 0:
        raise UserError(
            f"{method}: {modifier!r} changes the TV loss, which this base does "
            f"not use (loss.tv_weight=0); use an AGAN base, e.g. agan3-{modifier}"
        )


def apply_modifier(config, modifier: str, method: str) -> None:
    """Changes the field of `config` that `modifier` switches (UserError when it
    does not apply to the base's config, or would change nothing)."""
    _applies(config, modifier, method)
    _, (section, name), value, _ = MODIFIERS[modifier]
    if config[section][name] == value:
        raise UserError(
            f"{method}: modifier {modifier!r} changes nothing ({section}.{name} is "
            f"already {value!r}); drop it"
        )
    config[section][name] = value


def method_config(method: str, size: str, image: str, iters: int | None):
    """The training config of one method, BASE[-MODIFIER...], at one size
    (SIZES) on `image`: the base's config with every modifier's field switched,
    and `iters` iterations per stage unless None."""
    base, modifiers = parse_method(method)
    mod_name, schedule = METHODS[base]
    arg = ",".join(t for t in (schedule, SIZES[size]) if t)
    config = importlib.import_module(f"configs.{mod_name}").get_config(arg or None)
    for modifier in modifiers:
        apply_modifier(config, modifier, method)
    config["data"]["image"] = image
    if iters is not None:
        if iters < 1:
            raise UserError(f"--iters_per_stage must be at least 1, got {iters}")
        config["train"]["iters_per_stage"] = iters
    return config
