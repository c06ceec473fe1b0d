"""``uda report``'s figures, one set per pair: the target metric over training, and each criterion's regret.

Legends sit outside the axes with the short labels of ``report.short_labels`` (the method plus only the
overrides that differ inside the figure), long labels and titles are wrapped, and the figure is saved
with a tight bounding box, so no text is clipped at any label length.
"""
from __future__ import annotations

import re
import statistics
import textwrap
from pathlib import Path
from typing import Any

from uda.selection import metric_of

WRAP = 48  # characters per line of a legend entry or title


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def file_stem(pair: str) -> str:
    """A file-name-safe form of a pair's name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", pair).strip("_") or "pair"


def _wrap(text: str) -> str:
    return "\n".join(textwrap.wrap(text, WRAP, break_long_words=True, break_on_hyphens=False)) or text


def plot_pair(pair: str, groups: list[Any], out: Path) -> Path:
    """target_<metric>_<pair>.png: the target metric over steps, one line per ``report.Group`` (mean over
    seeds), band = ± std."""
    plt = _plt()
    seg = any(g.metric == "mIoU" for g in groups)
    name = "mIoU" if seg else "accuracy"
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for g in groups:
        by_step: dict[int, list[float]] = {}
        for r in g.runs:
            for row in r.rows:
                by_step.setdefault(row["step"], []).append(row[f"target_{metric_of(row)}"])
        steps = sorted(s for s, v in by_step.items() if len(v) == len(g.runs))  # steps every seed evaluated
        if not steps:
            continue
        mean = [statistics.fmean(by_step[s]) for s in steps]
        std = [statistics.stdev(by_step[s]) if len(by_step[s]) > 1 else 0.0 for s in steps]
        (line,) = ax.plot(steps, mean, label=_wrap(f"{g.label} ({len(g.runs)} seeds)"), linewidth=2,
                          marker="o" if len(steps) < 12 else None)  # a run evaluated once is a point, not a line
        ax.fill_between(steps, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                        color=line.get_color(), alpha=0.2)
    ax.set_xlabel("training step")
    ax.set_ylabel(f"target test {name} (%)")
    ax.set_title(_wrap(f"{pair}: target {name} over training (mean ± std over seeds)"))
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
    path = out / f"target_{'miou' if seg else 'acc'}_{file_stem(pair)}.png"
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_regret(pair: str, regret_rows: list[dict[str, Any]], sel_rows: list[dict[str, Any]], out: Path) -> Path:
    """regret_<pair>.png: per criterion, the checkpoint regret within runs (mean ± std over the pair's
    runs) and the regret of its choice across the sweep."""
    plt = _plt()
    crits = [r["criterion"] for r in regret_rows]
    sweep = {r["criterion"]: r["regret"] for r in sel_rows}
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(crits) + 1.6), dpi=120)
    ys = list(range(len(crits)))
    within = ax.barh([y + 0.2 for y in ys], [r["regret_mean"] for r in regret_rows], height=0.4,
            xerr=[r["regret_std"] for r in regret_rows], color="tab:blue", alpha=0.8, capsize=3,
            label=_wrap("within a run: checkpoint regret (mean ± std over runs)"))
    sy = [y for y, c in zip(ys, crits) if c in sweep]
    across = ax.barh([y - 0.2 for y in sy], [sweep[crits[y]] for y in sy], height=0.4, color="tab:orange", alpha=0.8,
            label=_wrap("across the sweep: regret of the chosen configuration"))
    for bars in (within, across):  # the numbers, so a zero regret is visible too
        ax.bar_label(bars, fmt="%.2f", padding=3, fontsize=7)
    ax.set_xlim(left=min(0.0, ax.get_xlim()[0]), right=ax.get_xlim()[1] * 1.1 + 0.5)
    ax.set_yticks(ys, crits)
    ax.invert_yaxis()
    ax.set_xlabel("regret (oracle minus chosen, points of the target metric; lower is better)")
    ax.set_title(_wrap(f"{pair}: what each label-free criterion costs"))
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
    path = out / f"regret_{file_stem(pair)}.png"
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path
