"""Ranking statistics: hand-computed values, known cases, scipy as the reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from autodeeplab.engine.compare.ranking import (
    Bootstrap,
    kendall_rows,
    rank_agreement,
    seed_noise,
    spearman_rows,
    standing,
    tau_threshold,
)


def test_perfect_agreement_has_tau_one_and_an_interval_at_one() -> None:
    score = [0.1, 0.4, 0.2, 0.9, 0.5, 0.3, 0.8, 0.7, 0.6, 1.0]
    miou = [2 * s + 5 for s in score]  # any increasing function
    a = rank_agreement(score, miou)
    assert a["kendall_tau"] == pytest.approx(1.0) and a["spearman_rho"] == pytest.approx(1.0)
    assert a["kendall_ci"][0] > 0.99 and a["spearman_ci"][0] > 0.99
    assert a["kendall_p"] < 1e-5  # exact null distribution: 1 / 10! of the orderings
    assert a["kendall_p"] == pytest.approx(1 / math.factorial(10))


def test_reversed_ranking_has_tau_minus_one_and_p_near_one() -> None:
    score = list(range(12))
    a = rank_agreement(score, score[::-1])
    assert a["kendall_tau"] == pytest.approx(-1.0) and a["spearman_rho"] == pytest.approx(-1.0)
    assert a["kendall_ci"][1] < -0.99
    assert a["kendall_p"] == pytest.approx(1.0) and a["spearman_p"] == pytest.approx(1.0)


def test_hand_computed_tau_and_rho() -> None:
    # Pairs (1,1) (2,3) (3,2) (4,4): 6 pairs, one discordant (2-3): tau = (5 - 1) / 6.
    # Rank differences 0, 1, 1, 0: rho = 1 - 6 * 2 / (4 * 15) = 0.8.
    a = rank_agreement([1, 2, 3, 4], [1, 3, 2, 4])
    assert a["kendall_tau"] == pytest.approx(4 / 6)
    assert a["spearman_rho"] == pytest.approx(0.8)
    # Exact one-sided p of tau >= 4/6 with n = 4: orderings with at most one inversion,
    # 1 + 3 of 24.
    assert a["kendall_p"] == pytest.approx(4 / 24)
    assert a["n"] == 4


def test_independent_noise_has_an_interval_covering_zero() -> None:
    rng = np.random.default_rng(3)
    covered = 0
    for _ in range(10):
        a = rank_agreement(rng.normal(size=20), rng.normal(size=20), Bootstrap(n_resamples=500))
        lo, hi = a["kendall_ci"]
        covered += lo < 0 < hi
        assert lo < a["kendall_tau"] < hi
    assert covered >= 8  # 95% intervals: 10 of 10 expected, allow the odd miss


def test_interval_is_deterministic_given_the_seed() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=15), rng.normal(size=15)
    four, five = Bootstrap(seed=4), Bootstrap(seed=5)
    assert rank_agreement(x, y, four) == rank_agreement(x, y, four)
    assert rank_agreement(x, y, four)["kendall_ci"] != rank_agreement(x, y, five)["kendall_ci"]


def test_vectorised_correlations_equal_scipy_with_ties() -> None:
    rng = np.random.default_rng(1)
    x = rng.integers(0, 4, size=(30, 9)).astype(float)
    y = rng.integers(0, 4, size=(30, 9)).astype(float)
    for got, fn in ((kendall_rows(x, y), stats.kendalltau), (spearman_rows(x, y), stats.spearmanr)):
        want = [fn(a, b).statistic for a, b in zip(x, y, strict=True)]
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert math.isnan(kendall_rows(np.ones((1, 5)), x[:1, :5])[0])


def test_undefined_correlations_are_none() -> None:
    a = rank_agreement([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])
    assert a["kendall_tau"] is None and a["kendall_ci"] is None and a["spearman_p"] is None
    assert rank_agreement([1.0, 2.0], [2.0, 1.0])["kendall_tau"] is None  # n < 3
    with pytest.raises(ValueError, match="one length"):
        rank_agreement([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="finite"):
        rank_agreement([1.0, math.nan, 2.0], [1.0, 2.0, 3.0])


def test_tau_threshold_matches_the_review_table() -> None:
    assert tau_threshold(12) == pytest.approx(0.36, abs=0.005)
    assert tau_threshold(20) == pytest.approx(0.27, abs=0.005)
    assert tau_threshold(30) == pytest.approx(0.21, abs=0.005)


def test_standing_percentile_difference_and_effect_size() -> None:
    randoms = [0.20, 0.22, 0.24, 0.26]
    s = standing([0.25, 0.23], randoms)
    # The mean 0.24 is above two of four and ties one, which counts half: (2 + 0.5) / 4.
    assert s["percentile"] == pytest.approx(62.5)
    assert s["difference"] == pytest.approx(0.24 - 0.23)
    assert s["effect_size"] == pytest.approx(0.01 / np.std(randoms, ddof=1))
    lo, hi = s["difference_ci"]
    assert lo < s["difference"] < hi
    assert standing([0.3], randoms)["percentile"] == 100.0
    assert standing([0.26], randoms)["percentile"] == pytest.approx(87.5)  # a tie counts half
    assert standing([], randoms)["percentile"] is None
    assert standing([0.3], [0.2])["difference_ci"] is None  # one random value: no spread


def test_seed_noise_pools_within_genotype_variance() -> None:
    sn = seed_noise({"a": [1.0, 2.0, 3.0], "b": [2.0, 3.0], "c": [5.0]}, [0.0, 2.0, 4.0])
    assert set(sn["genotypes"]) == {"a", "b"}  # one seed is no spread
    # Pooled variance: (2 * 1 + 1 * 0.5) / 3; between SD 2.
    assert sn["within_sd"] == pytest.approx(math.sqrt(2.5 / 3))
    assert sn["between_sd"] == pytest.approx(2.0)
    assert sn["ratio"] == pytest.approx(math.sqrt(2.5 / 3) / 2)
    assert sn["reliability"] == pytest.approx(1 - 2.5 / 3 / 4)
    empty = seed_noise({"a": [1.0]}, [1.0, 2.0])
    assert empty["within_sd"] is None and empty["ratio"] is None


def test_seed_noise_flags_a_genotype_whose_seeds_disagree_far_beyond_the_rest() -> None:
    # The held-out dataset's case: the paper's genotype at 17.2 and 31.4, others within 1-2.
    runs = {"paper": [17.2, 31.4], "searched": [24.0, 25.5], "a": [22.0, 23.0], "b": [20, 21.5]}
    sn = seed_noise(runs, [22.0, 20.0, 25.0])
    assert sn["unstable"] == ["paper"]
    assert seed_noise({k: v for k, v in runs.items() if k != "paper"}, [1, 2])["unstable"] == []
    # Two genotypes only: no "rest" to judge one against.
    assert seed_noise({"paper": [17.2, 31.4], "a": [22.0, 23.0]}, [1, 2])["unstable"] == []
