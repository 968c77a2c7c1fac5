"""The measuring harness of agan_jax: suites behind `python -m launch.bench`.

Nothing in `agan_jax/` imports this package. Layers, top to bottom:

  launch/bench.py   flags -> one suite function, prints its tables
  gpu.py            the GPU suite (training wall time, FLOP/s, sampling, memory)
  targets.py        whole-process targets (launch.train + launch.sample children)
  micro.py          microbenchmarks, one function per measured fact
  levers.py         variants of one stage compared in turns (speed levers)
  train_table.py    per-stage training table and sampling throughput of one run
  stage.py          one training stage built as training builds it, its runners
  references.py     every reference figure and target, each with its source
  common.py         environment header, timing, child processes, tables, configs
"""
