"""Training reproduces the recorded losses and outputs of every family's tiny
config, at a tolerance that holds on any CPU kind (tests/golden.py says how it
was chosen)."""

from __future__ import annotations

import copy

import pytest

from tests import golden


@pytest.fixture(scope="module")
def record():
    return golden.load()


# AGAN compiles every stage's programs at once (as on an accelerator host, where
# train.compile_workers is auto); the others one stage ahead (the CPU's auto).
WORKERS = {"agan_circ": 3}


@pytest.mark.parametrize("case", sorted(golden.CASES))
def test_tiny_training_reproduces_the_record(case, record, tmp_path):
    got = golden.train_case(case, str(tmp_path), WORKERS.get(case, 0))
    assert golden.compare(case, got, record[case]) == []
    # Every iteration of every stage was compared, not a subset.
    stages = {k.split("/")[0] for k in got["losses"]}
    assert len(stages) == 3 and len(got["losses"]) == 3 * golden.ITERS * 5


def test_compare_sees_a_change_beyond_the_tolerance(record):
    """Not vacuous: a loss moved past its tolerance, or a block of the
    reconstruction moved by 1.5 x IMAGE_ATOL, is reported; changes within the
    tolerance are not."""
    want = record["singan"]
    name = sorted(want["losses"])[-1]
    v = want["losses"][name]
    tol = golden.tolerance("losses", name)
    near, far = copy.deepcopy(want), copy.deepcopy(want)
    near["losses"][name] = v + 0.9 * tol
    far["losses"][name] = v + 1.5 * tol
    far["outputs"]["reconstruction"][5] += 1.5 * golden.IMAGE_ATOL
    assert golden.compare("singan", near, want) == []
    bad = golden.compare("singan", far, want)
    assert len(bad) == 2
    assert f"losses {name}" in "".join(bad) and "reconstruction" in "".join(bad)


def test_image_summary_is_mean_std_and_block_means():
    import numpy as np

    x = np.zeros((8, 8, 3))
    x[:2, :2, 0] = 1.0  # the top-left block of channel 0
    s = golden.image_summary(x)
    assert len(s) == 2 + 16 * 3
    assert s[0] == pytest.approx(4 / 192) and s[2] == 1.0 and sum(s[2:]) == 1.0
