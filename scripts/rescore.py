"""Recompute label-free scores of a finished run from the step checkpoints it kept (``trainer.keep_every``).

    python scripts/rescore.py RUN_DIR [RUN_DIR...] --keys mixval            # recompute one score, check the rest
    python scripts/rescore.py RUN_DIR --keys mixval,target_mano --dry-run   # print, write nothing

For every row of ``metrics.jsonl`` the checkpoint ``checkpoints/step_XXXXXXX.pt`` of that step is evaluated
again (``uda.eval_run.evaluate_checkpoint``, the same ``evaluate_pair`` the loop calls). The scores named
in ``--keys`` replace the recorded ones; every other key present in both is compared and the largest
difference printed, so a rescored run says whether the evaluation reproduced what the loop recorded. The
recorded file is kept as ``metrics.recorded.jsonl``. Used when a criterion is added or corrected after a
run finished (docs/notes/selection.md). Exit status 1 if a checkpoint is missing.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from uda.eval_run import evaluate_checkpoint, prepare_eval


def rescore(run_dir: Path, keys: list[str], dry_run: bool = False) -> dict[str, float]:
    """Rescore one run; returns the largest |recorded - recomputed| of each compared key."""
    recorded_file = run_dir / "metrics.recorded.jsonl"
    source = recorded_file if recorded_file.is_file() else run_dir / "metrics.jsonl"
    rows = [json.loads(ln) for ln in source.read_text().splitlines() if ln.strip()]
    ev = prepare_eval(run_dir)
    diffs: dict[str, float] = {}
    new_rows = []
    for row in rows:
        ckpt = run_dir / "checkpoints" / f"step_{row['step']:07d}.pt"
        if not ckpt.is_file():
            raise FileNotFoundError(f"{ckpt}: missing (the run kept no step checkpoint there; trainer.keep_every)")
        scores = evaluate_checkpoint(ev, ckpt)
        for k, v in scores.items():
            if k in row and k not in keys and isinstance(v, float) and isinstance(row[k], (int, float)):
                d = (
                    abs(v - row[k])
                    if math.isfinite(v) and math.isfinite(row[k])
                    else (0.0 if v == row[k] else math.inf)
                )
                diffs[k] = max(diffs.get(k, 0.0), d)
        new_rows.append(row | {k: scores[k] for k in keys if k in scores})
    if not dry_run:
        if not recorded_file.is_file():
            (run_dir / "metrics.jsonl").rename(recorded_file)
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in new_rows))
    return diffs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--keys", required=True, help="comma-separated metrics.jsonl keys to replace, e.g. mixval")
    ap.add_argument("--dry-run", action="store_true")
    ns = ap.parse_args()
    keys = [k for k in ns.keys.split(",") if k]
    for run in ns.runs:
        try:
            diffs = rescore(run, keys, ns.dry_run)
        except FileNotFoundError as e:
            print(f"rescore: {e}", file=sys.stderr)
            return 1
        worst = max(diffs.values(), default=0.0)
        print(f"{run}: replaced {', '.join(keys)}; the other {len(diffs)} scores reproduced to within {worst:.3g} "
              f"(largest: {max(diffs, key=diffs.get) if diffs else '-'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
