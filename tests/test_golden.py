"""Training reproduces the recorded weights of every family's tiny config
(tests/golden.py; fingerprints taken before the trainer was unified)."""

from __future__ import annotations

import json

import pytest

from tests import golden


@pytest.fixture(scope="module")
def recorded():
    with open(golden.PATH) as f:
        return json.load(f)


@pytest.mark.parametrize(
    "case,fixture",
    [
        ("singan", "tiny_singan_run"),
        ("agan_circ", "tiny_agan_run"),
        ("consingan", "tiny_consingan_run"),
    ],
)
def test_tiny_weights_equal_the_recorded_ones(case, fixture, recorded, request):
    workdir, _ = request.getfixturevalue(fixture)
    assert golden.compare(case, golden.fingerprint_run(workdir), recorded[case]) == []


def test_compare_sees_a_changed_weight(recorded):
    """The check is not vacuous: one value moved by 1e-5 is reported."""
    want = recorded["singan"]
    got = {k: list(v) for k, v in want.items()}
    name = sorted(got)[3]
    got[name][2] += 1e-5
    assert golden.compare("singan", got, want) == [
        f"singan {name}: max difference {1e-5:.3g}"
    ]
