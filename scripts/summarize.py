"""Mean +- std of finished runs' summary.json files, grouped by method and pair.

    python scripts/summarize.py outputs/multirun/2026-11-23/15-00-00 [more dirs...]

(The full `uda report` with label-free model selection is a later issue; this is the plain table.)
"""
from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path


def main(dirs: list[str]) -> None:
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for d in dirs:
        for path in sorted(Path(d).rglob("summary.json")):
            s = json.loads(path.read_text())
            groups[(s["method"], s["data"])].append(s)
    if not groups:
        sys.exit(f"no summary.json under {dirs}")
    fmt = "{:<12} {:<14} {:>5} {:>16} {:>16} {:>9} {:>9}"
    print(fmt.format("method", "data", "seeds", "target_acc", "source_acc", "wall_s", "img/s"))
    for (method, data), runs in sorted(groups.items()):
        def ms(key):
            xs = [r[key] for r in runs]
            sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
            return f"{statistics.mean(xs):6.2f} +- {sd:5.2f}"
        print(fmt.format(method, data, len(runs), ms("target_acc"), ms("source_acc"),
                         f"{statistics.mean(r['wall_s'] for r in runs):.0f}",
                         f"{statistics.mean(r['images_per_s'] for r in runs):.0f}"))
        print("    seeds:", ", ".join(f"{r['seed']}: {r['target_acc']:.2f}" for r in sorted(runs, key=lambda r: r["seed"])))


if __name__ == "__main__":
    main(sys.argv[1:])
