"""Shared defaults for every model family: every field a config can set, with its
default (agan_jax/settings.py reads them).

Command (SinGAN with these defaults; prefer configs/singan.py or configs/agan.py):
  python -m launch.train --config=configs/default.py --workdir=runs/default

Variants, given after a colon and combined with commas:
  tiny  seconds-long runs for tests (32 px, 2-3 stages, 20 iterations, 8 features)
  gpu   paper size (max_size 250, 2000 iterations per stage)
Without a variant the config is CPU-sized: 64 px, 200 iterations per stage.
"""

from __future__ import annotations

import ml_collections

VARIANTS = ("tiny", "gpu")


def parse_arg(arg: str | None, allowed: tuple[str, ...]) -> list[str]:
    """Splits a config argument such as 'circ,tiny' and checks every token."""
    tokens = [t for t in (arg or "").replace("+", ",").split(",") if t]
    for t in tokens:
        if t not in allowed:
            raise ValueError(f"unknown config variant {t!r}; choose from {allowed}")
    return tokens


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the default config, shrunk or grown by the variants in `arg`."""
    tokens = parse_arg(arg, VARIANTS)
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.noise_amp_base = 0.1

    config.data = ml_collections.ConfigDict()
    config.data.image = "data/colusseum.png"
    config.data.max_size = 64
    config.data.min_size = 25
    # > 0: min_size = max(16, round(min_size_ratio * max_size)), computed after
    # command-line overrides (ConSinGAN harmonization/editing: 0.48).
    config.data.min_size_ratio = 0.0
    # '' trains the image as loaded; 'HxW' centre-crops it to the aspect H:W and
    # resizes it to HxW (both sides <= max_size): every image of a folder then
    # has the same stage sizes and trains in one group (launch.train_many).
    config.data.fit = ""

    config.pyramid = ml_collections.ConfigDict()
    config.pyramid.schedule = "geometric"
    config.pyramid.num_stages = 6  # ignored by `geometric`, which derives it
    config.pyramid.r0 = 0.75
    # > 1: a stage less than min_step times larger than the stage kept below it
    # is dropped, so near-equal stages merge (e.g. 1.1: AGAN's circ pyramid at
    # 64 px keeps 4 of its 6 stages); 0 or 1: every stage (the papers').
    config.pyramid.min_step = 0.0

    config.model = ml_collections.ConfigDict()
    config.model.kind = "singan"
    config.model.nfc = 32
    config.model.nfc_growth = 4  # the width doubles every nfc_growth stages
    config.model.max_nfc = 128
    config.model.num_layers = 5
    config.model.kernel = 3
    config.model.batch_norm = True
    # SinGAN/AGAN: a new stage starts from the previous stage's generator and
    # critic weights where their shapes match (AGAN's first attention stage: G_A
    # from SinGAN's stage 0, G_B fresh); False: every stage from fresh weights
    # (an ablation). ConSinGAN always grows from the trained blocks.
    config.model.warm_start = True
    # AGAN only: "convex" blends G_A's proposal x_hat = tanh(G_A(x + z)) into x as
    # the paper's eq. 12 does; "residual" (an ablation, not the paper's) proposes
    # x_hat = x + tanh(G_A(x + z)), so x' = x + C * tanh(G_A(x + z)).
    config.model.blend = "convex"
    # SinGAN/AGAN: how a stage's output reaches the next stage's size: "resize"
    # (bicubic to that size, unclipped floats) or "official" (official SinGAN's
    # imresize round trip: 8-bit, bicubic by 1/r to the rounded-up size, cropped
    # at the top left, clipped; geometric pyramids only). docs/evaluation.md.
    config.model.upsample = "resize"
    # ConSinGAN only (configs/consingan.py): blocks trained concurrently, their
    # learning-rate scale per block below the newest, mode, LeakyReLU slope.
    config.model.train_depth = 3
    config.model.lr_scale = 0.1
    config.model.mode = "generation"
    config.model.leaky_slope = 0.05

    config.train = ml_collections.ConfigDict()
    config.train.iters_per_stage = 200
    config.train.d_steps = 3
    config.train.g_steps = 3
    config.train.lr_g = 5e-4
    config.train.lr_d = 5e-4
    config.train.beta1 = 0.5
    config.train.beta2 = 0.999
    config.train.adam_eps = 1e-8
    config.train.lr_milestone = 0.8
    # The first iteration trained at lr x gamma; -1: round(lr_milestone x iters)
    # (ConSinGAN's rule). configs/singan.py and agan.py set official SinGAN's.
    config.train.lr_decay_iter = -1
    config.train.gamma = 0.1
    # Iterations per compiled call: 0 = per-backend default (1 on CPU, where a
    # lax.scan of this step ran many times slower, docs/performance.md; 10 on
    # GPU/TPU).
    config.train.steps_per_call = 0
    # Compiled calls per iteration: 'auto' (by backend and stage, see
    # train.resolve_compile_unit), 'update' (one per update) or 'iteration'.
    config.train.compile_unit = "auto"
    # Models per compiled program when a folder trains (launch.train_many): 0 =
    # auto (train/many.py, by backend); images of the same stage sizes beyond it
    # train in further groups. A result never depends on it.
    config.train.models_per_call = 0
    # How a group runs: 'vmap' (one program over a stacked, sharded model axis),
    # 'shared' (each model calls the group's compiled single-model programs: bit
    # for bit a lone run) or 'auto' (shared on CPU, vmap on GPU/TPU; train/group.py).
    config.train.group_mode = "auto"
    # Penalty parameter gradient: 'jvp' (fast) or 'double_grad' (reference).
    config.train.gp_mode = "jvp"
    # 'singan': official SinGAN's (one noise map per iteration, a fresh
    # lower-stage sample per critic update, generator updates on the last one);
    # 'consingan' (ConSinGAN only): ConSinGAN's (one gradient applied g_steps
    # times); 'fresh': every update draws its own input (our earlier rule);
    # 'auto': the family's own (SinGAN/AGAN 'singan', ConSinGAN 'consingan').
    config.train.update_rule = "auto"
    # Stage 0's reconstruction noise z*: "fixed" (one map drawn from the seed),
    # "redraw" (official SinGAN: a fresh map every iteration, the last one kept as
    # z*; needs update_rule singan) or "auto" ("redraw" with the 'singan' rule, as
    # SinGAN and AGAN train; "fixed" otherwise, as official ConSinGAN keeps its
    # z_opt). docs/evaluation.md.
    config.train.stage0_rec_noise = "auto"
    # XLA backend optimisation level for training's programs: -1 = auto (LLVM O1
    # on CPU: less compile time at the same speed, agan_jax/compiler.py; XLA's
    # default elsewhere), or 0-3.
    config.train.xla_backend_opt_level = -1
    # Rematerialise the generator's activations in the backward pass (jax.checkpoint):
    # less device memory for large stages (1000 px on a GPU), more compute.
    config.train.remat = False
    # Compile stage s+1's programs in a worker thread while stage s trains (hides
    # compilation), or (False) only once stage s is done: a lower peak RSS (XLA's
    # compile memory no longer comes on top of the training stage's; 20 it/stage:
    # ConSinGAN 64 px -19%, SinGAN 128 px -28%) for the compile time in the wall
    # (docs/performance.md).
    config.train.compile_ahead = True
    # Stages whose programs compile at once (0: auto, compiler.compile_workers:
    # one on CPU, where training needs the cores; on an accelerator host, whose
    # cores are idle while it trains, every stage from the start, in up to a
    # quarter of the cores' threads). Needs compile_ahead.
    config.train.compile_workers = 0
    # True: stage s > 0 trains iters_per_stage x log(step_s) / log(mean step)
    # iterations (step_s: its size over the stage below's), the same total over
    # stages 1.. spread by how much each stage grows the image; False: every
    # stage iters_per_stage (the papers').
    config.train.iters_by_step = False
    config.train.log_every = 25
    config.train.stage_samples = 8  # grid of samples written after each stage

    config.loss = ml_collections.ConfigDict()
    config.loss.lambda_gp = 0.1
    config.loss.alpha = 10.0
    config.loss.tv_weight = 0.0
    # TV (AGAN eq. 13) reduced by the mean over its terms ('mean': the vertical
    # and horizontal means added), their sum ('sum', the paper's equation) or as
    # the TVLoss most PyTorch code uses ('pytorch': 2 x 'mean').
    config.loss.tv_reduction = "mean"
    # The TV term enters the generator objective from this stage on (AGAN's
    # paper: 0, every stage; 1 keeps it off the coarsest stage).
    config.loss.tv_from_stage = 0
    # Stages above 0 get noise amplitude max(noise_amp_floor, noise_amp_base x
    # RMSE): 0 is SinGAN's and AGAN's rule; e.g. 0.02 keeps near-equal stages,
    # whose RMSE is tiny, from training without noise.
    config.loss.noise_amp_floor = 0.0

    # Training augmentations of ConSinGAN's harmonization and editing modes.
    config.augment = ml_collections.ConfigDict()
    config.augment.p_colour = 0.5  # brightness, contrast, saturation, gains
    config.augment.p_noise = 0.5  # additive noise, std ~ U(0, noise_std)
    config.augment.noise_std = 0.1
    config.augment.p_cutout = 0.5  # one rectangle of a random colour
    config.augment.cutout_max = 0.4  # its largest side / the image side
    config.augment.p_tiles = 0.5  # editing only: shuffled tiles x tiles grid
    config.augment.tiles = 4

    # How a run is watched (not part of the run: run.json leaves it out, a resume
    # may change it). tensorboard: also write TensorBoard event files into the
    # workdir (tensorboardX); False: metrics.jsonl and plots/ only.
    config.log = ml_collections.ConfigDict()
    config.log.tensorboard = True

    if "tiny" in tokens:
        config.data.max_size = 32
        config.data.min_size = 16
        config.pyramid.num_stages = 3
        config.model.nfc = 8
        config.model.max_nfc = 16
        config.train.iters_per_stage = 20
        config.train.log_every = 10
        config.train.stage_samples = 0
        # LLVM O0: at this size compiling is nearly all of a run's time, and O0
        # compiles fastest (docs/performance.md, "XLA optimisation level");
        # tests/data/golden.json is recorded at O0.
        config.train.xla_backend_opt_level = 0
    if "gpu" in tokens:
        config.data.max_size = 250
        config.data.min_size = 25
        config.train.iters_per_stage = 2000
        config.train.log_every = 100
    return config
