"""The runs ``uda report`` reads: a run directory (``.hydra/`` config and overrides, ``metrics.jsonl``,
``summary.json`` once finished) as a ``Run``, and the runs of one configuration over seeds as a ``Group``
(pair x method x the overrides that are neither the seed nor Hydra's own; a custom pair is named by its
source and target), each with the short label figures and tables use."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uda.selection import metric_of, select

IGNORED_OVERRIDES = ("seed=", "method=", "data=", "resume=", "hydra.", "trainer.progress=", "trainer.threads=",
                    "trainer.keep_every=")
# what names a custom pair (in the pair's name, so not repeated in the setting)
PAIR_OVERRIDES = ("data.source.path=", "data.target.path=")
# pairs whose protocol reports the mean of the per-class accuracies, not accuracy
MEAN_CLASS_PAIRS = ("visda17",)


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
    pair: str = ""  # data, or custom_<source>_<target> for a custom pair
    overrides: tuple[str, ...] = ()  # .hydra/overrides.yaml as given

    def __post_init__(self):
        self.pair = self.pair or self.data

    @property
    def finished(self) -> bool:
        return self.summary is not None

    def reported(self, row: dict[str, Any]) -> float:
        """The target metric the report gives for an evaluation row or summary: accuracy or mIoU, or the mean
        class accuracy for the pairs whose protocol reports it (``MEAN_CLASS_PAIRS``)."""
        if self.data in MEAN_CLASS_PAIRS and "target_mean_class_acc" in row:
            return row["target_mean_class_acc"]
        return row[f"target_{metric_of(row)}"]

    def value(self, column: str) -> float | None:
        if column == "last":
            return self.reported(self.summary) if self.summary else None
        row = select(self.rows, column)
        return None if row is None else self.reported(row)


@dataclass
class Group:
    method: str
    data: str
    setting: str
    runs: list[Run] = field(default_factory=list)
    duplicates: list[tuple[Run, Run]] = field(default_factory=list)  # (a run, the one with its seed counted)
    pair: str = ""
    label: str = ""  # the method plus the overrides that differ from the pair's other groups

    def __post_init__(self):
        self.pair = self.pair or self.data
        self.label = self.label or " ".join(filter(None, (self.method, self.setting)))

    @property
    def name(self) -> str:
        """The configuration as ``chosen`` names it: the method and its setting."""
        return " ".join(filter(None, (self.method, self.setting)))

    @property
    def metric(self) -> str:
        """What the numbers are: "mIoU" for segmentation pairs, "mean class acc" for ``MEAN_CLASS_PAIRS``, else
        "acc" (classification accuracy)."""
        if any(r.summary and metric_of(r.summary) == "miou" for r in self.runs):
            return "mIoU"
        return "mean class acc" if self.data in MEAN_CLASS_PAIRS else "acc"

    def values(self, column: str) -> list[float]:
        return [v for r in self.runs if (v := r.value(column)) is not None]

    def by_seed(self, column: str) -> dict[int, float]:
        return {r.seed: v for r in self.runs if r.seed is not None and (v := r.value(column)) is not None}


def _load_yaml(path: Path) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(path))


def pair_name(data: str, cfg: dict[str, Any] | None) -> str:
    """The pair's name: ``data``, or for data=custom ``custom_<source>_<target>`` from the two paths."""
    if data != "custom" or not cfg:
        return data
    names = [Path(str((cfg.get("data") or {}).get(role, {}).get("path") or role)).stem for role in ("source", "target")]
    return "custom_" + "_".join(names)


def load_run(path: Path) -> Run | None:
    cfg_file, over_file = path / ".hydra" / "config.yaml", path / ".hydra" / "overrides.yaml"
    summary = json.loads((path / "summary.json").read_text()) if (path / "summary.json").is_file() else None
    cfg = None
    if cfg_file.is_file():
        cfg = _load_yaml(cfg_file)
        method, data, seed = cfg["method"]["name"], cfg["data"]["name"], cfg.get("seed")
        max_steps = cfg.get("trainer", {}).get("max_steps")
    elif summary is not None:
        method, data, seed, max_steps = summary["method"], summary["data"], summary.get("seed"), summary.get("steps")
    else:
        return None
    overrides = _load_yaml(over_file) if over_file.is_file() else []
    setting = " ".join(sorted(o for o in overrides
                              if not o.lstrip("+~").startswith((*IGNORED_OVERRIDES, *PAIR_OVERRIDES))))
    rows = []
    if (path / "metrics.jsonl").is_file():
        rows = [json.loads(ln) for ln in (path / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    return Run(path, method, data, seed, setting, rows, summary, max_steps, pair_name(data, cfg), tuple(overrides))


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
    """Finished runs by (pair, method, setting), each with its short label (see ``short_labels``). Runs that
    differ only by their directory (the same configuration and seed) are duplicates: the first, by path, is
    counted, the others are listed in ``Group.duplicates``, never counted as more seeds."""
    groups: dict[tuple[str, str, str], Group] = {}
    for r in sorted((r for r in runs if r.finished), key=lambda r: str(r.path)):
        g = groups.setdefault((r.pair, r.method, r.setting), Group(r.method, r.data, r.setting, pair=r.pair))
        kept = next((k for k in g.runs if k.seed == r.seed), None)
        if kept is None:
            g.runs.append(r)
        else:
            g.duplicates.append((r, kept))
    out = [groups[k] for k in sorted(groups)]
    for pair in {g.pair for g in out}:
        short_labels([g for g in out if g.pair == pair])
    return out


def short_labels(groups: list[Group]) -> None:
    """Label each group by its method and only the overrides that differ between the groups given."""
    tokens = [set(g.setting.split()) for g in groups]
    common = set.intersection(*tokens) if len(tokens) > 1 else set()
    for g, t in zip(groups, tokens):
        g.label = " ".join([g.method, *sorted(t - common)])


def baseline(group: Group, groups: list[Group]) -> Group | None:
    """The source-only group ``group`` is compared with: on the same pair, sharing the most overrides."""
    if group.method == "source_only":
        return None
    mine = set(group.setting.split())
    cands = [g for g in groups if g.pair == group.pair and g.method == "source_only"]
    if not cands:
        return None
    return max(cands, key=lambda g: (len(mine & set(g.setting.split())), -len(set(g.setting.split()) - mine)))


def single_evaluation(runs: list[Run]) -> list[Run]:
    """Runs evaluated once: every criterion picks that evaluation (regret 0, no rank correlation by construction),
    so they are left out of the criteria tables and the report says so."""
    return [r for r in runs if r.finished and len(r.rows) < 2]


def contended(runs: list[Run]) -> list[Run]:
    """Finished runs whose summary says other processes kept their cores busy."""
    return [r for r in runs if r.summary and r.summary.get("contended")]
