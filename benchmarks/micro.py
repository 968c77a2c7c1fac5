"""Microbenchmarks: one training iteration, the gradient penalty,
compile times, XLA flags; one function per measured fact, each returning seconds.

Every `*_s` function builds what it measures from scratch (benchmarks/stage.py),
runs it and returns seconds (per iteration, per call or per compile).
`run_micro` measures the rows of `references.FIGURES`; `format_micro` prints
them beside the row of the same run each is compared with.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax

from agan_jax import losses
from agan_jax.models import families
from agan_jax.train import updates
from agan_jax.train.programs import Stages, compile_stage, plan_stages
from benchmarks import common, references, stage
from benchmarks.stage import Size


def iteration_jit_s(
    hw: Size = (49, 64), width: int = 64, calls: int = 3, **kw
) -> float:
    """One iteration jitted alone (compile_unit 'iteration', steps_per_call 1)."""
    return stage.measure_iteration(
        hw, width, compile_unit="iteration", calls=calls, **kw
    ).iter_s


def iteration_scan_s(
    hw: Size = (49, 64), width: int = 64, k: int = 2, calls: int = 1, **kw
) -> float:
    """Per iteration, inside a lax.scan of k iterations (steps_per_call = k)."""
    return stage.measure_iteration(
        hw, width, compile_unit="iteration", steps_per_call=k, calls=calls, **kw
    ).iter_s


def iteration_update_s(
    hw: Size = (49, 64), width: int = 64, calls: int = 3, **kw
) -> float:
    """One iteration as d_steps + g_steps compiled update calls (unit 'update')."""
    return stage.measure_iteration(
        hw, width, compile_unit="update", calls=calls, **kw
    ).iter_s


def _critic_and_input(hw: Size, width: int, num_layers: int = 5, seed: int = 0):
    settings = stage.with_fields(
        common.settings_of(stage.MICRO_CONFIG),
        nfc=width,
        max_nfc=width,
        num_layers=num_layers,
    )
    spec = settings.model
    d_mod = families.of(spec).make_discriminator(spec, 0)
    x = jax.random.uniform(jax.random.key(seed), (*hw, 3), minval=-1.0, maxval=1.0)
    d_vars = d_mod.init(jax.random.key(seed + 1), x[None], train=False)

    def critic_of(params):
        return updates.critic_of(d_mod, d_vars, params)

    return d_vars["params"], critic_of, x


def gp_param_grad_fn(
    mode: str, hw: Size = (49, 64), width: int = 64, num_layers: int = 5
):
    """(jitted params -> parameter gradient of the penalty, params, x) for one mode.

    'double_grad': grad of `losses.gradient_penalty` (a gradient of a gradient);
    'jvp': grad of `losses.penalty_surrogate` (same gradient, cheaper).
    """
    params, critic_of, x = _critic_and_input(hw, width, num_layers)

    def objective(p, x):
        if mode == "jvp":
            return losses.penalty_surrogate(critic_of(p), x)[0]
        if mode == "double_grad":
            return losses.gradient_penalty(critic_of(p), x)
        raise ValueError(f"gp mode must be 'jvp' or 'double_grad', got {mode!r}")

    return jax.jit(jax.grad(objective)), params, x


def gp_grad_s(
    mode: str,
    hw: Size = (49, 64),
    width: int = 64,
    calls: int = 5,
    num_layers: int = 5,
) -> float:
    """Seconds per call of the gradient penalty's parameter gradient."""
    fn, params, x = gp_param_grad_fn(mode, hw, width, num_layers)
    return common.time_fn(lambda: fn(params, x), calls)


def d_update_s(
    mode: str, hw: Size = (49, 64), width: int = 64, calls: int = 3, **kw
) -> float:
    """Seconds per critic update (fresh fake, WGAN loss, penalty, Adam) in one mode."""
    setup = stage.step_setup(hw, width, 1, gp_mode=mode, **kw)
    fn = (
        jax.jit(setup.fns.d_step, donate_argnums=(0,))
        .lower(setup.state, setup.data)
        .compile()
    )
    return common.time_calls(fn, setup.state, setup.data, calls)[0]


def stage_compile_s(
    hw: Size = (49, 64),
    width: int = 64,
    lower: int = 1,
    compile_unit: str = "update",
    num_layers: int = 5,
    **values: Any,
) -> float:
    """Seconds to compile one stage's programs (init, runner, reconstruction
    input) from abstract shapes as training does (`train.programs.compile_stage`),
    persistent cache off, no sample-grid sampler."""
    base = common.settings_of(stage.MICRO_CONFIG)
    settings = stage.with_fields(
        base,
        nfc=width,
        max_nfc=width,
        num_layers=num_layers,
        compile_unit=compile_unit,
        steps_per_call=1,
        stage_samples=0,
        **values,
    )
    stages = Stages(
        families.of(settings.model), settings, stage.pyramid_sizes(hw, lower)
    )
    with common.no_persistent_cache():
        plan = plan_stages(stages, 0, lower, None, None, [], None)
        t0 = time.perf_counter()
        compile_stage(stages, lower, plan[lower])
        return time.perf_counter() - t0


