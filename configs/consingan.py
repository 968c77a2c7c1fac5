"""ConSinGAN: one growing generator, the newest 3 stages trained concurrently.

`log` pyramid (6 stages), 64 features, LeakyReLU 0.05, no BatchNorm, learning rate
lr * 0.1**k for the block k stages below the newest; no TV loss.

Command (CPU-sized: 64 px, 6 stages, 200 iterations per stage):
  python -m launch.train --config=configs/consingan.py --workdir=runs/consingan
  python -m launch.sample --workdir=runs/consingan --num_samples=16
Runtime: 206 s for training and 50 samples on a quiet 2-core CPU
(`python -m launch.bench --suite=cpu_targets --only=consingan_64`; PyTorch's
ConSinGAN: 338 s). Training follows ConSinGAN's own update rule
(`train.update_rule=consingan`: one noise draw and one generator gradient per
iteration, applied g_steps times); with BatchNorm (harmonization and editing
modes, or --config.model.batch_norm=True) it trains with the 'fresh' rule instead,
as ConSinGAN's rule diverged there (reconstruction MSE 0.58 at the last stage). Look at runs/consingan/stages/*.png (real image
first, then samples). At this budget, without BatchNorm (the paper's default, kept
here) the samples keep the layout (sky, a band of building, water) but the
building is smeared and the reconstruction blurry (rec MSE 0.008 at the last
stage, AGAN 0.0017). With --config.model.batch_norm=True the samples show the Colosseum with arches in varied arrangements, a
little noisier than AGAN's. The paper trains 2000 iterations per stage (`:gpu`;
not measured here).

Modes (combine with the size variants, e.g. `:retarget,gpu`):
  generation     default; diverse edges
  retarget       zero padding, for samples at other sizes (launch.retarget)
  animation      stage-0 reconstruction from a fixed noise map, so that the walks
                 of launch.animate move smoothly around it
  harmonization  3 stages, coarsest at ~0.5 x max_size, BatchNorm, 1000 iterations
                 (gpu) per stage, head trained on colour/noise-augmented copies
                 with cut-outs; then fine-tune on the naive image:
                   python -m launch.finetune --workdir=runs/h --naive=data/scream_naive.jpg
  editing        as harmonization, plus shuffled tiles
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
    # 'auto' (default.py): ConSinGAN's own rule (one noise draw and one generator
    # gradient per iteration, applied g_steps times) without BatchNorm; 'fresh'
    # (SPEC 6) with BatchNorm, where ConSinGAN's rule diverged at 64 px.
    if mode in ("harmonization", "editing"):
        # ConSinGAN's recipe: 3 stages, 1000 iterations per stage, BatchNorm, the
        # coarsest stage about half the finest (120 of 250 px).
        config.pyramid.num_stages = 3
        config.model.batch_norm = True
        # min_size = max(16, round(0.48 * max_size)), after command-line
        # overrides of max_size (settings.py).
        config.data.min_size_ratio = 0.48
        if "gpu" in variants:
            config.train.iters_per_stage = 1000
    if "tiny" in variants:
        config.model.nfc = 8
        config.model.max_nfc = 8
        config.model.train_depth = 2
        config.pyramid.num_stages = 3
        config.data.min_size = 16
    return config
