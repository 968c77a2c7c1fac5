"""Benchmark training and sampling on whatever device JAX sees; prints tables.

  python -m launch.bench --config=configs/agan.py
  python -m launch.bench --config=configs/singan.py --config.train.iters_per_stage=50 \
      --batch_sizes=1,4,16,64,256,1024

Trains the config once (all stages, no progress bars), then reports per stage:
iterations/s, compile time, parameter counts; then samples/s per batch size.
"""

from __future__ import annotations

import json

from absl import flags
from ml_collections import config_flags

from launch import common

_CONFIG = config_flags.DEFINE_config_file(
    "config", "configs/agan.py", "Config to benchmark.", lock_config=True
)
_BATCHES = flags.DEFINE_list(
    "batch_sizes", ["1", "4", "16", "64", "256", "1024"], "Sampling batch sizes."
)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Keep the trained run here (default: temp)."
)
_JSON = flags.DEFINE_string("json", None, "Also write the raw results to this file.")


def main(argv: list[str]) -> None:
    del argv
    from agan_jax import benchmark

    config = _CONFIG.value
    config.unlock()
    config.train.stage_samples = 0
    result = benchmark.run_benchmark(
        config, [int(b) for b in _BATCHES.value], _WORKDIR.value
    )
    print(benchmark.format_tables(result))
    if _JSON.value:
        with open(_JSON.value, "w") as f:
            json.dump(result, f, indent=1, default=str)


if __name__ == "__main__":
    common.run(main)