@dataclasses.dataclass(frozen=True)
class MicroSizes:
    """Image sizes and widths of the microbenchmarks (full, or tiny ones).

    `values`: further settings of every stage (tiny: one update each and 2
    convolutions per network, for short compiles).
    """

    mid: Size = (49, 64)
    big: Size = (97, 128)
    coarse: Size = (25, 33)
    width: int = 64
    coarse_width: int = 32
    scan_k: int = 2
    calls: int = 3
    values: tuple[tuple[str, Any], ...] = ()


FULL = MicroSizes()
TINY = MicroSizes(
    (12, 16),
    (16, 20),
    (10, 12),
    8,
    8,
    2,
    1,
    (("d_steps", 1), ("g_steps", 1), ("num_layers", 2)),
)
# Figures measured in child processes (their XLA_FLAGS differ).
CHILD_FIGURES = ("iter_97x128", "iter_97x128_xnnpack")


def run_micro(
    sizes: MicroSizes = FULL,
    only: Sequence[str] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, float]:
    """Measures every figure of references.FIGURES (or those in `only`)."""
    m, b, c, w, n = sizes.mid, sizes.big, sizes.coarse, sizes.width, sizes.calls
    kw = dict(sizes.values)
    nl = kw.get("num_layers", 5)
    kw_no_layers = {k: v for k, v in kw.items() if k != "num_layers"}
    x = references.XNNPACK
    jobs: dict[str, Callable[[], float]] = {
        "iter_jit_49x64": lambda: iteration_jit_s(m, w, n, **kw),
        "iter_scan_49x64": lambda: iteration_scan_s(m, w, sizes.scan_k, **kw),
        "iter_update_49x64": lambda: iteration_update_s(m, w, n, **kw),
        "gp_double_grad_49x64": lambda: gp_grad_s("double_grad", m, w, 2 * n + 1, nl),
        "gp_jvp_49x64": lambda: gp_grad_s("jvp", m, w, 2 * n + 1, nl),
        "d_update_double_grad_49x64": lambda: d_update_s("double_grad", m, w, n, **kw),
        "d_update_jvp_49x64": lambda: d_update_s("jvp", m, w, n, **kw),
        "iter_97x128": lambda: (
            stage.iteration_in_child(hw=b, width=w, calls=n, **kw).iter_s
        ),
        "iter_97x128_xnnpack": lambda: (
            stage.iteration_in_child(x, hw=b, width=w, calls=n, **kw).iter_s
        ),
        "compile_iteration_49x64": lambda: stage_compile_s(
            m, w, 1, "iteration", nl, **kw_no_layers
        ),
        "compile_update_49x64": lambda: stage_compile_s(
            m, w, 1, "update", nl, **kw_no_layers
        ),
        "iter_coarse_25x33": lambda: iteration_update_s(
            c, sizes.coarse_width, n, lower=0, **kw
        ),
    }
    out = {}
    for fig in references.FIGURES:
        if only is not None and fig.key not in only:
            continue
        t0 = time.perf_counter()
        out[fig.key] = jobs[fig.key]()
        if log:
            log(f"{fig.key}: {out[fig.key]:.4f} s ({time.perf_counter() - t0:.0f} s)")
    return out


def _fig_num(x: float | None, unit: str) -> str:
    if x is None:
        return "-"
    if unit == "ms":
        return f"{x:.0f}" if x >= 10 else f"{x:.2f}"
    return f"{x:.3f}" if x < 1 else f"{x:.2f}"


COLUMNS = (
    "key",
    "figure",
    "unit",
    "measured",
    "compared with",
    "ratio",
    "target",
    "meets",
)


def format_micro(
    measured: dict[str, float], header: str = "", comparable: bool = True
) -> str:
    """Markdown table: one row per figure, measured beside the row of the same
    run it is compared with (their ratio) and the target; figures not measured
    say so. `comparable=False` (tiny sizes) leaves the 'meets' column empty."""
    rows = []
    for fig in references.FIGURES:
        scale = 1000.0 if fig.unit == "ms" else 1.0
        value = measured.get(fig.key)
        shown = "not measured" if value is None else _fig_num(value * scale, fig.unit)
        other = measured.get(fig.against) if fig.against else None
        ratio = "-" if value is None or not other else f"{value / other:.2f}"
        meets = "-"
        if comparable and ratio != "-" and fig.at_most:
            meets = "yes" if value <= other else "no"
        against = fig.against or "-"
        row = (fig.key, fig.what, fig.unit, shown, against, ratio, fig.target_text)
        rows.append((*row, meets))
    body = common.table(COLUMNS, rows)
    return f"{header}\n\n{body}" if header else body


def suite(
    sizes: str = "full",
    only: Sequence[str] | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[str, dict]:
    """`--suite=micro`: (the table with its header, raw results).

    sizes: 'full' (49x64 to 97x128, about 4 min on 2 quiet cores) or 'tiny'.
    """
    header = common.environment()
    measured = run_micro(TINY if sizes == "tiny" else FULL, only, log)
    note = "" if sizes == "full" else " (TINY sizes: rows not comparable)"
    text = format_micro(measured, header + note, comparable=not note)
    text += f"\n\nload average at the end: {common.load_average():.1f}"
    return text, {"env": header, "sizes": sizes, "measured": measured}
