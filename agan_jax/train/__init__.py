"""Training: the one stage loop (loop.py), the update rules (updates.py), the
compiled runners and compile-unit policy (runner.py), fine-tuning (finetune.py).

`train(config, workdir)` trains every unfinished stage of a run.
"""

from agan_jax.train.loop import train
from agan_jax.train.runner import TrainingDiverged

__all__ = ["train", "TrainingDiverged"]
