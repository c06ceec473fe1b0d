"""Provenance (versions, the git commit) and ``summary.json``, the record of a finished run: final
metrics, the evaluation each selection criterion picks, throughput, device and versions. It is written
last and atomically: its presence marks the run as finished (a sweep re-run skips it)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

import uda
from uda.io import write_text_atomic
from uda.selection import LABEL_FREE, select


def versions() -> dict[str, str]:
    import torchvision

    return {"uda": uda.__version__, "torch": str(torch.__version__), "torchvision": str(torchvision.__version__),
            "python": sys.version.split()[0]}


def git_commit() -> str | None:
    """HEAD of the checkout ``uda`` runs from, with ``+dirty`` when tracked files differ from it."""
    here = Path(__file__).parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--verify", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
        if out.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The rows of ``metrics.jsonl`` (one per evaluation), [] when there is none."""
    if not path.is_file():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def selected(rows: list[dict[str, Any]], metric: str) -> dict[str, dict[str, Any]]:
    """criterion -> the evaluation it picks (step and both test metrics); only "oracle" reads target labels."""
    s_key, t_key = f"source_{metric}", f"target_{metric}"
    out = {}
    for crit in (*LABEL_FREE, "oracle"):
        row = select(rows, crit)
        if row is not None:
            out[crit] = {"step": row["step"], t_key: row[t_key], s_key: row[s_key]}
    return out


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    write_text_atomic(json.dumps(summary, indent=2) + "\n", run_dir / "summary.json")
