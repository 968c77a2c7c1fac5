"""SinGAN: geometric pyramid (r = 0.75), one conv stack per stage, no TV loss.

Command (CPU-sized: 64 px, 5 stages, 200 iterations per stage):
  python -m launch.train --config=configs/singan.py --workdir=runs/singan
Variants: `:tiny` (tests, seconds), `:gpu` (paper size, 250 px, 2000 iterations).
Look at runs/singan/stages/*.png (samples after each stage) and run
  python -m launch.sample --workdir=runs/singan --num_samples=16 --out=runs/singan/samples
"""

from __future__ import annotations

from configs import default


def get_config(arg: str | None = None):
    """SinGAN config; `arg` takes the variants of configs/default.py."""
    config = default.get_config(arg)
    config.model.kind = "singan"
    config.pyramid.schedule = "geometric"
    config.loss.tv_weight = 0.0
    # Official SinGAN's learning-rate step: MultiStepLR(milestones=[1600]) stepped
    # at the start of every iteration, so iterations 1599.. of a stage train at lr
    # x gamma, and stages of up to 1599 iterations (the CPU size) never decay.
    config.train.lr_decay_iter = 1599
    return config
