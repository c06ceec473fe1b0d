"""docs/results.md's recorded rows, generated from the files under results/ (one per row).

    python scripts/results_table.py            # rewrite the generated block of docs/results.md
    python scripts/results_table.py --check    # exit 1 when the block is out of date (tests/test_results.py)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from uda.results import ResultError, rows, update_docs

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only say whether docs/results.md is up to date")
    ns = parser.parse_args()
    docs = ROOT / "docs" / "results.md"
    try:
        text = docs.read_text()
        new = update_docs(text, rows(ROOT / "results"))
    except ResultError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if ns.check:
        if new != text:
            print("docs/results.md is out of date: run python scripts/results_table.py", file=sys.stderr)
            return 1
        print("docs/results.md is up to date")
        return 0
    docs.write_text(new)
    print(f"wrote {docs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
