"""``uda report DIR...``: every run under the directories, grouped, over seeds, per selection criterion.

A run directory holds ``.hydra/`` (config and overrides), ``metrics.jsonl`` (one row per
evaluation) and, once finished, ``summary.json``. Runs are grouped by method x pair x the
overrides that are neither the seed nor Hydra's own; each group's target accuracy is reported as
mean +- std over seeds for the last checkpoint, for the evaluation each label-free criterion picks,
and for the oracle (target test labels; reference only). Unfinished runs are listed, never averaged.
"""
from __future__ import annotations

import csv
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uda.selection import CRITERIA, LABEL_FREE, metric_of, select

COLUMNS = ("last", *LABEL_FREE, "oracle")
# published target accuracies (../METHODS.md), keyed by (method, pair)
PAPER = {
    ("source_only", "mnist_mnistm"): "52.25 (Ganin 2016); 56.6 (Bousmalis 2016)",
    ("dann", "mnist_mnistm"): "76.66 (Ganin 2016)",
    ("dsn", "mnist_mnistm"): "83.2 (DSN-DANN); 80.5 (DSN-MMD)",
}
IGNORED_OVERRIDES = ("seed=", "method=", "data=", "resume=", "hydra.", "trainer.progress=", "trainer.threads=",
                    "trainer.keep_every=")


@dataclass
class Run:
    path: Path
    method: str
    data: str
    seed: int | None
    setting: str  # the non-seed overrides, "k=v k=v"
    rows: list[dict[str, Any]]
    summary: dict[str, Any] | None
    max_steps: int | None = None

    @property
    def finished(self) -> bool:
        return self.summary is not None

    def value(self, column: str) -> float | None:
        if column == "last":
            return self.summary[f"target_{metric_of(self.summary)}"] if self.summary else None
        row = select(self.rows, column)
        return None if row is None else row[f"target_{metric_of(row)}"]


@dataclass
class Group:
    method: str
    data: str
    setting: str
    runs: list[Run] = field(default_factory=list)

    @property
    def metric(self) -> str:
        """What the numbers are: "mIoU" for segmentation pairs, else "acc" (classification accuracy)."""
        return "mIoU" if any(r.summary and metric_of(r.summary) == "miou" for r in self.runs) else "acc"

    def stats(self, column: str) -> tuple[float, float, int] | None:
        vals = [v for r in self.runs if (v := r.value(column)) is not None]
        if not vals:
            return None
        return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0, len(vals)


def _load_yaml(path: Path) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(path))


