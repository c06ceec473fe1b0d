"""How far to trust a label-free criterion, from evaluation histories: the regret of its pick in one run,
its rank correlation with the target metric over a run's evaluations, and its choice across a sweep."""
from __future__ import annotations

import math
from typing import Any

from uda.report.stats import kendall, spearman
from uda.selection import criterion_key, metric_of, select


def target_key(rows: list[dict[str, Any]]) -> str:
    return f"target_{metric_of(rows[0])}" if rows else "target_acc"


def run_regret(rows: list[dict[str, Any]], criterion: str) -> float | None:
    """The oracle's target metric minus the target metric of the evaluation ``criterion`` picks in one
    run (0 = it picked the best evaluation); None if the run has no score for it."""
    pick, best = select(rows, criterion), select(rows, "oracle")
    if pick is None or best is None:
        return None
    key = target_key(rows)
    return best[key] - pick[key]


def run_correlation(rows: list[dict[str, Any]], criterion: str) -> tuple[float, float] | None:
    """(Spearman, Kendall) between the criterion's score, signed so that larger means "better" for
    it, and the target metric over the evaluations of one run; None below three scored evaluations."""
    key, higher = criterion_key(criterion, metric_of(rows[0]) if rows else "acc")
    t_key = target_key(rows)
    pts = [(r[key] if higher else -r[key], r[t_key]) for r in rows
           if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    if len(pts) < 3:
        return None
    s, t = [p[0] for p in pts], [p[1] for p in pts]
    return spearman(s, t), kendall(s, t)


def sweep_select(candidates: dict[str, list[list[dict[str, Any]]]], criterion: str) -> tuple[str, int] | None:
    """Across a sweep: ``candidates`` maps a configuration to its runs (one evaluation history per seed).
    Each (configuration, step) that every seed evaluated is scored by the criterion's score averaged over
    the seeds; the best one is returned (ties: the later step, then the first configuration)."""
    best: tuple[float, int, int] | None = None
    choice = None
    for order, (label, runs) in enumerate(candidates.items()):
        if not runs or not runs[0]:
            continue
        key, higher = criterion_key(criterion, metric_of(runs[0][0]))
        by_step: dict[int, list[float]] = {}
        for rows in runs:
            for r in rows:
                v = r.get(key)
                if isinstance(v, (int, float)) and math.isfinite(v):
                    by_step.setdefault(r["step"], []).append(v)
        for step, vals in by_step.items():
            if len(vals) != len(runs):
                continue  # a step some seed did not evaluate (or could not score) is no candidate
            mean = sum(vals) / len(vals)
            rank = ((mean if higher else -mean), step, -order)
            if best is None or rank > best:
                best, choice = rank, (label, step)
    return choice
