"""Recorded outputs of every family's tiny training, checked at a tolerance that
holds on any CPU.

`tests/test_golden.py` trains each family's tiny config (the session fixtures of
tests/conftest.py) and compares two things with `tests/data/golden.json`:

- the losses logged during training (every stage, every logged iteration:
  critic loss, gradient penalty, adversarial, reconstruction and TV terms);
- pictures of what the trained pyramid makes: the reconstruction of the training
  image and two samples drawn with fixed keys, each as its mean, standard
  deviation and a 4x4 grid of block means per channel.

Why not the weights: XLA compiles one program differently for different CPUs
(vector width, fused kernels), and Adam turns a float-noise gradient (a conv
bias before BatchNorm, whose true gradient is 0) into a full +-lr step, so the
saved weights of two CPU kinds differ by up to their own scale after 60 updates
while every output that the model computes stays close. The tolerances below
were chosen from the spread measured on one machine by compiling the same
training along other code paths (`python -m tests.golden --spread`: XLA flags
that cap the vector instructions at AVX2 or SSE4.2, or run Eigen's convolutions
single-threaded); docs/performance.md ("Numerical check across CPU kinds") has
the measured spread and how far each deliberate break of the objective or the
update moves the same numbers.

  python -m tests.golden --write     record this machine's outputs (only when a
                                     change is meant to alter training: say so in
                                     the commit message)
  python -m tests.golden --check     compare this machine with the record
  python -m tests.golden --spread    the spread across XLA code paths
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import numpy as np

from tests.conftest import tiny_config

PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "golden.json")

# case -> (config module, variant): the families the record covers, each the
# configuration of a session fixture of tests/conftest.py.
CASES = {
    "singan": ("singan", "tiny"),
    "agan_circ": ("agan", "tiny"),
    "consingan": ("consingan", "tiny"),
}
LOSS_KEYS = ("d_loss", "gp", "g_adv", "rec", "tv")
# Iterations per stage, every one logged: few enough that rounding differences
# stay far below what a change of the objective moves (module docstring).
ITERS = int(os.environ.get("GOLDEN_ITERS", 2))
# |got - want| <= the key's tolerance, per value: about 3x the largest
# difference measured between code paths (module docstring). The adversarial
# terms (d_loss, gp, g_adv) move most: Adam's first steps are nearly
# sign(gradient), so rounding flips the step of near-zero gradients.
LOSS_ATOL = {"d_loss": 0.03, "gp": 0.25, "g_adv": 0.03, "rec": 0.01, "tv": 0.005}
IMAGE_ATOL = 0.04
# XLA flags whose programs compute the same maths along other code paths.
CODE_PATHS = {
    "default": "",
    "avx2": "--xla_cpu_max_isa=AVX2",
    "sse4_2": "--xla_cpu_max_isa=SSE4_2",
    "eigen_single_thread": "--xla_cpu_multi_thread_eigen=false",
}


def image_summary(x) -> list[float]:
    """[mean, std, then the 4x4 block means of each channel] of an HWC image."""
    x = np.asarray(x, np.float64)
    blocks = [
        b.mean(axis=(0, 1))
        for rows in np.array_split(x, 4, axis=0)
        for b in np.array_split(rows, 4, axis=1)
    ]
    return [float(x.mean()), float(x.std())] + np.ravel(blocks).tolist()


def logged_losses(workdir: str) -> dict[str, float]:
    """{'STAGE/ITERATION/KEY': value} of every logged loss in metrics.jsonl."""
    out = {}
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            rec = json.loads(line)
            if "iter" not in rec:
                continue
            for k in LOSS_KEYS:
                if k in rec:
                    out[f"{rec['stage']}/{rec['iter']}/{k}"] = float(rec[k])
    return out


def outputs(workdir: str) -> dict[str, list[float]]:
    """Summaries of the reconstruction and two fixed-key samples of a run."""
    import jax

    from agan_jax import checkpoint, sampling

    sampler = sampling.Sampler(checkpoint.load_run(workdir))
    samples = sampler.draw(jax.random.key(0), np.arange(2))
    out = {"reconstruction": image_summary(sampler.reconstruct())}
    for i, x in enumerate(samples):
        out[f"sample_{i}"] = image_summary(x)
    return out


def record_run(workdir: str) -> dict:
    """What the record holds of one trained run."""
    return {"losses": logged_losses(workdir), "outputs": outputs(workdir)}


def train_case(case: str, workdir: str, compile_workers: int = 0) -> dict:
    """Trains one case's tiny config in workdir (`compile_workers`: its
    train.compile_workers); its record."""
    from agan_jax import train

    name, variant = CASES[case]
    config = tiny_config(name, variant)
    config.train.iters_per_stage = ITERS
    config.train.log_every = 1
    config.train.compile_workers = compile_workers
    train.train(config, workdir, progress=False)
    return record_run(workdir)


def tolerance(part: str, name: str) -> float:
    """The tolerance of one recorded value ('losses' keys end in the loss name)."""
    return LOSS_ATOL[name.rsplit("/", 1)[-1]] if part == "losses" else IMAGE_ATOL


def excess(part: str, name: str, got, want) -> np.ndarray:
    """|got - want| as a multiple of the tolerance, per value."""
    diff = np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64))
    return np.ravel(diff / tolerance(part, name))


def compare(case: str, got: dict, want: dict) -> list[str]:
    """Values of `got` beyond the tolerance from `want` (the worst first)."""
    named, bad = [], []
    for part in ("losses", "outputs"):
        g, w = got[part], want[part]
        if set(g) != set(w):
            named.append(f"{case} {part}: keys differ: {sorted(set(g) ^ set(w))[:6]}")
        for name in sorted(set(g) & set(w)):
            e = excess(part, name, g[name], w[name])
            if e.max() > 1:
                i = int(np.argmax(e))
                gv, wv = np.ravel(g[name])[i], np.ravel(w[name])[i]
                bad.append(
                    (
                        float(e.max()),
                        f"{case} {part} {name}: {gv:.6g} against {wv:.6g} "
                        f"({e.max():.3g} x the tolerance)",
                    )
                )
    return named + [m for _, m in sorted(bad, reverse=True)]


def worst(case: str, got: dict, want: dict) -> dict[str, float]:
    """The largest difference of each part, as a multiple of its tolerance."""
    out = {}
    for part in ("losses", "outputs"):
        names = set(got[part]) & set(want[part])
        out[part] = max(
            float(excess(part, n, got[part][n], want[part][n]).max()) for n in names
        )
    return out


def load() -> dict:
    """The record: {case: {"losses": ..., "outputs": ...}}."""
    with open(PATH) as f:
        return json.load(f)["cases"]


def _record(cases) -> dict:
    out = {}
    for case in cases:
        with tempfile.TemporaryDirectory() as d:
            out[case] = train_case(case, d)
            print(case, len(out[case]["losses"]), "losses", flush=True)
    return out


def spread(cases) -> None:
    """Trains the cases along every code path (a process each, persistent cache
    off) and prints each path's worst difference from the default path."""
    runs = {}
    keep = os.environ.get("GOLDEN_SPREAD_DIR")
    with tempfile.TemporaryDirectory() as tmp:
        d = keep or tmp
        for path, flags in CODE_PATHS.items():
            out = os.path.join(d, f"{path}.json")
            env = {**os.environ, "XLA_FLAGS": flags, "AGAN_JAX_CACHE": "off"}
            cmd = [sys.executable, "-m", "tests.golden", "--dump", out, *cases]
            subprocess.run(cmd, check=True, env=env)
            with open(out) as f:
                runs[path] = json.load(f)
    base = runs.pop("default")
    for path, got in runs.items():
        for case in cases:
            print(path, case, worst(case, got[case], base[case]), flush=True)


def main(argv: list[str]) -> None:
    cases = [a for a in argv if a in CASES] or list(CASES)
    if "--check" in argv:
        want = load()
        for case in cases:
            with tempfile.TemporaryDirectory() as d:
                got = train_case(case, d)
            bad = compare(case, got, want[case])
            print(case, worst(case, got, want[case]), *bad[:5], sep="\n  ")
    elif "--write" in argv:
        os.makedirs(os.path.dirname(PATH), exist_ok=True)
        with open(PATH, "w") as f:
            json.dump({"cases": _record(cases)}, f, indent=0, sort_keys=True)
        print("wrote", PATH)
    elif "--dump" in argv:
        with open(argv[argv.index("--dump") + 1], "w") as f:
            json.dump(_record(cases), f)
    elif "--spread" in argv:
        spread(cases)
    else:
        print(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
