"""Small statistics for ``uda report``: mean ± std with a t interval over seeds, a paired t-test by seed,
and the rank correlations (Spearman, Kendall tau-b) between a criterion's score and target accuracy.

Seeds are few (3 is typical), so the interval uses Student's t with n - 1 degrees of freedom, and the
comparison with source-only pairs the runs by seed (same seed, same data order) rather than treating
the two groups as independent.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass


@dataclass(frozen=True)
class Summary:
    """mean, sample std (0 for one value), n, and the 95% t interval (None below two values)."""
    mean: float
    std: float
    n: int
    ci: tuple[float, float] | None

    def text(self, ci: bool = False) -> str:
        base = f"{self.mean:.2f} ± {self.std:.2f}"
        return f"{base} [{self.ci[0]:.2f}, {self.ci[1]:.2f}]" if ci and self.ci else base


def summarize(values: list[float], level: float = 0.95) -> Summary | None:
    """mean ± std and the t interval mean ± t_{(1+level)/2, n-1} std / sqrt(n); None for no values."""
    if not values:
        return None
    n, mean = len(values), statistics.fmean(values)
    if n < 2:
        return Summary(mean, 0.0, 1, None)
    from scipy.stats import t

    std = statistics.stdev(values)
    half = float(t.ppf((1 + level) / 2, n - 1)) * std / math.sqrt(n)
    return Summary(mean, std, n, (mean - half, mean + half))


def paired_test(a: dict[int, float], b: dict[int, float]) -> tuple[float, float, int] | None:
    """Paired t-test of a - b over the seeds both have: (mean difference, two-sided p, pairs).
    p is nan when the differences are all equal (no spread to test against); None below two pairs."""
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        return None
    d = [a[s] - b[s] for s in seeds]
    mean, sd = statistics.fmean(d), statistics.stdev(d)
    if sd == 0:
        return mean, math.nan, len(d)
    from scipy.stats import t

    stat = mean / (sd / math.sqrt(len(d)))
    return mean, float(2 * t.sf(abs(stat), len(d) - 1)), len(d)


def nanmean(values: list[float]) -> float:
    """The mean of the values that are not nan (nan when none is)."""
    kept = [v for v in values if not math.isnan(v)]
    return statistics.fmean(kept) if kept else math.nan


def ranks(x: list[float]) -> list[float]:
    """1-based ranks, ties given their average rank."""
    order = sorted(range(len(x)), key=lambda i: x[i])
    out = [0.0] * len(x)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and x[order[j + 1]] == x[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def pearson(x: list[float], y: list[float]) -> float:
    mx, my = statistics.fmean(x), statistics.fmean(y)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx, syy = sum((a - mx) ** 2 for a in x), sum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else math.nan


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rho: Pearson's correlation of the ranks (nan when either side is constant)."""
    return pearson(ranks(x), ranks(y)) if len(x) >= 2 else math.nan


def kendall(x: list[float], y: list[float]) -> float:
    """Kendall's tau-b: (concordant - discordant) / sqrt((n0 - ties_x) (n0 - ties_y)) over all pairs."""
    n = len(x)
    conc = disc = tx = ty = 0
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = x[i] - x[j], y[i] - y[j]
            if dx == 0 and dy == 0:
                tx, ty = tx + 1, ty + 1
            elif dx == 0:
                tx += 1
            elif dy == 0:
                ty += 1
            elif (dx > 0) == (dy > 0):
                conc += 1
            else:
                disc += 1
    n0 = n * (n - 1) / 2
    denom = math.sqrt((n0 - tx) * (n0 - ty))
    return (conc - disc) / denom if denom > 0 else math.nan
