"""What every suite shares: the environment header, timing, child processes,
configs by name, and markdown tables.

Steps are timed as the median of `calls` waited-for calls after one warm-up call,
so one slow call on a loaded machine does not move the figure much; `interleave`
runs variants in turns, so load drift hits every variant alike.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUNDLED_IMAGE = os.path.join(ROOT, "data", "colusseum.png")


# ----------------------------------------------------------------------------
# The header of every table.


def environment(xla_flags: str | None = None) -> str:
    """Device, host cores, load, versions, XLA_FLAGS and date: a table's header."""
    import flax

    dev = jax.devices()[0]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    flags = os.environ.get("XLA_FLAGS", "") if xla_flags is None else xla_flags
    return (
        f"device: {dev.platform} ({getattr(dev, 'device_kind', '')}), "
        f"{os.cpu_count()} host cores, load average {load:.1f}, jax {jax.__version__}, "
        f"flax {flax.__version__}, python {sys.version.split()[0]}, "
        f"XLA_FLAGS={flags or '(none)'}, {time.strftime('%Y-%m-%d %H:%M')}"
    )


def load_average() -> float:
    """The 1-minute load average (nan where the OS has none)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan


# ----------------------------------------------------------------------------
# Timing.


def time_fn(fn: Callable[[], Any], calls: int = 3) -> float:
    """Median seconds of `calls` waited-for calls of fn(), after one warm-up call."""
    jax.block_until_ready(fn())
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_calls(
    run: Callable, state: Any, data: Any, calls: int, per_call: int = 1
) -> tuple[float, Any]:
    """Median seconds per iteration of a runner over `calls` waited-for calls,
    after a warm-up call. Returns (seconds, final state); `run` may donate
    `state`, so only the returned state may be used afterwards."""
    state, _ = run(state, data)
    jax.block_until_ready(state)
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        state, m = run(state, data)
        jax.block_until_ready((state, m))
        times.append((time.perf_counter() - t0) / per_call)
    return statistics.median(times), state


def interleave(
    variants: Mapping[str, Callable[[], float]], rounds: int = 3
) -> dict[str, list[float]]:
    """Runs every variant once per round, in turns (order reversed every other
    round); returns the seconds each call returned."""
    out: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(rounds):
        for name in list(variants) if r % 2 == 0 else list(reversed(variants)):
            out[name].append(variants[name]())
    return out


@contextlib.contextmanager
def no_persistent_cache() -> Iterator[None]:
    """Compiles inside really compile: the persistent XLA cache is off meanwhile.

    The only process-wide jax.config write of the harness, undone on exit.
    """
    from jax.experimental.compilation_cache import compilation_cache as cc

    old = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    cc.reset_cache()
    try:
        yield
    finally:
        jax.config.update("jax_enable_compilation_cache", old)
        cc.reset_cache()


# ----------------------------------------------------------------------------
# Child processes: other XLA_FLAGS, whole-process wall times.


def child_env(xla_flags: str = "", cache: str = "off") -> dict[str, str]:
    """The environment of a child: XLA_FLAGS of this process plus `xla_flags`,
    AGAN_JAX_CACHE=`cache` ('off': compilation is counted), warnings off."""
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env["XLA_FLAGS"] = " ".join(f for f in (env.get("XLA_FLAGS", ""), xla_flags) if f)
    env["AGAN_JAX_CACHE"] = cache
    env["PYTHONWARNINGS"] = "ignore"
    return env


def run_command(
    args: Sequence[str], env: Mapping[str, str] | None = None, timeout: float = 7200
) -> tuple[float, subprocess.CompletedProcess]:
    """Runs `python -m ...`-style args from the repository root; (seconds, result)."""
    t0 = time.perf_counter()
    p = subprocess.run(
        list(args),
        cwd=ROOT,
        env=dict(env) if env is not None else child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return time.perf_counter() - t0, p


@dataclasses.dataclass
class Measured:
    """One child process: wall seconds, user+sys CPU seconds, peak RSS (MiB),
    exit status and the ends of its stderr and stdout."""

    wall_s: float
    cpu_s: float
    rss_mib: float
    returncode: int
    stderr: str
    stdout: str = ""


def run_measured(
    args: Sequence[str],
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    timeout: float = 7200,
) -> Measured:
    """Runs `args` as one child process; its own wall time, CPU time and peak RSS
    (os.wait4's resource usage of that child alone, so children measured in turn
    do not mix). Output goes to temporary files; a child past `timeout` is killed."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(
            list(args),
            cwd=cwd or ROOT,
            env=dict(env) if env is not None else child_env(),
            stdout=out,
            stderr=err,
        )
        timer = threading.Timer(timeout, p.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(p.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        tail = err.read()[-2000:].decode(errors="replace")
        out.seek(0)
        out_tail = out.read()[-2000:].decode(errors="replace")
    # ru_maxrss is KiB on Linux.
    return Measured(
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        rss_mib=usage.ru_maxrss / 1024.0,
        returncode=p.returncode,
        stderr=tail,
        stdout=out_tail,
    )


def child_result(
    module: str, kw: Mapping[str, Any], tag: str, xla_flags: str = "", timeout=1800
) -> Any:
    """Runs `python -m module child JSON(kw)` with these XLA_FLAGS (persistent
    cache off) and returns the JSON its stdout printed after `tag`."""
    _, p = run_command(
        python_module(module, "child", json.dumps(kw)), child_env(xla_flags), timeout
    )
    for line in p.stdout.splitlines():
        if line.startswith(tag):
            return json.loads(line[len(tag) :])
    raise RuntimeError(f"child run failed (rc {p.returncode}): {p.stderr[-2000:]}")


def python_module(module: str, *args: str) -> list[str]:
    """[python, -m, module, args...] with this interpreter."""
    return [sys.executable, "-m", module, *args]


# ----------------------------------------------------------------------------
# Configs by name.


def load_config(name: str):
    """The ConfigDict of 'configs/agan.py:gpu,circ'-style names (as --config)."""
    path, _, arg = name.partition(":")
    full = path if os.path.isabs(path) else os.path.join(ROOT, path)
    if not os.path.exists(full):
        raise FileNotFoundError(f"{path} does not exist")
    rel = os.path.relpath(full, ROOT)
    if rel.startswith("configs" + os.sep) and rel.endswith(".py"):
        module = importlib.import_module(rel[:-3].replace(os.sep, "."))
    else:
        spec = importlib.util.spec_from_file_location("bench_config", full)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module.get_config(arg or None)


def override(config, values: Mapping[str, Any]):
    """A copy of the config with dotted fields set ({'train.iters_per_stage': 5})."""
    config = config.copy_and_resolve_references()
    for dotted, value in values.items():
        *path, last = dotted.split(".")
        node = config
        for p in path:
            node = node[p]
        if last not in node:
            raise KeyError(f"the config has no field {dotted}")
        node[last] = value
    return config


def settings_of(name_or_config, values: Mapping[str, Any] | None = None):
    """`Settings.from_config` of a config (or its name) with `values` set."""
    from agan_jax.settings import Settings

    config = name_or_config
    if isinstance(config, str):
        config = load_config(config)
    return Settings.from_config(override(config, values or {}))


# ----------------------------------------------------------------------------
# Markdown.


def num(x: float | None, digits: int = 3) -> str:
    """A figure with `digits` significant digits, '-' for None or nan."""
    if x is None or not math.isfinite(x):
        return "-"
    if x == 0:
        return "0"
    if abs(x) >= 10 ** (digits - 1):
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        if len(row) != len(columns):
            raise ValueError(f"row of {len(row)} cells for {len(columns)} columns")
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines)


def human_bytes(n: float | None) -> str:
    """Bytes as GiB/MiB, 'n/a' for None."""
    if n is None:
        return "n/a"
    if n >= 2**30:
        return f"{n / 2**30:.2f} GiB"
    return f"{n / 2**20:.1f} MiB"
