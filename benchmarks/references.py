"""Every reference figure and target the suites print, each with its source.

Sources, named in the comment beside each figure:
- "issue 6": the project's performance issue (its text lives in the project's
  tracker, not in this repository). Its jax figures were measured with jax 0.10.2
  on this project's 2-core CPU machine kind, before any of the speed work; its
  PyTorch figures with the official PyTorch implementations (SinGAN:
  tamarott/SinGAN, ConSinGAN: tohinz/ConSinGAN) on the same machine kind, 3
  critic + 3 generator updates per iteration, the bundled colusseum image.
- "SPEC 6": /work/shared/design/SPEC.md, section 6, which quotes the same
  measurements (0.89 s vs 7.7 s per iteration, 183 ms vs 56 ms vs 47 ms).
Micro targets are issue 6's: PyTorch's figure where one exists ("no slower than
the official code") and its GPU bounds for an H100. The whole-process CPU targets
(issue 13) store no figure: the official programs are run side by side
(benchmarks/targets.py). No figure here was measured by this harness.
"""

from __future__ import annotations

import dataclasses

# XLA:CPU flag of the issue's XNNPACK rows (issue 6).
XNNPACK = "--xla_cpu_use_xnnpack=true"


@dataclasses.dataclass(frozen=True)
class Figure:
    """One measured fact of issue 6 and what it is compared with."""

    key: str
    what: str
    unit: str  # "s" or "ms"
    issue: str  # the issue's jax 0.10.2 figure, "" if none
    pytorch: float | None  # PyTorch reference in `unit`, None if none
    target: float | None  # measured must be <= target (in `unit`); None: no bound
    target_text: str  # the target as words


FIGURES: tuple[Figure, ...] = (
    Figure(
        "iter_jit_49x64",
        "iteration 49x64, 64 ch, jitted alone (unit iteration, steps_per_call 1)",
        "s",
        # issue 6 (0.89 s also SPEC 6: grad-of-grad penalty; 0.50 s with the jvp
        # penalty, measured in issue 6's first session).
        "0.89 (grad-of-grad GP), 0.50 (jvp GP)",
        # issue 6: PyTorch SinGAN's iteration at 49x64 px, 64 channels.
        0.61,
        0.61,  # issue 6: no slower than PyTorch
        "<= PyTorch 0.61",
    ),
    Figure(
        "iter_scan_49x64",
        "iteration 49x64, 64 ch, inside lax.scan (steps_per_call k), per iteration",
        "s",
        "7.7",  # issue 6 and SPEC 6 (lax.scan/fori_loop around the same step)
        0.61,  # issue 6: the same PyTorch iteration as above
        None,  # no target: the CPU default is steps_per_call 1
        "not used on CPU (steps_per_call 1)",
    ),
    Figure(
        "iter_update_49x64",
        "iteration 49x64, 64 ch, unit update (6 compiled calls)",
        "s",
        "",  # not in issue 6: compile unit 'update' came after it
        0.61,  # issue 6: the same PyTorch iteration as above
        0.61,  # issue 6: no slower than PyTorch
        "<= PyTorch 0.61 (aim 0.43)",  # aim: issue 6's 0.7x
    ),
    Figure(
        "gp_double_grad_49x64",
        "GP parameter gradient, grad-of-grad, critic 49x64, 64 ch",
        "ms",
        "183",  # issue 6 and SPEC 6
        47.0,  # issue 6 and SPEC 6: PyTorch's double backward
        None,
        "reference only",
    ),
    Figure(
        "gp_jvp_49x64",
        "GP parameter gradient, grad of jvp along v = dGP/dg",
        "ms",
        "56",  # issue 6 and SPEC 6
        47.0,  # issue 6 and SPEC 6: PyTorch's double backward
        None,  # no numeric bound: it must beat grad-of-grad (row above)
        "<= grad-of-grad",
    ),
    Figure(
        "d_update_double_grad_49x64",
        "critic update 49x64 (fake, WGAN, GP, Adam), gp_mode double_grad",
        "ms",
        "",  # not in issue 6 (added with gp_mode)
        None,
        None,
        "reference only",
    ),
    Figure(
        "d_update_jvp_49x64",
        "critic update 49x64, gp_mode jvp (default)",
        "ms",
        "",  # not in issue 6 (added with gp_mode)
        None,
        None,
        "<= double_grad",
    ),
    Figure(
        "iter_97x128",
        "iteration 97x128, 64 ch, jitted alone, default XLA flags",
        "s",
        "3.24",  # issue 6
        2.08,  # issue 6: PyTorch SinGAN's finest stage at max_size 128
        2.08,  # issue 6: no slower than PyTorch
        "<= PyTorch 2.08",
    ),
    Figure(
        "iter_97x128_xnnpack",
        f"iteration 97x128, 64 ch, jitted alone, XLA_FLAGS={XNNPACK}",
        "s",
        "2.24",  # issue 6 (docs/performance.md: most likely load drift)
        2.08,  # issue 6, as above
        2.08,  # issue 6, as above
        "<= PyTorch 2.08",
    ),
    Figure(
        "compile_iteration_49x64",
        "compile one stage's programs 49x64, unit iteration (init, step, rec input)",
        "s",
        "11-14",  # issue 6
        None,  # PyTorch does not compile
        None,
        "hidden behind the stage below (compiled in a worker thread)",
    ),
    Figure(
        "compile_update_49x64",
        "compile one stage's programs 49x64, unit update",
        "s",
        "",  # not in issue 6: compile unit 'update' came after it
        None,
        None,
        "hidden behind the stage below (compiled in a worker thread)",
    ),
    Figure(
        "iter_coarse_25x33",
        "iteration 25x33, 32 ch, stage 0, unit update",
        "s",
        "0.07",  # issue 6
        0.15,  # issue 6: PyTorch SinGAN's coarsest stage
        0.15,  # issue 6: no slower than PyTorch
        "<= PyTorch 0.15",
    ),
)


