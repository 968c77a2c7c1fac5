"""ConSinGAN: one growing generator, the newest 3 stages trained concurrently.

`log` pyramid (6 stages), 64 features, LeakyReLU 0.05, no BatchNorm, learning rate
lr * 0.1**k for the block k stages below the newest; no TV loss.

Command (CPU-sized: 64 px, 6 stages, 200 iterations per stage):
  python -m launch.train --config=configs/consingan.py --workdir=runs/consingan
  python -m launch.sample --workdir=runs/consingan --num_samples=16
Runtime: measured by `python -m launch.bench --suite=cpu_targets
--only=consingan_64` (docs/performance.md). Training follows ConSinGAN's own
update rule in every mode (`train.update_rule=auto` -> 'consingan': one noise
draw and one generator gradient per iteration, applied g_steps times), and with
BatchNorm (harmonization, editing) normalises with batch statistics in every
block, trained or frozen, in training and sampling, as its code does. Look at
runs/consingan/stages/*.png (real image first, then samples). The paper trains
2000 iterations per stage (`:gpu`).

Modes (combine with the size variants, e.g. `:retarget,gpu`):
  generation     default; diverse edges
  retarget       zero padding, for samples at other sizes (launch.retarget)
  animation      stage-0 reconstruction from a fixed noise map, so that the walks
                 of launch.animate move smoothly around it; min_size 20
  harmonization  ConSinGAN's recipe (its README): 3 stages, min_size 120 at
                 max_size 250, LeakyReLU 0.3, BatchNorm, 1000 iterations per stage
                 (`:gpu`), the head trained on colour/noise-augmented copies with
                 cut-outs; then fine-tune on the naive image:
                   python -m launch.finetune --workdir=runs/h --naive=data/scream_naive.jpg
                 CPU-sized (no `:gpu`): min_size scales with max_size
                 (max(16, round(0.48 x max_size)), 31 px at 64 px; 120 at 250) and
                 200 iterations per stage, as every CPU-sized config.
  editing        ConSinGAN's recipe: the default 6 stages, min_size 25, LeakyReLU
                 0.05, BatchNorm, 1000 iterations per stage (`:gpu`; 200 on CPU),
                 augmentations as harmonization plus shuffled tiles

Variants: `:tiny` (tests: 32 px, 3 stages, 8 features, train_depth 2 so that a
block freezes), `:gpu` (paper size: 250 px, 2000 iterations per stage).
"""

from __future__ import annotations

from configs import default

MODES = ("generation", "retarget", "animation", "harmonization", "editing")


def get_config(arg: str | None = None):
    """ConSinGAN config; `arg` holds a mode and/or the variants of default.py."""
    tokens = default.parse_arg(arg, MODES + default.VARIANTS)
    modes = [t for t in tokens if t in MODES]
    if len(modes) > 1:
        raise ValueError(f"give one ConSinGAN mode, got {modes}")
    mode = modes[0] if modes else "generation"
    variants = [t for t in tokens if t in default.VARIANTS]
    config = default.get_config(",".join(variants))
    config.model.kind = "consingan"
    config.model.mode = mode
    config.model.nfc = 64
    config.model.max_nfc = 64
    config.model.num_layers = 3  # convolutions per block; the critic has 3 + 2
    config.model.batch_norm = False
    config.model.train_depth = 3
    config.model.lr_scale = 0.1
    config.model.leaky_slope = 0.05
    config.pyramid.schedule = "log"
    config.pyramid.num_stages = 6
    config.loss.tv_weight = 0.0
    # ConSinGAN's recipes per mode (its README and main_train.py).
    if mode == "animation":
        config.data.min_size = 20
    if mode in ("harmonization", "editing"):
        config.model.batch_norm = True
        if "gpu" in variants:
            config.train.iters_per_stage = 1000
    if mode == "harmonization":
        config.pyramid.num_stages = 3
        config.model.leaky_slope = 0.3
        # min_size 120 at max_size 250: max(16, round(0.48 * max_size)), after
        # command-line overrides of max_size (settings.py).
        config.data.min_size_ratio = 0.48
    if "tiny" in variants:
        config.model.nfc = 8
        config.model.max_nfc = 8
        config.model.train_depth = 2
        config.pyramid.num_stages = 3
        config.data.min_size = 16
    return config
