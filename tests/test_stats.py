"""uda.report.stats against hand computations: the t interval, the paired t-test, and the rank correlations."""
import math

import pytest

from uda.report import stats


def test_summary_and_t_interval_by_hand():
    s = stats.summarize([1.0, 2.0, 6.0])
    # mean 3, sample std sqrt(((4 + 1 + 9) / 2)) = sqrt(7); t_{0.975, 2} = 4.302653
    assert (s.mean, s.n) == (3.0, 3) and s.std == pytest.approx(math.sqrt(7))
    half = 4.302653 * math.sqrt(7) / math.sqrt(3)
    assert s.ci[0] == pytest.approx(3 - half, abs=1e-5) and s.ci[1] == pytest.approx(3 + half, abs=1e-5)
    assert s.text(ci=True) == f"3.00 ± {math.sqrt(7):.2f} [{3 - half:.2f}, {3 + half:.2f}]"
    one = stats.summarize([5.0])
    assert (one.std, one.ci) == (0.0, None) and stats.summarize([]) is None


def test_paired_test_by_hand():
    a, b = {0: 80.0, 1: 75.0, 2: 78.0}, {0: 55.0, 1: 54.0, 2: 58.0, 3: 1.0}  # seed 3 has no partner
    mean, p, n = stats.paired_test(a, b)
    # d = 25, 21, 20: mean 22, sd sqrt(7), t = 22 / (sqrt(7) / sqrt(3)) = 14.402; two-sided p with 2 df
    t = 22 / (math.sqrt(7) / math.sqrt(3))
    assert (mean, n) == (22.0, 3)
    assert p == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=1e-9)  # the t(2) tail in closed form
    assert stats.paired_test({0: 1.0}, {0: 2.0}) is None
    assert math.isnan(stats.paired_test({0: 2.0, 1: 3.0}, {0: 1.0, 1: 2.0})[1])  # no spread


def test_ranks_spearman_kendall_by_hand():
    assert stats.ranks([10.0, 30.0, 20.0, 20.0]) == [1.0, 4.0, 2.5, 2.5]
    x, y = [1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0]
    # ranks differ by d = 0, 1, 1, 0: rho = 1 - 6 * 2 / (4 * 15) = 0.8
    assert stats.spearman(x, y) == pytest.approx(0.8)
    # pairs: 5 concordant, 1 discordant (2-3) -> tau = 4 / 6
    assert stats.kendall(x, y) == pytest.approx(4 / 6)
    assert stats.spearman(x, [-v for v in x]) == pytest.approx(-1.0) and stats.kendall(x, x) == 1.0
    # tau-b with a tie in y (pair 1-2): 4 concordant, 1 discordant, denominator sqrt(6 * (6 - 1))
    assert stats.kendall([1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 3.0, 2.0]) == pytest.approx((4 - 1) / math.sqrt(30))
    assert math.isnan(stats.spearman([1.0, 2.0, 3.0], [5.0, 5.0, 5.0]))
