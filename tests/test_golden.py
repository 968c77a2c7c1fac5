"""Training reproduces the recorded weights of every family's tiny config
(tests/golden.py; fingerprints taken before the trainer was unified)."""

from __future__ import annotations

import pytest

from tests import golden


@pytest.fixture(scope="module")
def sets():
    return golden.load()


@pytest.mark.parametrize(
    "case,fixture",
    [
        ("singan", "tiny_singan_run"),
        ("agan_circ", "tiny_agan_run"),
        ("consingan", "tiny_consingan_run"),
    ],
)
def test_tiny_weights_equal_the_recorded_ones(case, fixture, sets, request):
    """Equal (1e-6) to one machine kind's recorded set (tests/golden.py says why
    there is one per kind and how to add this machine's)."""
    workdir, _ = request.getfixturevalue(fixture)
    assert golden.compare_sets(case, golden.fingerprint_run(workdir), sets) == [], (
        f"on {golden.machine()}"
    )


def test_a_run_must_equal_one_whole_set(sets):
    """A run matching the second set passes; one matching none is reported with
    each set's machine."""
    want = sets[0]["cases"]["singan"]
    name = sorted(want)[3]
    other = {k: list(v) for k, v in want.items()}
    other[name][2] += 1e-3
    two = [{"machine": "A", "cases": {"singan": other}}, *sets[:1]]
    assert golden.compare_sets("singan", want, two) == []
    moved = {k: list(v) for k, v in want.items()}
    moved[name][2] -= 1e-3
    report = golden.compare_sets("singan", moved, two)
    assert [line.split(":")[0] for line in report] == ["A", sets[0]["machine"]]
    assert all("1 arrays differ" in line and name in line for line in report)


def test_compare_sees_a_changed_weight(sets):
    """The check is not vacuous: one value moved by 1e-5 is reported."""
    want = sets[0]["cases"]["singan"]
    got = {k: list(v) for k, v in want.items()}
    name = sorted(got)[3]
    got[name][2] += 1e-5
    assert golden.compare("singan", got, want) == [
        f"singan {name}: max difference {1e-5:.3g}"
    ]
