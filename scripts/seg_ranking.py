"""The segmentation methods on synth2real_seg against the GTA5 -> Cityscapes ranking their papers report.

    python scripts/seg_ranking.py              # a markdown table and Kendall's tau-b over the methods with both

Reads the recorded rows ``results/synth2real_<variant>.json`` (3 seeds each, ``uda train -m
+experiment=synth2real_seg_cpu ...``); a variant without a row is listed as not measured. Fixed before any
adaptation run on the pair (docs/notes/synth2real_seg.md): which variants, which paper numbers, tau-b of the
means. Each variant is paired by seed against the source-only row of its own CPU kind and precision
(``synth2real_source_only`` or ``synth2real_source_only_<suffix>``): rows from two machines are not paired.
The papers' networks differ (DeepLab-v2 ResNet-101 unless noted), so the comparison is of rankings only.
"""
from __future__ import annotations

import sys
from pathlib import Path

from uda.report.stats import kendall, paired_test, summarize
from uda.results import ResultError, rows

ROOT = Path(__file__).resolve().parent.parent

# variant -> (the command's method overrides, GTA5 -> Cityscapes mIoU its paper reports or None, source)
PAPERS: dict[str, tuple[str, float | None, str]] = {
    "source_only": ("method=source_only", 36.6, "Tsai et al. 2018, Table 1 (DeepLab-v2 R101 trained on GTA5)"),
    "adaptsegnet_single": ("method=adaptsegnet method.multi_level=false", 41.4, "Tsai et al. 2018, Table 1"),
    "adaptsegnet": ("method=adaptsegnet", 42.4, "Tsai et al. 2018, Table 1 (multi-level)"),
    "advent_minent": ("method=advent method.mode=minent", 42.3, "Vu et al. 2019, Table 1"),
    "advent": ("method=advent", 43.8, "Vu et al. 2019, Table 1 (AdvEnt, DeepLab-v2 R101; "
                                        "as on valeo.ai's blog, 2020-07-07)"),
    "dacs": ("method=dacs", 52.1, "Tranheden et al. 2021, Table 1"),
    "road": ("method=road", 39.4, "Chen et al. 2018, Table 1 (PSPNet; no official code)"),
    "lsd": ("method=lsd", 37.1, "Sankaranarayanan et al. 2018 (FCN-8s VGG16; not checked against the "
                                 "paper text here: seen only in a third-party table)"),
    "daformer": ("method=daformer", 68.3, "Hoyer et al. 2022, DAFormer README (MiT-B5)"),
    "mic_dacs": ("method=mic method/host=dacs", None, "no published number for this host (MIC's DeepLab-v2 "
                                                       "runs train the DAFormer codebase's DACS, not vikolss's)"),
    "mic_daformer": ("method=mic method/host=daformer", 70.6, "MIC(DAFormer), as quoted in lhoyer/MIC issue #71"),
}


def _machine(row) -> tuple[str, str]:
    """The CPU kind (or GPU) and precision a row's first seed ran with: rows are paired only within one."""
    m = row.seeds[min(row.seeds)]["machine"]
    return m["kind"], m["precision"]


def versus_source_only(row, recorded: dict) -> str:
    """``row`` minus source-only paired by seed, against the source-only row (``synth2real_source_only`` or
    ``synth2real_source_only_<suffix>``) of the same machine kind and precision: "+18.99 (p = 0.001, n = 3)"."""
    base = [r for name, r in sorted(recorded.items())
            if (name == "synth2real_source_only" or name.startswith("synth2real_source_only_"))
            and _machine(r) == _machine(row)]
    if not base:
        return f"no source-only row on {', '.join(_machine(row))}"
    own = {s: v[row.metric] for s, v in row.seeds.items()}
    test = paired_test(own, {s: v[base[0].metric] for s, v in base[0].seeds.items()})
    if test is None:
        return "fewer than 2 seeds in common"
    return f"{test[0]:+.2f} (p = {test[1]:.2g}, n = {test[2]}; `{base[0].name}`)"


def table(results: Path) -> tuple[str, float]:
    """(the markdown table, Kendall's tau-b between the measured means and the papers' numbers)."""
    recorded = rows(results) if results.is_dir() else {}
    lines = ["| variant | command (`uda train +experiment=synth2real_seg_cpu` ...) | synth2real_seg target mIoU "
             "(3 seeds) | vs source-only, paired by seed (same CPU kind, precision) | machine | "
             "GTA5 -> Cityscapes mIoU (paper) | source |", "|---|---|---|---|---|---|---|"]
    ours, theirs = [], []
    for variant, (command, paper, source) in PAPERS.items():
        row = recorded.get(f"synth2real_{variant}")
        s = summarize(row.values()) if row else None
        measured = f"{s.mean:.2f} ± {s.std:.2f}" if s else "not measured"
        versus = "—" if row is None or variant == "source_only" else versus_source_only(row, recorded)
        machine = ", ".join(_machine(row)) if row else "—"
        lines.append(f"| {variant} | `{command}` | {measured} | {versus} | {machine} | "
                     f"{'—' if paper is None else paper} | {source} |")
        if s and paper is not None:
            ours.append(s.mean)
            theirs.append(paper)
    return "\n".join(lines), kendall(ours, theirs) if len(ours) >= 2 else float("nan")


def main() -> int:
    try:
        text, tau = table(ROOT / "results")
    except ResultError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(text)
    print(f"\nKendall's tau-b between the two rankings (variants with both): {tau:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
