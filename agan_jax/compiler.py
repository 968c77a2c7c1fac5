"""XLA compile options for the programs this package compiles ahead of time.

On CPU, XLA's generated kernels are built with LLVM O1 instead of XLA's default
O2: the programs compile faster at the same seconds per iteration
(docs/performance.md, "XLA optimisation level") and train the same weights
(tests/test_train.py::test_cpu_compile_level_trains_like_xla_default). The
convolutions run in Eigen at either level, which is why the running time does not
move. Other backends keep XLA's defaults.
"""

from __future__ import annotations

import os

import jax

CPU_BACKEND_OPT_LEVEL = 1


def options(level: int = -1) -> dict | None:
    """Compiler options for `.compile(compiler_options=...)` / `jax.jit`.

    level: XLA's backend optimisation level 0-3; -1 (auto): CPU_BACKEND_OPT_LEVEL
    on CPU, XLA's default (None) elsewhere.
    """
    if level == -1:
        if jax.default_backend() != "cpu":
            return None
        level = CPU_BACKEND_OPT_LEVEL
    if level not in (0, 1, 2, 3):
        raise ValueError(f"XLA backend optimisation level must be -1..3, got {level}")
    return {"xla_backend_optimization_level": int(level)}


# On CPU, a stage of at least this many pixels (and not the first) runs a whole
# iteration per compiled call (`train.runner.resolve_compile_unit`), by model kind.
# Measured on the 2-core CPU, docs/performance.md ("What changed, predicted and
# measured", the fused-iteration row): SinGAN/AGAN gained from 62x82 px up and lost
# below; ConSinGAN gained at every later stage (its rule's critic updates share one
# fake, which XLA computes once in the fused program). Other kinds: never fused.
FUSE_MIN_PIXELS = {"singan": 62 * 82, "agan": 62 * 82, "consingan": 0}


def compile_workers(setting: int, stages: int) -> int:
    """Stages compiled at once (`train.compile_workers`; 0: auto). Auto: 1 on
    CPU (the next stage compiles beside the one training; more would take its
    cores); on an accelerator, where training leaves the host's cores idle,
    every stage at once in up to cores / 4 threads (XLA's compiler is itself
    multi-threaded)."""
    if setting:
        return setting
    if jax.default_backend() == "cpu":
        return 1
    return max(1, min(stages, (os.cpu_count() or 1) // 4))


def fuse_min_pixels(kind: str) -> int:
    """Pixels from which a later stage of `kind` fuses an iteration on CPU (see
    FUSE_MIN_PIXELS); a kind not measured never fuses."""
    return FUSE_MIN_PIXELS.get(kind, 2**62)
