"""``uda report`` over a ``uda tune`` directory: one row per candidate (source-only and every trial), its
label-free score (the study's objective), its target metric (reported, never used), the pick, the oracle
and the pick's regret; tune.csv, a section of report.md and a figure of score against target metric."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from uda.report.runs import load_run

COLUMNS = ("trial", "overrides", "score", "target", "picked")


def tune_dirs(dirs: list[Path]) -> list[Path]:
    from uda.tune_plan import SPEC

    return [d for d in dirs if (d / SPEC).is_file()]


def tune_rows(directory: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(the study's spec, one row per candidate in order: source_only, trial_000, ...). A row: trial, overrides
    (what the trial adds to the study's command), score (``uda.tune_study.candidate_score``: the study's own
    rule), target (the mean over the candidate's seeds; None until each finished), picked, default."""
    from uda.tune_plan import BASELINE, SPEC, candidate_runs
    from uda.tune_study import best, candidate_score

    spec = json.loads((directory / SPEC).read_text())
    seeds = spec.get("seeds", [0])  # one seed: the candidate's directory is its run
    rows = []
    for path in [directory / BASELINE, *sorted(directory.glob("trial_*"))]:
        runs = [load_run(run_dir) if run_dir.is_dir() else None for run_dir, _ in candidate_runs(directory, path.name,
                                                                                                seeds)]
        if runs[0] is None:
            continue
        extra = [o for o in runs[0].overrides if o not in spec["train"]
                 and not o.startswith(("hydra.", "resume=", *(("seed=",) if len(seeds) > 1 else ())))]
        done = all(run is not None and run.finished for run in runs)
        targets = [run.reported(run.summary) for run in runs] if done else []
        rows.append({"trial": path.name, "overrides": " ".join(extra),
                     "score": candidate_score(directory, path.name, spec["key"], seeds),
                     "target": sum(targets) / len(targets) if targets else None, "targets": targets,
                     "default": path.name == "trial_000"})
    pick = best({r["trial"]: r["score"] for r in rows}, spec["higher"])  # never reads "target"
    for r in rows:
        r["picked"] = r["trial"] == pick
    return spec, rows


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The pick, the oracle (best target metric), the regret (oracle - pick), the default and source-only."""
    done = [r for r in rows if r["target"] is not None]
    if not done:
        return {}
    pick = next((r for r in done if r["picked"]), None)
    oracle = max(done, key=lambda r: r["target"])
    by_name = {r["trial"]: r for r in done}
    return {"pick": pick, "oracle": oracle, "regret": None if pick is None else oracle["target"] - pick["target"],
            "default": by_name.get("trial_000"), "source_only": by_name.get("source_only"), "finished": len(done)}


def write_csv(spec: dict[str, Any], rows: list[dict[str, Any]], path: Path) -> None:
    target = f"target_{spec['metric']}"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["trial", "overrides", "score", target, "picked"])
        for r in rows:
            w.writerow([r["trial"], r["overrides"], "" if r["score"] is None else round(r["score"], 6),
                        "" if r["target"] is None else round(r["target"], 4), "yes" if r["picked"] else "no"])


def markdown(directory: Path, spec: dict[str, Any], rows: list[dict[str, Any]], figure: Path | None) -> list[str]:
    s = summary(rows)
    name = "mIoU" if spec["metric"] == "miou" else "accuracy"
    out = [f"## Tuning study: {spec['method']} on {spec['data']} ({directory})", "",
           f"Objective: {spec['criterion']} ({'higher' if spec['higher'] else 'lower'} is better), label-free; the "
           f"target {name} is reported, never used. Command: `uda tune {' '.join(spec['train'])}`; space: "
           + ", ".join(f"`{k}={v}`" for k, v in spec["space"].items()) + "."
           + (f" Score and target {name}: the mean over seeds {', '.join(map(str, spec['seeds']))}."
              if "seeds" in spec else ""), "",
           f"| trial | overrides | {spec['criterion']} | target {name} | picked |", "|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['trial']}{' (default)' if r['default'] else ''} | {r['overrides'] or '-'} | "
                   f"{_num(r['score'])} | {_target(r)} | {'yes' if r['picked'] else ''} |")
    if s:
        pick, oracle = s["pick"], s["oracle"]
        out += ["", f"Picked **{pick['trial']}** ({_num(pick['target'], 2)}); oracle {oracle['trial']} "
                    f"({_num(oracle['target'], 2)}); regret **{s['regret']:.2f}**; default "
                    f"{_num(s['default']['target'], 2) if s['default'] else '-'}; source-only "
                    f"{_num(s['source_only']['target'], 2) if s['source_only'] else '-'} ({s['finished']} finished)."
                if pick else "No candidate has a score."]
    if figure:
        out += ["", f"![{spec['criterion']} against target {name}]({figure.name})"]
    return [*out, ""]


def plot(spec: dict[str, Any], rows: list[dict[str, Any]], out: Path, stem: str) -> Path | None:
    """tune_<stem>.png: each finished candidate's score against its target metric; the pick and source-only
    marked."""
    from uda.report.figures import _plt

    done = [r for r in rows if r["target"] is not None and r["score"] is not None]
    if not done:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=120)
    ax.scatter([r["score"] for r in done], [r["target"] for r in done], color="tab:blue", label="trial")
    # markers and a legend, not text beside the points: candidates often score within a hair of each other
    for label, marker, color, hit in (("default", "D", "tab:green", lambda r: r["default"]),
                                      ("source-only", "s", "tab:gray", lambda r: r["trial"] == "source_only"),
                                      ("picked", "*", "tab:red", lambda r: r["picked"])):
        mine = [r for r in done if hit(r)]
        if mine:
            ax.scatter([r["score"] for r in mine], [r["target"] for r in mine], marker=marker, s=110,
                       facecolors="none" if label != "picked" else color, edgecolors=color, label=label)
    ax.legend(fontsize=8)
    ax.set_xlabel(f"{spec['criterion']} ({'higher' if spec['higher'] else 'lower'} is better; label-free)")
    ax.set_ylabel(f"target {'mIoU' if spec['metric'] == 'miou' else 'accuracy'} (%)")
    ax.set_title(f"{spec['method']} on {spec['data']}: the study's trials")
    path = out / f"tune_{stem}.png"
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def _target(r: dict[str, Any]) -> str:
    """The target metric: the mean, and each seed's where there are several (their spread is why)."""
    if r["target"] is None:
        return "-"
    return f"{r['target']:.2f}" + (f" ({', '.join(f'{t:.2f}' for t in r['targets'])})" if len(r["targets"]) > 1
                                   else "")


