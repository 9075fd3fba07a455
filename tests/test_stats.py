"""Tests of casprof.stats.Measurement and its helpers."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from casprof.stats import NOISE_THRESHOLD, Measurement, merge, paired_difference


# --------------------------------------------------------------------------- basics
def test_hand_computed_odd():
    m = Measurement([5, 1, 4, 2, 3])
    assert m.samples == (5.0, 1.0, 4.0, 2.0, 3.0)  # order kept
    assert all(type(v) is float for v in m.samples)
    assert m.n == 5
    assert m.median == 3.0
    assert m.mean == 3.0
    assert m.std == pytest.approx(math.sqrt(2.5))
    assert (m.min, m.max) == (1.0, 5.0)
    assert (m.q1, m.q3, m.iqr) == (2.0, 4.0, 2.0)
    assert m.relative_spread == pytest.approx(2.0 / 3.0)
    assert m.cov == pytest.approx(math.sqrt(2.5) / 3.0)
    assert m.percentile(0) == 1.0 and m.percentile(100) == 5.0 and m.percentile(50) == 3.0


def test_hand_computed_even():
    m = Measurement(np.array([4.0, 1.0, 3.0, 2.0]), unit="us")
    assert m.unit == "us"
    assert m.median == 2.5
    assert m.mean == 2.5
    assert m.std == pytest.approx(math.sqrt(5.0 / 3.0))
    assert m.q1 == pytest.approx(1.75)
    assert m.q3 == pytest.approx(3.25)
    assert m.iqr == pytest.approx(1.5)


def test_single_sample():
    m = Measurement([2.5])
    assert m.n == 1
    assert m.std == 0.0
    assert m.iqr == 0.0
    assert m.mad == 0.0
    assert m.ci() == (2.5, 2.5)
    assert m.ci95 == (2.5, 2.5)


def test_mad_matches_scipy():
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(1)
    for x in (rng.normal(3.0, 0.5, 37), rng.exponential(1.0, 20), np.array([1.0, 1.0, 2.0, 9.0])):
        expected = scipy_stats.median_abs_deviation(x, scale="normal")
        assert Measurement(x).mad == pytest.approx(expected, rel=1e-12)


def test_negative_mean_cov_and_zero_median_spread():
    m = Measurement([-1.0, -2.0, -3.0])
    assert m.cov == pytest.approx(1.0 / 2.0)  # std=1, |mean|=2
    z = Measurement([-1.0, 0.0, 1.0])
    assert z.median == 0.0
    assert math.isinf(z.relative_spread)
    assert math.isinf(z.cov)
    flat = Measurement([0.0, 0.0, 0.0])
    assert flat.relative_spread == 0.0
    assert flat.cov == 0.0


def test_frozen_and_equality():
    m = Measurement([1.0, 2.0])
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.unit = "s"  # type: ignore[misc]
    _ = m.median, m.ci95  # fill the cache: must not affect equality/hash
    assert m == Measurement((1.0, 2.0))
    assert hash(m) == hash(Measurement((1.0, 2.0)))


def test_repr_is_short():
    m = Measurement(list(range(1, 101)))
    r = repr(m)
    assert r.startswith("Measurement(median=50.5 ms")
    assert "n=100" in r and "IQR=" in r
    assert len(r) < 80
    assert str(m) == r


# --------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "bad",
    [[], (), np.array([]), [1.0, float("nan")], [float("inf"), 1.0], [[1.0, 2.0]], "123", ["a"]],
)
def test_invalid_samples(bad):
    with pytest.raises(ValueError):
        Measurement(bad)


def test_invalid_arguments():
    m = Measurement([1.0, 2.0, 3.0])
    with pytest.raises(ValueError):
        m.percentile(101)
    with pytest.raises(ValueError):
        m.ci(confidence=1.0)
    with pytest.raises(ValueError):
        m.ci(n_resamples=0)


# --------------------------------------------------------------------------- bootstrap
def test_ci_contains_median_and_deterministic():
    x = np.random.default_rng(2).normal(10.0, 1.0, 30)
    m = Measurement(x)
    lo, hi = m.ci()
    assert lo <= m.median <= hi
    assert lo < hi
    assert m.ci(seed=0) == (lo, hi)
    assert Measurement(x).ci(seed=0) == (lo, hi)
    assert m.ci95 == (lo, hi)
    assert m.ci(seed=1) != (lo, hi)
    lo90, hi90 = m.ci(confidence=0.90)
    assert lo <= lo90 and hi90 <= hi


def test_ci_narrows_with_more_samples():
    rng = np.random.default_rng(3)
    lo_s, hi_s = Measurement(rng.normal(10.0, 1.0, 20)).ci()
    lo_l, hi_l = Measurement(rng.normal(10.0, 1.0, 500)).ci()
    # Width scales like 1/sqrt(n): expect about 5x narrower; require at least 2x.
    assert (hi_l - lo_l) < (hi_s - lo_s) / 2.0


def test_ci_coverage():
    rng = np.random.default_rng(4)
    true_median = 10.0
    draws = 100
    covered = 0
    for i in range(draws):
        lo, hi = Measurement(rng.normal(true_median, 1.0, 40)).ci(n_resamples=500, seed=i)
        covered += lo <= true_median <= hi
    coverage = covered / draws
    assert 0.85 <= coverage <= 1.0


def test_interval_includes_zero():
    rng = np.random.default_rng(5)
    x = rng.normal(0.0, 1.0, 50)
    straddling = Measurement(x - np.median(x))  # median exactly 0, spread of 1
    assert straddling.interval_includes_zero
    positive = Measurement(rng.normal(5.0, 0.1, 50))
    assert not positive.interval_includes_zero
    negative = Measurement(rng.normal(-5.0, 0.1, 50))
    assert not negative.interval_includes_zero


# --------------------------------------------------------------------------- noise
def test_noise_warning():
    assert NOISE_THRESHOLD == 0.10
    rng = np.random.default_rng(6)
    tight = Measurement(rng.normal(10.0, 0.05, 30))
    assert tight.relative_spread < NOISE_THRESHOLD
    assert tight.noise_warning() is None

    noisy = Measurement(rng.uniform(1.0, 3.0, 30))
    assert noisy.relative_spread > NOISE_THRESHOLD
    w = noisy.noise_warning()
    assert isinstance(w, str) and "noise" in w.lower()
    # A looser threshold silences it.
    assert noisy.noise_warning(threshold=10.0) is None

    few = Measurement([10.0, 10.0, 10.0, 10.0])
    w = few.noise_warning()
    assert isinstance(w, str) and "too few samples" in w
    assert Measurement([10.0] * 5).noise_warning() is None


# --------------------------------------------------------------------------- serialisation
def test_to_dict_from_dict_round_trip():
    rng = np.random.default_rng(7)
    m = Measurement(rng.normal(1.234, 0.01, 20), unit="ms")
    d = m.to_dict()
    assert set(d) == {
        "unit", "n", "median", "mean", "std", "iqr", "mad", "min", "max",
        "ci95", "relative_spread", "noise_warning", "samples",
    }
    assert d["n"] == 20
    assert d["median"] == m.median
    assert d["ci95"] == list(m.ci95)
    assert d["noise_warning"] is None
    text = json.dumps(d, allow_nan=False)
    back = Measurement.from_dict(json.loads(text))
    assert back.samples == m.samples  # exact, bit for bit
    assert back.unit == "ms"
    assert back == m
    assert back.to_dict() == d


def test_from_dict_ignores_derived_and_to_dict_strict_json():
    m = Measurement.from_dict({"samples": [1.0, 2.0, 3.0], "unit": "us", "median": 999.0})
    assert m.median == 2.0 and m.unit == "us"
    z = Measurement([-1.0, 0.0, 1.0])
    d = z.to_dict()
    assert d["relative_spread"] is None  # infinite -> None so strict JSON works
    json.dumps(d, allow_nan=False)
    assert isinstance(d["noise_warning"], str)
    with pytest.raises(ValueError):
        Measurement.from_dict({"unit": "ms"})


# --------------------------------------------------------------------------- combining
def test_paired_difference():
    a = Measurement([5.0, 6.0, 7.0, 4.0])
    b = Measurement([4.0, 6.5, 5.0, 4.5])
    d = paired_difference(a, b)
    assert d.samples == (1.0, -0.5, 2.0, -0.5)
    assert d.unit == "ms"
    assert d.min < 0  # negative values kept, never clamped
    neg = paired_difference(b, a)
    assert neg.samples == (-1.0, 0.5, -2.0, 0.5)
    assert neg.median == -0.25


def test_paired_difference_mismatch():
    with pytest.raises(ValueError):
        paired_difference(Measurement([1.0, 2.0]), Measurement([1.0]))
    with pytest.raises(ValueError):
        paired_difference(Measurement([1.0], unit="ms"), Measurement([1.0], unit="us"))


def test_merge():
    m = merge(Measurement([1.0, 2.0]), Measurement([3.0]), Measurement([0.5, 4.0]))
    assert m.samples == (1.0, 2.0, 3.0, 0.5, 4.0)
    assert merge(Measurement([1.0])) == Measurement([1.0])
    with pytest.raises(ValueError):
        merge(Measurement([1.0], unit="ms"), Measurement([1.0], unit="s"))
    with pytest.raises(ValueError):
        merge()


def test_two_well_separated_clusters_are_named_in_the_warning() -> None:
    # the rounds of a torch probe on the AVX-512 EPYC VM (29 Nov): two modes, the median in the larger
    samples = (230, 194, 411, 396, 198, 202, 188, 407, 193, 424, 447, 431, 209, 223, 213, 204, 212, 195)
    m = Measurement(samples, unit="ms")
    assert m.modes() == ((12, 203.0), (6, 417.5))
    warning = m.noise_warning()
    assert warning is not None and "two modes (12 samples around 203 ms, 6 around 417.5 ms;" in warning


@pytest.mark.parametrize("samples", [
    tuple(range(100, 300, 11)),  # wide but even: no gap stands out
    (100.0,) * 17 + (400.0,),  # one outlier is not a mode
    (100, 101, 102, 103, 300, 301, 302, 303),  # too few samples to tell
    (100, 130, 160, 190, 220, 250, 330, 360, 390, 420, 450, 480),  # a gap, but not twice the clusters' range
])
def test_no_modes_without_two_tight_populated_clusters(samples: tuple[float, ...]) -> None:
    m = Measurement(samples, unit="ms")
    assert m.modes() is None
    assert "two modes" not in (m.noise_warning() or "")


def test_of_every_recorded_cpu_cost_only_the_torch_sep_conv_probe_has_two_modes() -> None:
    """The check against the raw samples of every CPU profile kept in benchmarks/results/profiles."""
    import glob
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "profiles"
    flagged = []
    for path in sorted(glob.glob(str(root / "cpu-*.json"))):
        for cell, ops in json.loads(Path(path).read_text())["costs"].items():
            for op, metrics in ops.items():
                samples = metrics["latency_ms"].get("samples")
                if samples and Measurement(tuple(samples)).modes() is not None:
                    flagged.append((Path(path).name, cell, op))
    assert flagged == [("cpu-ac888d45-torch-keep-20261129T0523-s6.json", "normal", "sep_conv_3x3_x4")]
