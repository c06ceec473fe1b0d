"""``uda report DIR...``: every run under the directories, grouped, over seeds, per selection criterion,
and how far each label-free criterion can be trusted.

A run directory holds ``.hydra/`` (config and overrides), ``metrics.jsonl`` (one row per
evaluation) and, once finished, ``summary.json``. Runs are grouped by pair x method x the
overrides that are neither the seed nor Hydra's own (a custom pair is named by its source and target).
Written into the output directory:

- ``report.md`` / ``report.csv``: per group, the target metric of the last checkpoint, of the evaluation
  each label-free criterion picks and of the oracle (target test labels; reference only), mean ± std
  over seeds with a 95% t interval, and against source-only on the same pair a paired t-test by seed;
- ``criteria.csv`` (and a report.md section per pair): per group and criterion the regret (oracle
  minus picked, per run, mean ± std) and the Spearman / Kendall correlation between the score and the
  target metric over each run's evaluations, averaged over runs; rows ``(all)`` pool a pair's runs;
- ``selection.csv`` (and a section): across every configuration on a pair (seeds are repeats), the
  configuration and checkpoint each criterion chooses by its score averaged over seeds, against the oracle;
- ``target_<metric>_<pair>.png`` and ``regret_<pair>.png``: curves over training and each criterion's regret.
Unfinished runs are listed, never averaged.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from uda.report import stats
from uda.report.runs import Group, Run, baseline, contended, find_runs, group_runs, single_evaluation
from uda.report.trust import run_correlation, run_regret, sweep_select
from uda.report.tune import print_tunes, report_tunes
from uda.selection import CRITERIA, LABEL_FREE, metric_of, select

COLUMNS = ("last", *LABEL_FREE, "oracle")
# published target accuracies (../METHODS.md), keyed by (method, pair)
PAPER = {
    ("source_only", "mnist_mnistm"): "52.25 (Ganin 2016); 56.6 (Bousmalis 2016)",
    ("dann", "mnist_mnistm"): "76.66 (Ganin 2016)",
    ("dsn", "mnist_mnistm"): "83.2 (DSN-DANN); 80.5 (DSN-MMD)",
}
SELECTION_COLUMNS = ("pair", "criterion", "recommended", "chosen", "target_mean", "target_std", "oracle_chosen",
                     "oracle_mean", "regret")


def recommended_criterion() -> str:
    """The criterion ``uda`` recommends: the default of ``trainer.select`` (why: README, docs/notes/selection.md)."""
    from uda.schema.trainer import TrainerConfig

    return TrainerConfig().select.value


def fmt(summary: stats.Summary | None) -> str:
    """``mean ± std [95% t interval]`` (the interval needs two seeds or more)."""
    return "-" if summary is None else summary.text(ci=True)


def fmt_p(p: float) -> str:
    return "n/a" if math.isnan(p) else (f"{p:.3f}" if p >= 0.001 else f"{p:.1e}")


def versus(group: Group, groups: list[Group]) -> str:
    """``+22.10 (p=0.012, n=3)``: last-checkpoint difference to source-only, paired t-test by seed."""
    base = baseline(group, groups)
    if base is None:
        return "-"
    res = stats.paired_test(group.by_seed("last"), base.by_seed("last"))
    if res is None:
        return "-"
    return f"{res[0]:+.2f} (p={fmt_p(res[1])}, n={res[2]})"


def table_rows(groups: list[Group]) -> list[dict[str, str]]:
    out = []
    for g in groups:
        row = {"method": g.method, "data": g.pair, "setting": g.setting or "-", "seeds": str(len(g.runs)),
               "metric": g.metric}
        for col in COLUMNS:
            row[col] = fmt(stats.summarize(g.values(col)))
        row["vs_source_only"] = versus(g, groups)
        row["paper"] = PAPER.get((g.method, g.data), "-")
        out.append(row)
    return out


# ---------- how far to trust each criterion
def criteria_rows(groups: list[Group]) -> list[dict[str, Any]]:
    """Per pair, per group and pooled over the pair's runs (``(all)``), per criterion (and ``last``):
    regret mean ± std over runs and the mean Spearman / Kendall over runs."""
    out = []
    for pair in sorted({g.pair for g in groups}):
        pg = [g for g in groups if g.pair == pair]
        for crit in ("last", *LABEL_FREE):
            pooled: dict[str, list[float]] = {"regret": [], "spearman": [], "kendall": []}
            for g in pg:
                one = _criterion_stats(g.runs, crit)
                if one["runs"]:
                    out.append({"pair": pair, "method": g.method, "setting": g.setting, "label": g.label,
                                "criterion": crit, **_finish(one)})
                for k in pooled:
                    pooled[k] += one[k]
            if pooled["regret"]:
                pooled["runs"] = len(pooled["regret"])
                out.append({"pair": pair, "method": "(all)", "setting": "", "label": "(all)", "criterion": crit,
                            **_finish(pooled)})
    return out


def _criterion_stats(runs: list[Run], crit: str) -> dict[str, Any]:
    res: dict[str, Any] = {"regret": [], "spearman": [], "kendall": []}
    for r in runs:
        if len(r.rows) < 2:  # nothing to choose between (single_evaluation)
            continue
        if crit == "last":
            best = select(r.rows, "oracle")
            if best is not None and r.summary is not None:
                res["regret"].append(best[f"target_{metric_of(best)}"] - r.value("last"))
            continue
        reg = run_regret(r.rows, crit)
        if reg is not None:
            res["regret"].append(reg)
        corr = run_correlation(r.rows, crit)
        if corr is not None:
            res["spearman"].append(corr[0])
            res["kendall"].append(corr[1])
    res["runs"] = len(res["regret"])
    return res


def _finish(d: dict[str, Any]) -> dict[str, Any]:
    reg = stats.summarize(d["regret"])
    return {"runs": d["runs"], "regret_mean": reg.mean, "regret_std": reg.std, "regret": reg,
            "regret_ci_low": reg.ci[0] if reg.ci else math.nan, "regret_ci_high": reg.ci[1] if reg.ci else math.nan,
            "spearman": stats.nanmean(d["spearman"]), "kendall": stats.nanmean(d["kendall"])}


def write_criteria_csv(rows: list[dict[str, Any]], path: Path) -> None:
    cols = ("pair", "method", "setting", "criterion", "runs", "regret_mean", "regret_std", "regret_ci_low",
            "regret_ci_high", "spearman", "kendall")
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in rows:
            w.writerow([_round(r[c]) for c in cols])


def _round(v: Any) -> Any:
    return ("" if math.isnan(v) else round(v, 4)) if isinstance(v, float) else v


# ---------- choosing across a sweep
def selection_rows(groups: list[Group]) -> list[dict[str, Any]]:
    """Per pair and criterion: the configuration and step it chooses across every group on the pair (its
    score averaged over seeds), that choice's target metric over seeds, the oracle's choice and the regret."""
    rec = recommended_criterion()
    out = []
    for pair in sorted({g.pair for g in groups}):
        cands = {g.name: g for g in groups if g.pair == pair}
        histories = {name: [r.rows for r in g.runs] for name, g in cands.items()}
        oracle = sweep_select(histories, "oracle")
        if oracle is None:
            continue
        o_stats = _at(cands[oracle[0]], oracle[1])
        for crit in LABEL_FREE:
            choice = sweep_select(histories, crit)
            if choice is None:
                continue
            c_stats = _at(cands[choice[0]], choice[1])
            out.append({"pair": pair, "criterion": crit, "recommended": "yes" if crit == rec else "no",
                        "chosen": choice[0], "step": choice[1], "target_mean": c_stats.mean,
                        "target_std": c_stats.std, "target_ci": c_stats.ci, "oracle_chosen": oracle[0],
                        "oracle_step": oracle[1], "oracle_mean": o_stats.mean,
                        "regret": o_stats.mean - c_stats.mean})
    return out


def _at(group: Group, step: int) -> stats.Summary:
    vals = []
    for r in group.runs:
        row = next(x for x in r.rows if x["step"] == step)
        vals.append(row[f"target_{metric_of(row)}"])
    return stats.summarize(vals)


def write_selection_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(SELECTION_COLUMNS)
        for r in rows:
            w.writerow([_round(r[c]) for c in SELECTION_COLUMNS])


# ---------- report.md
def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]


def _num(v: float) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"


def _notes_md(groups: list[Group]) -> list[str]:
    """The runs counted once though found twice, and the runs a criterion had one evaluation to choose from."""
    lines = []
    dups = [d for g in groups for d in g.duplicates]
    if dups:
        lines += ["", "## Duplicate runs (the same configuration and seed; counted once)", "",
                  "| run | same as (counted) | target, both |", "|---|---|---|"]
        lines += [f"| {a.path} | {b.path} | {_num(a.value('last'))}, {_num(b.value('last'))} |" for a, b in dups]
    counted = [r for g in groups for r in g.runs]
    single = single_evaluation(counted)
    if single:
        lines += ["", "## Runs evaluated once (left out of the criteria tables)", "",
                  "Every criterion picks a run's only evaluation: regret 0 and no rank correlation by construction. "
                  "Evaluate more often (`trainer.eval_every`, `trainer.min_evals`) to compare criteria.", ""]
        lines += [f"- {r.path} ({r.method}, {r.pair}, seed {r.seed})" for r in single]
    busy = contended(counted)
    if busy:
        lines += ["", "## Runs timed beside a busy process (summary.json: contended)", "",
                  "Other processes kept their cores busy: their wall time and images/s are not the machine's speed.",
                  ""]
        for r in busy:
            share = 100 * (r.summary.get("contention_max_share") or 0)
            lines.append(f"- {r.path} ({r.summary.get('images_per_s')} img/s; others used up to {share:.0f}% of "
                         f"its cores)")
    return lines


def write_markdown(rows: list[dict[str, str]], unfinished: list[Run], path: Path, figures: list[Path],
                   crit_rows: list[dict[str, Any]] | None = None, sel_rows: list[dict[str, Any]] | None = None,
                   groups: list[Group] | None = None) -> None:
    rec = recommended_criterion()
    head = ["method", "data", "setting", "seeds", "metric", "last", "vs source_only", rec, "oracle", "paper"]
    lines = ["# uda report", "",
             "Target test metric (%, `metric`: accuracy, or mIoU for segmentation), mean ± std [95% t interval] over "
             "seeds (every mean ± std in this report carries its interval). `last`: the final checkpoint. "
             "`vs source_only`: last-checkpoint difference to "
             "source-only on the same pair, paired t-test by seed (two-sided p). "
             f"`{rec}`: the evaluation the recommended label-free criterion picks (the default of `trainer.select`); "
             "every criterion's pick is in report.csv. `oracle`: the best evaluation by the target test metric "
             "(reference only).", ""]
    lines += _table(head, [[r["vs_source_only" if h == "vs source_only" else h] for h in head] for r in rows])
    for pair in sorted({r["pair"] for r in crit_rows or []}):
        pr = [r for r in crit_rows if r["pair"] == pair]
        labels = list(dict.fromkeys(r["label"] for r in pr if r["method"] != "(all)"))
        lines += [
            "",
            f"## How far to trust each criterion: {pair}",
            "",
            "Regret: the oracle's target metric minus that of the evaluation the criterion picks, per run "
            "(mean ± std [95% t interval] over runs; `last`: keeping the final checkpoint). Spearman / Kendall: rank "
            "correlation between the score (signed so larger is better for it) and the target metric over "
            "each run's evaluations, mean over runs. `all runs` pools every run on the pair.",
            "",
        ]
        body = []
        for crit in ("last", *LABEL_FREE):
            allr = next((r for r in pr if r["criterion"] == crit and r["method"] == "(all)"), None)
            if allr is None:
                continue
            cells = [f"`{crit}`" + (" (recommended)" if crit == rec else ""),
                     allr["regret"].text(ci=True), _num(allr["spearman"]),
                     _num(allr["kendall"])]
            for lab in labels:
                g = next((r for r in pr if r["criterion"] == crit and r["label"] == lab), None)
                cells.append("-" if g is None else g["regret"].text(ci=True))
            body.append(cells)
        lines += _table(["criterion", "all runs: regret", "Spearman", "Kendall", *[f"{lab}: regret" for lab in labels]],
                        body)
    if sel_rows:
        lines += ["", "## Choosing across the sweep", "",
                  "Per pair, every configuration found (seeds are its repeats) and every evaluation step are "
                  "candidates; each criterion chooses one by its score averaged over seeds. Target: that choice's "
                  "target test metric, mean ± std [95% t interval] over seeds. Regret: oracle mean minus target mean. "
                  "Also in selection.csv.", ""]
        body = [[r["pair"], f"`{r['criterion']}`", r["recommended"], r["chosen"], str(r["step"]),
                 f"{r['target_mean']:.2f} ± {r['target_std']:.2f}" +
                 (f" [{r['target_ci'][0]:.2f}, {r['target_ci'][1]:.2f}]" if r["target_ci"] else ""),
                 f"{r['oracle_chosen']} @ {r['oracle_step']}", f"{r['oracle_mean']:.2f}", f"{r['regret']:.2f}"]
                for r in sel_rows]
        lines += _table(["pair", "criterion", "recommended", "chosen", "step", "target", "oracle", "oracle mean",
                         "regret"], body)
    lines += _notes_md(groups or [])
    if unfinished:
        lines += ["", "## Unfinished runs (not averaged)", "", "| run | method | data | seed | last evaluated step |",
                  "|---|---|---|---|---|"]
        lines += [f"| {r.path} | {r.method} | {r.pair} | {r.seed} | {r.rows[-1]['step'] if r.rows else '-'} |"
                  for r in unfinished]
    if figures:
        lines += ["", "## Figures", ""] + [f"![{f.stem}]({f.name})" for f in figures]
    path.write_text("\n".join(lines) + "\n")


def write_csv(groups: list[Group], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "data", "setting", "seeds", "metric",
                    *[f"{c}_{s}" for c in COLUMNS for s in ("mean", "std", "n", "ci_low", "ci_high")],
                    "vs_source_only", "paper"])
        for g in groups:
            vals = []
            for c in COLUMNS:
                st = stats.summarize(g.values(c))
                vals += (["", "", 0, "", ""] if st is None else
                         [round(st.mean, 4), round(st.std, 4), st.n, *(["", ""] if st.ci is None else
                                                                        [round(st.ci[0], 4), round(st.ci[1], 4)])])
            w.writerow([g.method, g.pair, g.setting, len(g.runs), g.metric, *vals, versus(g, groups),
                        PAPER.get((g.method, g.data), "")])


def report(dirs: list[Path], out: Path | None = None, *, figures: bool = True) -> dict[str, Any]:
    """Collect, print rich tables, write report.md / report.csv / criteria.csv / selection.csv and the
    figures into ``out``."""
    from uda.report import figures as figs

    runs = find_runs(dirs)
    if not runs:
        raise FileNotFoundError(f"no runs under {', '.join(map(str, dirs))} (a run has .hydra/, metrics.jsonl "
                                f"or summary.json)")
    out = Path(out or dirs[0])
    out.mkdir(parents=True, exist_ok=True)
    groups = group_runs(runs)
    unfinished = [r for r in runs if not r.finished]
    rows = table_rows(groups)
    crit_rows, sel_rows = criteria_rows(groups), selection_rows(groups)
    pngs = []
    if figures:
        for pair in sorted({g.pair for g in groups}):
            pg = [g for g in groups if g.pair == pair]
            pngs.append(figs.plot_pair(pair, pg, out))
            regret = [r for r in crit_rows if r["pair"] == pair and r["method"] == "(all)"]
            if regret:
                pngs.append(figs.plot_regret(pair, regret, [r for r in sel_rows if r["pair"] == pair], out))
    write_markdown(rows, unfinished, out / "report.md", pngs, crit_rows, sel_rows, groups)
    tune_md, tunes = report_tunes(dirs, out, figures=figures)
    if tune_md:
        with open(out / "report.md", "a") as f:
            f.write("\n" + "\n".join(tune_md))
    write_csv(groups, out / "report.csv")
    write_criteria_csv(crit_rows, out / "criteria.csv")
    write_selection_csv(sel_rows, out / "selection.csv")
    _print_rich(rows, unfinished, sel_rows, crit_rows, groups)
    print_tunes(tunes)
    return {"tunes": tunes, "groups": groups, "rows": rows, "criteria": crit_rows, "selection": sel_rows,
            "unfinished": unfinished, "figures": pngs, "markdown": out / "report.md", "csv": out / "report.csv",
            "criteria_csv": out / "criteria.csv", "selection_csv": out / "selection.csv"}


def _print_rich(rows: list[dict[str, str]], unfinished: list[Run], sel_rows: list[dict[str, Any]],
                crit_rows: list[dict[str, Any]], groups: list[Group]) -> None:
    from rich.console import Console
    from rich.table import Table

    rec = recommended_criterion()
    console = Console(width=200)
    t = Table(title="target test metric (%): accuracy, or mIoU for segmentation; mean ± std over seeds",
              show_lines=False)
    cols = ("method", "data", "setting", "seeds", "metric", "last", "vs_source_only", rec, "oracle")
    for col in cols:
        t.add_column(col, justify="right" if col not in ("method", "data", "setting", "metric") else "left")
    for r in rows:
        t.add_row(*(r[c] for c in cols))
    console.print(t)
    console.print(
        "mean ± std [95% t interval] over seeds; last: final checkpoint; vs_source_only: paired t-test by seed; "
        f"{rec}: "
        "the recommended label-free criterion's pick; oracle: best by target test labels (reference only). "
        "All criteria: report.md, criteria.csv, selection.csv"
    )
    for pair in sorted({r["pair"] for r in crit_rows}):
        c = Table(title=f"{pair}: how far to trust each criterion (all runs pooled; regret = oracle - picked)")
        for col in ("criterion", "checkpoint regret", "Spearman", "Kendall", "sweep regret"):
            c.add_column(col, justify="left" if col == "criterion" else "right")
        sweep = {r["criterion"]: r["regret"] for r in sel_rows if r["pair"] == pair}
        for r in crit_rows:
            if r["pair"] == pair and r["method"] == "(all)":
                c.add_row(r["criterion"] + (" *" if r["criterion"] == rec else ""), r["regret"].text(ci=True),
                          _num(r["spearman"]), _num(r["kendall"]),
                          _num(sweep[r["criterion"]]) if r["criterion"] in sweep else "-")
        console.print(c)
    if sel_rows:
        s = Table(title="choosing across the sweep (per pair; score averaged over seeds)")
        for col in ("pair", "criterion", "chosen", "step", "target", "oracle", "regret"):
            s.add_column(col, justify="right" if col in ("step", "target", "regret") else "left")
        for r in sel_rows:
            s.add_row(r["pair"], r["criterion"] + (" *" if r["recommended"] == "yes" else ""), r["chosen"],
                      str(r["step"]), f"{r['target_mean']:.2f} ± {r['target_std']:.2f}",
                      f"{r['oracle_chosen']} @ {r['oracle_step']}: {r['oracle_mean']:.2f}", f"{r['regret']:.2f}")
        console.print(s)
    for run, kept in (d for g in groups for d in g.duplicates):
        console.print(
            f"[yellow]duplicate, counted once:[/yellow] {run.path} = {kept.path} (same configuration and seed)"
        )
    counted = [r for g in groups for r in g.runs]
    single = single_evaluation(counted)
    if single:
        console.print(f"[yellow]{len(single)} run(s) evaluated once, left out of the criteria tables (nothing to "
                      f"choose between):[/yellow] " + ", ".join(str(r.path) for r in single))
    busy = contended(counted)
    if busy:
        console.print(f"[yellow]{len(busy)} run(s) timed beside a busy process (contended): their timings are not "
                      f"the machine's speed:[/yellow] " + ", ".join(str(r.path) for r in busy))
    if unfinished:
        console.print(f"[yellow]{len(unfinished)} unfinished run(s), not averaged:[/yellow]")
        for r in unfinished:
            console.print(f"  {r.path}  {r.method} {r.pair} seed={r.seed} "
                          f"last evaluated step {r.rows[-1]['step'] if r.rows else '-'}")


__all__ = ["report", "find_runs", "group_runs", "CRITERIA"]