def _num(v: float | None, digits: int = 4) -> str:
    return "-" if v is None else f"{v:.{digits}f}" if digits == 2 else f"{v:.4g}"


def report_tunes(dirs: list[Path], out: Path, *, figures: bool = True) -> tuple[list[str], list[dict[str, Any]]]:
    """For each tune directory among ``dirs``: tune.csv (tune_<name>.csv where several), its figure and its
    report.md section. Returns (markdown lines, one summary per study)."""
    from uda.report.figures import file_stem

    studies = tune_dirs(dirs)
    lines, results = [], []
    for d in studies:
        spec, rows = tune_rows(d)
        stem = file_stem(d.name) if len(studies) > 1 else ""
        write_csv(spec, rows, out / (f"tune_{stem}.csv" if stem else "tune.csv"))
        figure = plot(spec, rows, out, stem or file_stem(f"{spec['method']}_{spec['data']}")) if figures else None
        lines += markdown(d, spec, rows, figure)
        results.append({"dir": d, "spec": spec, "rows": rows, **summary(rows)})
    return lines, results


def print_tunes(tunes: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=200)
    for t in tunes:
        spec = t["spec"]
        name = "mIoU" if spec["metric"] == "miou" else "acc"
        table = Table(title=f"tuning study {t['dir']}: {spec['method']} on {spec['data']}, objective "
                            f"{spec['criterion']} ({'higher' if spec['higher'] else 'lower'} is better)"
                            + (f", means over seeds {', '.join(map(str, spec['seeds']))}" if "seeds" in spec else ""))
        for col in ("trial", "overrides", spec["criterion"], f"target {name}", "picked"):
            table.add_column(col, justify="left" if col in ("trial", "overrides") else "right")
        for r in t["rows"]:
            table.add_row(r["trial"] + (" (default)" if r["default"] else ""), r["overrides"] or "-",
                          _num(r["score"], 2), _target(r), "yes" if r["picked"] else "")
        console.print(table)
        if t.get("pick"):
            console.print(f"picked {t['pick']['trial']} ({t['pick']['target']:.2f}); oracle {t['oracle']['trial']} "
                          f"({t['oracle']['target']:.2f}); regret {t['regret']:.2f} (the target metric is reported, "
                          f"never used to pick); tune.csv beside report.md")
