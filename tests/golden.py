"""Fingerprints of the weights every model family trains on its tiny config.

`tests/test_golden.py` trains each tiny config and compares the checkpoints with
`tests/data/golden_weights.json`. Regenerate that file only when a change is
meant to alter training (say so in the commit message):

  python -m tests.golden --write     (replaces every machine's set by this one's)

A fingerprint per array: its sum, its sum of squares and 4 values at fixed
positions, for every leaf of every stage's saved tree (generator and critic
variables, noise amplitude).

History: recorded with the two trainers before issue 10's single stage loop; the
unified loop reproduces them at 1e-6 except `consingan_harmonization`, re-recorded
then: the old ConSinGAN trainer computed the noise amplitude as a float32 product
on the device, the unified loop computes it as SinGAN always did (float64 on the
host, then float32), which moved its stage-2 amplitude by one float32 ulp
(0.018687842 -> 0.018687841) and, through 20 Adam steps, its stage-2 weights.
Re-recorded for every case with issue 11 (the official programs' stage sizes,
SinGAN's update rule and learning-rate step, ConSinGAN's BatchNorm and recipes),
which change what every family trains on purpose. Re-recorded for SinGAN and
AGAN (`singan`, `agan_*`) when official SinGAN's stage-0 z* redraw became their
default (train.stage0_rec_noise=auto); ConSinGAN's entries came out unchanged.
Re-recorded for every case when the tiny variant moved to LLVM O0
(train.xla_backend_opt_level=0, configs/default.py) to shorten the suite's
compiles: the same maths compiled differently moved the weights after 20 Adam
steps by up to 5e-4.

One set per machine kind. XLA compiles the same program differently for
different CPUs, and 60 GAN updates carry the rounding differences far: the same
commit, jax 0.10.2, on a 2-core AMD EPYC with AVX-512 trained SinGAN's stage-2
weights up to 1.06 x their scale away from the set recorded before it (stage 0
within 0.013, ConSinGAN within 0.07), and identically run after run. The file
holds one set per machine kind it was recorded on; a run must equal one of them
(1e-6). On a machine kind none matches, with the maths unchanged (check that the
previous commit fails the same way), add its set:

  python -m tests.golden --add
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile

import numpy as np

from tests.conftest import tiny_config

PATH = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "data", "golden_weights.json"
)

# (config module, variant): the families and schedules the fingerprints cover.
CASES = {
    "singan": ("singan", "tiny"),
    "agan_cos": ("agan", "cos,tiny"),
    "agan_quad": ("agan", "quad,tiny"),
    "agan_circ": ("agan", "circ,tiny"),
    "consingan": ("consingan", "tiny"),
    "consingan_harmonization": ("consingan", "harmonization,tiny"),
}


def _leaves(tree, prefix=""):
    if isinstance(tree, dict):
        for k in sorted(tree):
            yield from _leaves(tree[k], f"{prefix}/{k}")
    else:
        yield prefix, np.asarray(tree, np.float64)


def fingerprint_array(x: np.ndarray) -> list[float]:
    """[sum, sum of squares, 4 values at positions spread over the array]."""
    flat = x.reshape(-1)
    idx = np.linspace(0, max(flat.size - 1, 0), 4).astype(int)
    return [float(flat.sum()), float((flat**2).sum())] + [float(flat[i]) for i in idx]


def fingerprint_run(workdir: str) -> dict[str, list[float]]:
    """Fingerprints of every stage's generator and critic variables in a run."""
    from agan_jax import checkpoint

    store = checkpoint.RunStore(workdir)
    out = {}
    try:
        for s in store.finished_stages():
            tree = store.load_stage(s)
            for part in ("g_vars", "d_vars", "noise_amp"):
                for name, x in _leaves(tree[part], f"{s}/{part}"):
                    if x.dtype.kind == "f" or x.dtype.kind == "i":
                        out[name] = fingerprint_array(np.asarray(x, np.float64))
    finally:
        store.close()
    return out


def train_case(case: str, workdir: str) -> dict[str, list[float]]:
    """Trains one case's tiny config in workdir; its fingerprints."""
    from agan_jax import train

    name, variant = CASES[case]
    train.train(tiny_config(name, variant), workdir, progress=False)
    return fingerprint_run(workdir)


def compare(case: str, got: dict, want: dict, atol: float = 1e-6) -> list[str]:
    """Names (with the largest difference) of arrays that differ beyond atol."""
    bad = []
    if set(got) != set(want):
        bad.append(f"{case}: arrays differ: {sorted(set(got) ^ set(want))[:6]}")
    for name in sorted(set(got) & set(want)):
        diff = max(abs(a - b) for a, b in zip(got[name], want[name], strict=True))
        scale = max(1.0, abs(want[name][1]) ** 0.5)
        if diff > atol * scale:
            bad.append(f"{case} {name}: max difference {diff:.3g}")
    return bad


def machine() -> str:
    """This machine's kind, as a label: architecture, CPU model, AVX-512 or not."""
    model, isa = platform.processor() or "unknown CPU", "?"
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        info = ""
    for line in info.splitlines():
        if line.startswith("model name") and ":" in line:
            model = line.split(":", 1)[1].strip()
            break
    if info:
        isa = "AVX-512" if "avx512f" in info else "no AVX-512"
    return f"{platform.machine()} {model}, {isa}"


def load() -> list[dict]:
    """The recorded sets: [{"machine": label, "cases": {case: fingerprints}}]."""
    with open(PATH) as f:
        return json.load(f)["sets"]


def compare_sets(case: str, got: dict, sets: list[dict]) -> list[str]:
    """[] when `got` equals the case in one of the recorded sets; otherwise, per
    set, its machine and the first differences."""
    report = []
    for entry in sets:
        bad = compare(case, got, entry["cases"][case])
        if not bad:
            return []
        report.append(f"{entry['machine']}: {len(bad)} arrays differ, e.g. {bad[:2]}")
    return report


def _record(cases) -> dict:
    out = {}
    for case in cases:
        with tempfile.TemporaryDirectory() as d:
            out[case] = train_case(case, d)
            print(case, len(out[case]), "arrays")
    return out


def _save(sets: list[dict]) -> None:
    os.makedirs(os.path.dirname(PATH), exist_ok=True)
    with open(PATH, "w") as f:
        json.dump({"sets": sets}, f, indent=0, sort_keys=True)
    print("wrote", PATH, "with", len(sets), "machine set(s)")


def main(argv: list[str]) -> None:
    if "--check" in argv:
        sets = load()
        cases = [a for a in argv if a in CASES] or list(CASES)
        for case in cases:
            with tempfile.TemporaryDirectory() as d:
                bad = compare_sets(case, train_case(case, d), sets)
            print(case, "OK" if not bad else "matches no set", *bad, sep="\n  ")
        return
    if "--write" in argv:
        _save([{"machine": machine(), "cases": _record(CASES)}])
    elif "--add" in argv:
        sets = [e for e in load() if e["machine"] != machine()]
        _save([*sets, {"machine": machine(), "cases": _record(CASES)}])
    else:
        print(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
