"""The package: `pip wheel .` builds a wheel of the library whose declared
requirements are requirements.txt's (pyproject.toml reads them from there)."""

from __future__ import annotations

import email.parser
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from tests.conftest import ROOT

# What the build reads: the project file, what it names, and the library.
BUILD_INPUTS = ("pyproject.toml", "requirements.txt", "README.md")


def requirement_lines(path: str) -> list[str]:
    """The requirements of a requirements file: one per line, comments dropped."""
    with open(path) as f:
        lines = (line.split("#", 1)[0].strip() for line in f)
        return [line for line in lines if line]


def normalised(requirement: str) -> tuple[str, frozenset[str]]:
    """(name, version clauses), spelled alike whoever wrote them."""
    name = requirement
    for i, c in enumerate(requirement):
        if c in "<>=!~; [":
            name, rest = requirement[:i], requirement[i:]
            break
    else:
        rest = ""
    clauses = frozenset(c.strip() for c in rest.replace(" ", "").split(",") if c)
    return name.lower().replace("_", "-"), clauses


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    """The wheel of a copy of the build inputs (the checkout gets no build/ or
    egg-info folder), built with the installed setuptools."""
    pytest.importorskip("setuptools")
    src = tmp_path_factory.mktemp("src")
    for name in BUILD_INPUTS:
        shutil.copy(os.path.join(ROOT, name), src / name)
    shutil.copytree(
        os.path.join(ROOT, "agan_jax"),
        src / "agan_jax",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    out = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "wheel", ".", "--no-deps"]
    cmd += ["--no-build-isolation", "--no-index", "-q", "-w", str(out)]
    done = subprocess.run(cmd, cwd=src, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    (built,) = out.glob("agan_jax-*.whl")
    return zipfile.ZipFile(built)


def test_wheel_holds_every_library_module(wheel):
    names = set(wheel.namelist())
    want = {
        os.path.relpath(os.path.join(d, f), ROOT).replace(os.sep, "/")
        for d, _, files in os.walk(os.path.join(ROOT, "agan_jax"))
        for f in files
        if f.endswith(".py")
    }
    assert {"agan_jax/__init__.py", "agan_jax/models/families.py"} <= want
    assert want <= names
    # The library only: no tests, launchers, configs or benchmarks.
    assert {n.split("/")[0] for n in names} == {"agan_jax", *dist_info(wheel)}


def dist_info(wheel: zipfile.ZipFile) -> set[str]:
    return {n.split("/")[0] for n in wheel.namelist() if ".dist-info/" in n}


def test_wheel_requires_what_requirements_txt_lists(wheel):
    (meta,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    message = email.parser.Parser().parsestr(wheel.read(meta).decode())
    declared = {normalised(r) for r in message.get_all("Requires-Dist") or []}
    listed = {normalised(r) for r in requirement_lines(f"{ROOT}/requirements.txt")}
    assert declared == listed
    assert message["Name"] in ("agan_jax", "agan-jax")


def test_test_only_packages_are_dev_requirements():
    runtime = {normalised(r)[0] for r in requirement_lines(f"{ROOT}/requirements.txt")}
    dev = {
        normalised(r)[0]
        for r in requirement_lines(f"{ROOT}/requirements-dev.txt")
        if not r.startswith("-r")
    }
    assert {"chex", "tensorboard", "pytest", "pytest-xdist"} <= dev
    assert not runtime & {"chex", "tensorboard", "pytest", "pytest-xdist"}
    # The library imports none of them.
    for d, _, files in os.walk(os.path.join(ROOT, "agan_jax")):
        for f in (f for f in files if f.endswith(".py")):
            with open(os.path.join(d, f)) as fh:
                text = fh.read()
            assert "import chex" not in text and "from chex" not in text, f
            assert "from tensorboard " not in text, f


TINY_TEST = "tests/test_package.py::test_test_only_packages_are_dev_requirements"


def run_pytest(*args: str) -> str:
    cmd = [sys.executable, "-m", "pytest", *args, TINY_TEST]
    # A fresh session, as from a shell: not one of this session's xdist workers.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    done = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout, done.stdout
    return done.stdout


def test_pytest_runs_without_the_xdist_plugin():
    # pyproject's addopts name no xdist option, so the plugin can be left out.
    run_pytest("-p", "no:xdist")


def test_pytest_uses_xdist_workers_unless_told():
    pytest.importorskip("xdist")
    assert "workers" in run_pytest("-v")  # tests/conftest.py added -n auto
    assert "workers" not in run_pytest("-v", "-n", "0")