@dataclasses.dataclass(frozen=True)
class Target:
    """One whole-process CPU target: a config trained and sampled from the shell,
    timed side by side with the official program it is compared with."""

    key: str
    config: str  # --config value
    max_size: int
    official: str  # "singan" or "consingan": benchmarks/official.py


# Issue 13: whole process (train + 50 samples, cold compile) at most AIM x the
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
)


@dataclasses.dataclass(frozen=True)
class GpuTarget:
    """One GPU bound of issue 6 and the row of the GPU suite that measures it."""

    key: str
    what: str
    bound: str
    config: str = ""  # the config whose training the bound is about


GPU_TARGETS: tuple[GpuTarget, ...] = (
    # issue 6: AGAN at paper size (250 px, 6 stages x 2000 iterations) on an H100.
    GpuTarget(
        "agan_train",
        "configs/agan.py:gpu training, H100",
        "<= 60 s",
        "configs/agan.py:gpu",
    ),
    # issue 6: SinGAN at paper size on an H100.
    GpuTarget(
        "singan_train",
        "configs/singan.py:gpu training, H100",
        "<= 120 s",
        "configs/singan.py:gpu",
    ),
    # issue 6: report the achieved fraction of the device's conv throughput.
    GpuTarget(
        "flops", "achieved fraction of measured conv throughput (AGAN :gpu)", "report"
    ),
    # issue 6: vmap'd sampling at 250 px in large batches.
    GpuTarget(
        "sampling", "sampling at 250 px (vmap, large batch)", ">= 2,000 samples/s"
    ),
    # issue 6: a fresh process loading a run, with the persistent cache warm.
    GpuTarget(
        "first_sample",
        "time to first sample after loading a run (warm cache)",
        "<= 5 s",
    ),
    # issue 6: a table of peak device memory by max_size.
    GpuTarget("memory", "peak device memory at max_size 250 / 500 / 1000", "table"),
    # issue 6: max_size 1000 must train on a 16 GB device.
    GpuTarget("memory_1000", "max_size 1000 training within 16 GB", "<= 16 GB"),
)
GPU_BOUNDS = {t.key: t for t in GPU_TARGETS}


def training_bound(config: str) -> str:
    """Issue 6's GPU training bound of a config name ('-' if it has none)."""
    return next((t.bound for t in GPU_TARGETS if t.config and t.config == config), "-")
