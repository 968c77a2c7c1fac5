"""Every target the suites print, each with its source.

Micro figures are compared only with other rows measured in the same run (e.g.
the jvp penalty gradient with grad-of-grad): a figure stored from another
afternoon or machine proves nothing (docs/performance.md, "Measured": the host's
speed drifts by up to 20% over half an hour). The time of an official PyTorch
program is measured side by side by `--suite=cpu_targets` (benchmarks/targets.py,
benchmarks/official.py). The GPU bounds are the project's goals for an H100. No
figure here was measured.
"""

from __future__ import annotations

import dataclasses

# XLA:CPU flag of the XNNPACK rows.
XNNPACK = "--xla_cpu_use_xnnpack=true"


@dataclasses.dataclass(frozen=True)
class Figure:
    """One measured fact and the row of the same run it is compared with."""

    key: str
    what: str
    unit: str  # "s" or "ms"
    against: str | None  # key of the row it is compared with, None if none
    at_most: bool  # the target: measured <= the `against` row's figure
    target_text: str  # the target (or why there is none) in words


# The goal: each iteration no slower than the official PyTorch one; that
# comparison is whole-process and side by side now (--suite=cpu_targets), so these
# rows have no bound.
SIDE_BY_SIDE = "reference: the official iteration runs side by side in cpu_targets"

FIGURES: tuple[Figure, ...] = (
    Figure(
        "iter_jit_49x64",
        "iteration 49x64, 64 ch, jitted alone (unit iteration, steps_per_call 1)",
        "s",
        None,
        False,
        SIDE_BY_SIDE,
    ),
    Figure(
        "iter_scan_49x64",
        "iteration 49x64, 64 ch, inside lax.scan (steps_per_call k), per iteration",
        "s",
        "iter_jit_49x64",  # a lax.scan of this step ran many times slower
        False,
        "not used on CPU (steps_per_call 1)",
    ),
    Figure(
        "iter_update_49x64",
        "iteration 49x64, 64 ch, unit update (6 compiled calls)",
        "s",
        "iter_jit_49x64",
        False,
        "reference: compile_unit=auto picks per stage",
    ),
    Figure(
        "gp_double_grad_49x64",
        "GP parameter gradient, grad-of-grad, critic 49x64, 64 ch",
        "ms",
        None,
        False,
        "reference only",
    ),
    Figure(
        "gp_jvp_49x64",
        "GP parameter gradient, grad of jvp along v = dGP/dg",
        "ms",
        "gp_double_grad_49x64",  # the jvp form must beat grad-of-grad
        True,
        "<= grad-of-grad",
    ),
    Figure(
        "d_update_double_grad_49x64",
        "critic update 49x64 (fake, WGAN, GP, Adam), gp_mode double_grad",
        "ms",
        None,
        False,
        "reference only",
    ),
    Figure(
        "d_update_jvp_49x64",
        "critic update 49x64, gp_mode jvp (default)",
        "ms",
        "d_update_double_grad_49x64",
        True,
        "<= double_grad",
    ),
    Figure(
        "iter_97x128",
        "iteration 97x128, 64 ch, jitted alone, default XLA flags",
        "s",
        None,
        False,
        SIDE_BY_SIDE,
    ),
    Figure(
        "iter_97x128_xnnpack",
        f"iteration 97x128, 64 ch, jitted alone, XLA_FLAGS={XNNPACK}",
        "s",
        "iter_97x128",
        False,
        "reference: the flag stays off (no effect measured)",
    ),
    Figure(
        "compile_iteration_49x64",
        "compile one stage's programs 49x64, unit iteration (init, step, rec input)",
        "s",
        None,
        False,
        "hidden behind the stage below (compiled in a worker thread)",
    ),
    Figure(
        "compile_update_49x64",
        "compile one stage's programs 49x64, unit update",
        "s",
        "compile_iteration_49x64",
        False,
        "hidden behind the stage below (compiled in a worker thread)",
    ),
    Figure(
        "iter_coarse_25x33",
        "iteration 25x33, 32 ch, stage 0, unit update",
        "s",
        None,
        False,
        SIDE_BY_SIDE,
    ),
)
FIGURE_KEYS = {f.key: f for f in FIGURES}


@dataclasses.dataclass(frozen=True)
class Target:
    """One whole-process CPU target: a config trained and sampled from the shell,
    timed side by side with the official program it is compared with."""

    key: str
    config: str  # --config value
    max_size: int
    official: str  # "singan" or "consingan": benchmarks/official.py
    iters: int = 200  # iterations per stage on both sides
    # False: a memory target only (peak RSS at most the official program's), run
    # when named in --only; its time is printed but not a target.
    time_target: bool = True


# The goal: whole process (train + 50 samples, cold compile) at most AIM x the
# official program's wall time, measured side by side in the same run; peak RSS
# at most the official program's. No stored PyTorch figure: a time measured on
# another afternoon or machine proves nothing.
AIM = 0.7
CPU_TARGETS: tuple[Target, ...] = (
    Target("singan_64", "configs/singan.py", 64, "singan"),
    Target("consingan_64", "configs/consingan.py", 64, "consingan"),
    Target("agan_64", "configs/agan.py", 64, "singan"),
    Target("singan_128", "configs/singan.py", 128, "singan"),
    Target("consingan_128", "configs/consingan.py", 128, "consingan"),
    # The memory goal at 250 px, at 20 it/stage on both sides (200 would take
    # the official programs hours per run on 2 cores; the peak comes from the
    # stage sizes, not from the iteration count).
    Target("singan_250", "configs/singan.py", 250, "singan", 20, False),
    Target("consingan_250", "configs/consingan.py", 250, "consingan", 20, False),
)


@dataclasses.dataclass(frozen=True)
class GpuTarget:
    """One GPU bound and the row of the GPU suite that measures it."""

    key: str
    what: str
    bound: str
    config: str = ""  # the config whose training the bound is about


GPU_TARGETS: tuple[GpuTarget, ...] = (
    # AGAN at paper size (250 px, 6 stages x 2000 iterations) on an H100.
    GpuTarget(
        "agan_train",
        "configs/agan.py:gpu training, H100",
        "<= 60 s",
        "configs/agan.py:gpu",
    ),
    # SinGAN at paper size on an H100.
    GpuTarget(
        "singan_train",
        "configs/singan.py:gpu training, H100",
        "<= 120 s",
        "configs/singan.py:gpu",
    ),
    # Report the achieved fraction of the device's conv throughput.
    GpuTarget(
        "flops", "achieved fraction of measured conv throughput (AGAN :gpu)", "report"
    ),
    # vmap'd sampling at 250 px in large batches.
    GpuTarget(
        "sampling", "sampling at 250 px (vmap, large batch)", ">= 2,000 samples/s"
    ),
    # A fresh process loading a run, with the persistent cache warm.
    GpuTarget(
        "first_sample",
        "time to first sample after loading a run (warm cache)",
        "<= 5 s",
    ),
    # A table of peak device memory by max_size.
    GpuTarget("memory", "peak device memory at max_size 250 / 500 / 1000", "table"),
    # max_size 1000 must train on a 16 GB device.
    GpuTarget("memory_1000", "max_size 1000 training within 16 GB", "<= 16 GB"),
)
GPU_BOUNDS = {t.key: t for t in GPU_TARGETS}


def training_bound(config: str) -> str:
    """The GPU training bound of a config name ('-' if it has none)."""
    return next((t.bound for t in GPU_TARGETS if t.config and t.config == config), "-")
