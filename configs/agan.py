"""AGAN: attention generators above stage 0, a non-linear pyramid, TV loss.

Schedules: `cos` = AGAN(1) (eq. 2), `quad` = AGAN(2) (eq. 3), `circ` = AGAN(3)
(eq. 4, the default). 6 stages.

Command (CPU-sized: 64 px, 6 stages, 200 iterations per stage):
  python -m launch.train --config=configs/agan.py --workdir=runs/agan
  python -m launch.train --config=configs/agan.py:quad --workdir=runs/agan2
Variants combine with commas: `:circ,tiny` (tests), `:cos,gpu` (paper size).
Look at runs/agan/stages/*.png (samples and attention maps after each stage).

Departures from the paper, named as `launch.compare` names them (the modifiers
of agan_jax/methods.py), combine the same way: `:tv-from-1` (no TV loss at stage
0), `:geometric` (SinGAN's pyramid), `:min-step`, `:noise-floor`,
`:iters-by-step`, ... e.g. `:tv-from-1,gpu`. Where each lands in patch SWD and
diversity: docs/evaluation.md, "Screening of the other variants".

Ablations, one component each: --config.model.kind=singan (SinGAN's residual
generator, this schedule and TV loss), --config.loss.tv_weight=0 (no TV),
--config.loss.tv_reduction=sum|pytorch, --config.model.warm_start=False,
--config.model.blend=residual (G_A proposes x + tanh(G_A(...)), not the paper's); or
python -m launch.compare --methods=agan3,agan3-no-attention,agan3-no-tv,...
"""

from __future__ import annotations

from agan_jax import methods
from configs import default

SCHEDULES = ("cos", "quad", "circ", "geometric")
# Departures from the paper a config argument may name (each sets one field).
MODIFIERS = tuple(m for m in methods.MODIFIERS if m not in SCHEDULES)


def get_config(arg: str | None = None):
    """AGAN config; `arg` holds a schedule, the variants of default.py and/or
    modifiers of agan_jax/methods.py (at most one per group)."""
    tokens = default.parse_arg(arg, SCHEDULES + default.VARIANTS + MODIFIERS)
    schedules = [t for t in tokens if t in SCHEDULES]
    if len(schedules) > 1:
        raise ValueError(f"give one AGAN schedule, got {schedules}")
    config = default.get_config(",".join(t for t in tokens if t in default.VARIANTS))
    config.model.kind = "agan"
    config.pyramid.schedule = schedules[0] if schedules else "circ"
    config.loss.tv_weight = 1.0
    # Official SinGAN's learning-rate step: MultiStepLR(milestones=[1600]) stepped
    # at the start of every iteration, so iterations 1599.. of a stage train at lr
    # x gamma, and stages of up to 1599 iterations (the CPU size) never decay.
    config.train.lr_decay_iter = 1599
    modifiers = [t for t in tokens if t in MODIFIERS]
    if modifiers:  # as launch.compare applies them: checked, one per group
        name = "-".join(["agan3", *modifiers])
        for m in methods.parse_method(name)[1]:
            methods.apply_modifier(config, m, f"configs/agan.py:{arg}")
    return config
