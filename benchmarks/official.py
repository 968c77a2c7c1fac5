"""The official SinGAN and ConSinGAN programs, run from checkouts the user provides.

Nothing of theirs is in this repository, and nothing here obtains or builds them:
`--official_singan=DIR` / `--official_consingan=DIR` (or the environment variables
AGAN_OFFICIAL_SINGAN / AGAN_OFFICIAL_CONSINGAN) name a local checkout that already
runs on the user's PyTorch, and `--official_python` (AGAN_OFFICIAL_PYTHON) the
interpreter that has PyTorch (default: this one). This module knows only their
command lines: which script trains, which one draws 50 samples, and their flags.

Each program runs with a temporary working directory, so its TrainedModels/ and
Output/ folders are written there and the checkout is left as it was.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import shutil
import sys

ENV = {"singan": "AGAN_OFFICIAL_SINGAN", "consingan": "AGAN_OFFICIAL_CONSINGAN"}
PYTHON_ENV = "AGAN_OFFICIAL_PYTHON"
NAMES = {"singan": "official SinGAN", "consingan": "official ConSinGAN"}
SCRIPTS = {
    "singan": ("main_train.py", "random_samples.py"),
    "consingan": ("main_train.py", "evaluate_model.py"),
}


@dataclasses.dataclass(frozen=True)
class Command:
    """One process to run: argv and its working directory."""

    argv: tuple[str, ...]
    cwd: str


def checkout(program: str, given: str | None) -> str | None:
    """The checkout of `program` ('singan' or 'consingan'): the flag's value, else
    the environment variable, else None (no comparison)."""
    path = given or os.environ.get(ENV[program]) or None
    if path is None:
        return None
    path = os.path.abspath(os.path.expanduser(path))
    missing = [s for s in SCRIPTS[program] if not os.path.isfile(os.path.join(path, s))]
    if missing:
        raise FileNotFoundError(
            f"{NAMES[program]} checkout {path} has no {', '.join(missing)}: pass the "
            f"folder that holds {SCRIPTS[program][0]} (--official_{program} or "
            f"${ENV[program]})"
        )
    return path


def python(given: str | None) -> str:
    """The interpreter that runs the official programs."""
    return given or os.environ.get(PYTHON_ENV) or sys.executable


def train_command(
    program: str,
    root: str,
    py: str,
    image: str,
    max_size: int,
    iters: int,
    seed: int,
    cwd: str,
) -> Command:
    """The official training command for `image` at `max_size`, `iters` per stage,
    on the CPU, run in `cwd`."""
    image = os.path.abspath(image)
    script = os.path.join(root, SCRIPTS[program][0])
    common = ["--not_cuda", "--max_size", str(max_size), "--niter", str(iters)]
    common += ["--manualSeed", str(seed)]
    if program == "singan":
        args = ["--input_dir", os.path.dirname(image)]
        args += ["--input_name", os.path.basename(image)]
    else:
        args = ["--gpu", "0", "--train_mode", "generation", "--input_name", image]
    return Command((py, script, *common, *args), cwd)


def sample_command(
    program: str,
    root: str,
    py: str,
    image: str,
    max_size: int,
    seed: int,
    num_samples: int,
    cwd: str,
) -> Command:
    """The official command that draws `num_samples` random samples of the run
    trained in `cwd` (official SinGAN always draws 50)."""
    image = os.path.abspath(image)
    script = os.path.join(root, SCRIPTS[program][1])
    if program == "singan":
        args = ["--not_cuda", "--input_dir", os.path.dirname(image)]
        args += ["--input_name", os.path.basename(image), "--mode", "random_samples"]
        args += ["--gen_start_scale", "0", "--max_size", str(max_size)]
        args += ["--manualSeed", str(seed)]
        return Command((py, script, *args), cwd)
    stem = os.path.splitext(os.path.basename(image))[0]
    runs = sorted(glob.glob(os.path.join(cwd, "TrainedModels", stem, "*")))
    model_dir = runs[-1] if runs else os.path.join(cwd, "TrainedModels", stem, "?")
    args = ["--not_cuda", "--gpu", "0", "--model_dir", model_dir]
    args += ["--num_samples", str(num_samples)]
    return Command((py, script, *args), cwd)


def sample_files(program: str, cwd: str) -> list[str]:
    """The samples the official sampling command wrote under `cwd` (SinGAN's
    random_samples.py writes PNGs, ConSinGAN's evaluate_model.py JPEGs)."""
    pattern = {
        "singan": "Output/RandomSamples/*/gen_start_scale=0/*.png",
        "consingan": "TrainedModels/*/*/Evaluation/random_samples/*.jpg",
    }[program]
    return sorted(glob.glob(os.path.join(cwd, pattern)))


def cleanup(cwd: str) -> None:
    """Removes a program's temporary working directory."""
    shutil.rmtree(cwd, ignore_errors=True)
