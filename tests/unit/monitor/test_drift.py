"""Input drift statistics: the reference's bins, PSI, the decayed window, feature shifts."""

from __future__ import annotations

import numpy as np
import pytest

from mserve.monitor.drift import DriftMonitor, InputDrift, InputReference, psi


@pytest.fixture
def reference() -> InputReference:
    rng = np.random.default_rng(0)
    return InputReference.of("x", rng.normal(0, 1, size=(2000, 4)))


def test_the_reference_bins_are_its_deciles(reference: InputReference) -> None:
    assert len(reference.edges) == 9
    np.testing.assert_allclose(reference.fractions, 0.1, atol=0.002)
    assert reference.mean == pytest.approx(0, abs=0.05)
    assert reference.std == pytest.approx(1, abs=0.05)
    assert reference.features == 4


def test_psi_is_zero_for_the_same_distribution_and_large_for_a_shift() -> None:
    q = np.full(10, 0.1)
    assert psi(q * 500, q) == pytest.approx(0)
    assert psi(np.array([50.0, 30, 20] + [0] * 7), q) > 1


def test_the_window_sees_a_shift_and_forgets_it(reference: InputReference) -> None:
    rng = np.random.default_rng(1)
    drift = InputDrift(reference, half_life_s=1.0)
    assert drift.window(0.0) is None  # nothing seen yet
    first = rng.normal(0, 1, size=(500, 4))
    drift.update(first, now=0.0)
    same = drift.window(0.0)
    assert same is not None
    assert same.psi < 0.02
    assert same.feature_shift < 0.3
    shifted = rng.normal(0, 1, size=(500, 4))
    shifted[:, 2] += 3  # one feature moves by three standard deviations
    drift.update(shifted, now=20.0)  # twenty half-lives later: the first batch is forgotten
    moved = drift.window(20.0)
    assert moved is not None
    assert moved.psi > 0.25
    assert moved.feature_shift == pytest.approx(3, abs=0.3)
    assert moved.mean == pytest.approx(0.75, abs=0.1)
    # the cumulative counts keep everything
    assert drift.counts.sum() == 2 * 500 * 4
    assert drift.total == pytest.approx(float(first.sum() + shifted.sum()))


def test_a_constant_feature_still_has_a_scale() -> None:
    values = np.zeros((100, 3))
    values[:, 0] = np.arange(100)
    ref = InputReference.of("x", values)
    assert np.all(ref.feature_std > 0)


def test_a_reference_is_refused_when_it_cannot_describe_anything() -> None:
    with pytest.raises(ValueError, match="at least 2 rows"):
        InputReference.of("x", np.zeros((1, 3)))
    with pytest.raises(ValueError, match="NaN"):
        InputReference.of("x", np.array([[1.0], [np.nan]]))


def test_the_monitor_updates_only_the_inputs_it_knows(reference: InputReference) -> None:
    mon = DriftMonitor({"x": reference}, half_life_s=60)
    mon.update({"x": np.ones((3, 4)), "other": np.ones((3, 2))}, now=0.0)
    assert mon.inputs["x"].counts.sum() == 0  # queued, not yet counted
    mon.flush(0.0)
    assert mon.inputs["x"].counts.sum() == 12
    mon.update({"x": np.ones((3, 5))}, now=1.0)  # a shape the reference does not describe
    mon.flush(1.0)
    assert mon.inputs["x"].counts.sum() == 12


def test_queued_rows_are_counted_once_enough_have_piled_up(reference: InputReference) -> None:
    drift = InputDrift(reference, half_life_s=60)
    rows = np.ones((1024, 4))  # 32 KiB a request
    for _ in range(127):
        drift.update(rows, now=0.0)
    assert drift.counts.sum() == 0
    drift.update(rows, now=0.0)  # the 128th makes 4 MiB
    assert drift.counts.sum() == 128 * 4096