def load_run(path: Path) -> Run | None:
    cfg_file, over_file = path / ".hydra" / "config.yaml", path / ".hydra" / "overrides.yaml"
    summary = json.loads((path / "summary.json").read_text()) if (path / "summary.json").is_file() else None
    if cfg_file.is_file():
        cfg = _load_yaml(cfg_file)
        method, data, seed = cfg["method"]["name"], cfg["data"]["name"], cfg.get("seed")
        max_steps = cfg.get("trainer", {}).get("max_steps")
    elif summary is not None:
        method, data, seed, max_steps = summary["method"], summary["data"], summary.get("seed"), summary.get("steps")
    else:
        return None
    overrides = _load_yaml(over_file) if over_file.is_file() else []
    setting = " ".join(sorted(o for o in overrides if not o.lstrip("+~").startswith(IGNORED_OVERRIDES)))
    rows = []
    if (path / "metrics.jsonl").is_file():
        rows = [json.loads(ln) for ln in (path / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    return Run(path, method, data, seed, setting, rows, summary, max_steps)


def find_runs(dirs: list[Path]) -> list[Run]:
    seen, runs = set(), []
    for d in dirs:
        if not d.exists():
            raise FileNotFoundError(f"{d}: no such directory")
        candidates = {p.parent for p in d.rglob("metrics.jsonl")} | {p.parent for p in d.rglob("summary.json")}
        candidates |= {p.parent.parent for p in d.rglob(".hydra/config.yaml")}
        for c in sorted(candidates):
            if c.resolve() in seen:
                continue
            seen.add(c.resolve())
            run = load_run(c)
            if run is not None:
                runs.append(run)
    return runs


def group_runs(runs: list[Run]) -> list[Group]:
    groups: dict[tuple[str, str, str], Group] = {}
    for r in runs:
        if r.finished:
            groups.setdefault((r.data, r.method, r.setting), Group(r.method, r.data, r.setting)).runs.append(r)
    return [groups[k] for k in sorted(groups)]


def fmt(stats: tuple[float, float, int] | None) -> str:
    return "-" if stats is None else f"{stats[0]:.2f} ± {stats[1]:.2f}"


def table_rows(groups: list[Group]) -> list[dict[str, str]]:
    out = []
    for g in groups:
        row = {"method": g.method, "data": g.data, "setting": g.setting or "-", "seeds": str(len(g.runs)),
               "metric": g.metric}
        for col in COLUMNS:
            row[col] = fmt(g.stats(col))
        row["paper"] = PAPER.get((g.method, g.data), "-")
        out.append(row)
    return out


def write_markdown(rows: list[dict[str, str]], unfinished: list[Run], path: Path, figures: list[Path]) -> None:
    head = ["method", "data", "setting", "seeds", "metric", *COLUMNS, "paper"]
    lines = ["# uda report", "",
             "Target test metric (%, `metric`: accuracy, or mIoU for segmentation), mean ± std over seeds. `last`: the final checkpoint. "
             "`source_val`, `entropy`, `dev`, `snd`: the evaluation each label-free criterion picks "
             "(no target labels). `oracle`: the best evaluation by the target test metric (reference only).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r[h] for h in head) + " |" for r in rows]
    if unfinished:
        lines += ["", "## Unfinished runs (not averaged)", "", "| run | method | data | seed | last evaluated step |",
                  "|---|---|---|---|---|"]
        lines += [f"| {r.path} | {r.method} | {r.data} | {r.seed} | {r.rows[-1]['step'] if r.rows else '-'} |"
                  for r in unfinished]
    if figures:
        lines += ["", "## Figures", ""] + [f"![{f.stem}]({f.name})" for f in figures]
    path.write_text("\n".join(lines) + "\n")


def write_csv(groups: list[Group], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "data", "setting", "seeds", "metric", *[f"{c}_{s}" for c in COLUMNS for s in ("mean", "std", "n")],
                    "paper"])
        for g in groups:
            vals = []
            for c in COLUMNS:
                st = g.stats(c)
                vals += ["", "", 0] if st is None else [round(st[0], 4), round(st[1], 4), st[2]]
            w.writerow([g.method, g.data, g.setting, len(g.runs), g.metric, *vals, PAPER.get((g.method, g.data), "")])


def plot_pair(data: str, groups: list[Group], path: Path) -> None:
    """Target accuracy (mIoU for segmentation) over steps: one line per method/setting (mean over seeds), band = +- std."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
        label = f"{g.method} ({len(g.runs)} seeds)" + (f" {g.setting}" if g.setting else "")
        (line,) = ax.plot(steps, mean, label=label, linewidth=2)
        ax.fill_between(steps, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                        color=line.get_color(), alpha=0.2)
    ax.set_xlabel("training step")
    name = "mIoU" if any(g.metric == "mIoU" for g in groups) else "accuracy"
    ax.set_ylabel(f"target test {name} (%)")
    ax.set_title(f"{data}: target {name} over training (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def report(dirs: list[Path], out: Path | None = None, *, figures: bool = True) -> dict[str, Any]:
    """Collect, print a rich table, write report.md / report.csv / target_acc_<pair>.png into ``out``."""
    runs = find_runs(dirs)
    if not runs:
        raise FileNotFoundError(f"no runs under {', '.join(map(str, dirs))} (a run has .hydra/, metrics.jsonl "
                                f"or summary.json)")
    out = Path(out or dirs[0])
    out.mkdir(parents=True, exist_ok=True)
    groups = group_runs(runs)
    unfinished = [r for r in runs if not r.finished]
    rows = table_rows(groups)
    pngs = []
    if figures:
        for data in sorted({g.data for g in groups}):
            png = out / f"target_acc_{data}.png"
            plot_pair(data, [g for g in groups if g.data == data], png)
            pngs.append(png)
    write_markdown(rows, unfinished, out / "report.md", pngs)
    write_csv(groups, out / "report.csv")
    _print_rich(rows, unfinished)
    return {"groups": groups, "rows": rows, "unfinished": unfinished, "figures": pngs,
            "markdown": out / "report.md", "csv": out / "report.csv"}


def _print_rich(rows: list[dict[str, str]], unfinished: list[Run]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=200)
    t = Table(title="target test metric (%): accuracy, or mIoU for segmentation; mean ± std over seeds",
              show_lines=False)
    cols = ("method", "data", "setting", "seeds", "metric", *COLUMNS, "paper")
    for col in cols:
        t.add_column(col, justify="right" if col in (*COLUMNS, "seeds") else "left")
    for r in rows:
        t.add_row(*(r[c] for c in cols))
    console.print(t)
    console.print("last: final checkpoint; source_val/entropy/dev/snd: the evaluation each label-free criterion "
                  "picks; oracle: best by target test labels (reference only)")
    if unfinished:
        console.print(f"[yellow]{len(unfinished)} unfinished run(s), not averaged:[/yellow]")
        for r in unfinished:
            console.print(f"  {r.path}  {r.method} {r.data} seed={r.seed} "
                          f"last evaluated step {r.rows[-1]['step'] if r.rows else '-'}")


__all__ = ["report", "find_runs", "group_runs", "CRITERIA"]
