"""Recorded results as data: a row is one JSON file under ``results/`` written from finished runs (``uda
report DIRS --record NAME``), re-run and compared by ``uda repro NAME``, and the tables of
docs/results.md's recorded section are generated from these files (``scripts/results_table.py``).

A row holds the exact ``uda train`` command (the overrides its runs share; the seed is added per run) and,
per seed, the metrics, the commit, the machine (CPU kind or GPU, precision and layout as resolved, torch),
wall time and speed, whether the machine was contended, and a digest of the final weights. Two runs are
bit-identical when their digests match: possible only on the same machine kind, precision, layout,
torch version and thread count. Otherwise a run reproduces a row when its target metric lies inside the
row's 95% interval (Student's t over the recorded seeds).

Importing this module imports no torch (``uda repro --list`` is instant); the digest imports it.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from uda.errors import UserError

if TYPE_CHECKING:
    from uda.report.runs import Run

FORMAT = 1  # the row files' format version
NAME = re.compile(r"^[a-z0-9][a-z0-9_]*$")  # <method>_<pair>[_<setting>]
DROPPED = ("seed=", "hydra.", "resume=")  # per-run overrides: not part of a row's command
SAME_MACHINE = ("kind", "precision", "channels_last", "torch", "threads")  # what bit-identical runs share


class ResultError(UserError):
    """A row that cannot be read or written: one line naming the file or the run."""


@dataclass(frozen=True)
class Row:
    name: str
    overrides: tuple[str, ...]  # the command's overrides, without seed and hydra.*
    metric: str  # target_acc | target_miou
    seeds: dict[int, dict[str, Any]]  # seed -> what the run recorded (see ``seed_record``)
    note: str = ""

    @property
    def command(self) -> str:
        return " ".join(("uda train", *self.overrides))

    def values(self) -> list[float]:
        return [self.seeds[s][self.metric] for s in sorted(self.seeds)]

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "name": self.name, "command": self.command, "overrides": list(self.overrides),
                "metric": self.metric, "note": self.note,
                "seeds": {str(s): self.seeds[s] for s in sorted(self.seeds)}}


def weights_digest(run_dir: Path) -> str:
    """sha256 over the final checkpoint's networks, tensor by tensor in key order (bit identity)."""
    import hashlib

    import torch

    from uda.io import load_failure, tensor_bytes

    path = run_dir / "checkpoints" / "last.pt"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)["method"]
    except Exception as e:  # a missing, damaged or refused file: one line naming it
        raise ResultError(f"{path}: {load_failure(e)}") from None
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode() + tensor_bytes(state[key]))
    return h.hexdigest()


def seed_record(run_dir: Path, summary: dict[str, Any], metric: str) -> dict[str, Any]:
    """What a row keeps of one finished run."""
    if "machine" not in summary:
        raise ResultError(f"{run_dir}/summary.json has no machine record (a run from before uda repro); "
                          f"re-run it to record it")
    source = metric.replace("target_", "source_")
    return {
        metric: summary[metric], source: summary[source], "steps": summary["steps"],
        "commit": summary.get("git_commit"), "date": summary.get("date"),
        "machine": {**summary["machine"], "precision": summary["precision"],
                    "channels_last": summary["channels_last"], "torch": summary["versions"].get("torch"),
                    "threads": summary.get("threads")},
        "contended": summary.get("contended"), "wall_s": summary["wall_s"],
        "images_per_s": summary["images_per_s"], "weights_sha256": weights_digest(run_dir),
    }


def command_of(run: Run) -> tuple[str, ...]:
    """A run's overrides less those that differ per run (seed, hydra.*, resume): the row's command."""
    return tuple(o for o in run.overrides if not o.lstrip("+~").startswith(DROPPED))


def record(dirs: list[Path], name: str, results: Path, note: str = "") -> Path:
    """Write ``results/<name>.json`` from the finished runs under ``dirs``: one command, one run per seed."""
    from uda.report.runs import find_runs

    if not NAME.match(name):
        raise ResultError(f"--record {name!r}: a name is lower-case letters, digits and _, e.g. dann_mnist_mnistm")
    runs = [r for r in find_runs(dirs) if r.summary is not None]
    if not runs:
        raise ResultError(f"no finished run (summary.json) under {', '.join(map(str, dirs))}")
    commands = {r.path: command_of(r) for r in runs}
    first = runs[0]
    for r in runs[1:]:
        if commands[r.path] != commands[first.path]:
            raise ResultError(f"the runs differ by more than their seed: {first.path} ran "
                              f"{list(commands[first.path])}, {r.path} ran {list(commands[r.path])}; record each "
                              f"command as its own row")
    seeds: dict[int, dict[str, Any]] = {}
    metric = "target_miou" if "target_miou" in first.summary else "target_acc"
    for r in sorted(runs, key=lambda r: str(r.path)):
        if r.seed in seeds:
            raise ResultError(f"seed {r.seed} twice: {r.path} and another run; pass one run per seed")
        seeds[r.seed] = seed_record(r.path, r.summary, metric)
    row = Row(name, commands[first.path], metric, seeds, note)
    return write_row(row, results)


def write_row(row: Row, results: Path) -> Path:
    from uda.io import write_text_atomic

    results.mkdir(parents=True, exist_ok=True)
    path = results / f"{row.name}.json"
    write_text_atomic(json.dumps(row.to_json(), indent=1) + "\n", path)
    return path


def read_row(path: Path) -> Row:
    """A row file; ResultError naming it when it is not one."""
    try:
        d = json.loads(path.read_text())
        if d.get("format") != FORMAT:
            raise ValueError(f"format {d.get('format')!r}, expected {FORMAT}")
        seeds = {int(s): v for s, v in d["seeds"].items()}
        for v in seeds.values():  # what compare and render read: present, and the metric a number
            _check_seed(v, d["metric"])
        row = Row(d["name"], tuple(d["overrides"]), d["metric"], seeds, d.get("note", ""))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ResultError(f"{path}: not a readable result row ({e.__class__.__name__}: {e})") from None
    if row.name != path.stem:
        raise ResultError(f"{path}: names the row {row.name!r}; a row's file is <name>.json")
    return row


def _check_seed(run: dict[str, Any], metric: str) -> None:
    float(run[metric])
    for key in ("weights_sha256", "wall_s", "images_per_s"):
        run[key]  # noqa: B018  (KeyError names the missing key)
    if not run["machine"]["kind"]:
        raise ValueError("a seed without its machine kind")


def rows(results: Path) -> dict[str, Row]:
    return {p.stem: read_row(p) for p in sorted(results.glob("*.json"))}


def find_row(name: str, results: Path) -> Row:
    """The row ``name`` (or a path to a row file); ResultError listing the valid names otherwise."""
    if name.endswith(".json"):
        return read_row(Path(name))
    path = results / f"{name}.json"
    if not path.is_file():
        known = sorted(p.stem for p in results.glob("*.json")) if results.is_dir() else []
        from difflib import get_close_matches

        close = get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ResultError(f"no recorded row {name!r} in {results}{hint}; valid: {', '.join(known) or 'none'}")
    return read_row(path)


# ---------- comparing a re-run with a row
@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str  # one line
    seeds: dict[int, str]  # seed -> "bit-identical" | "inside" | "outside" | "no interval"


def machine_difference(recorded: dict[str, Any], new: dict[str, Any]) -> str:
    """"" when bit-identical runs are possible, else what differs, e.g. "kind avx2 here, amx recorded"."""
    return ", ".join(f"{k} {new.get(k)} here, {recorded.get(k)} recorded" for k in SAME_MACHINE
                     if recorded.get(k) != new.get(k))


def compare(row: Row, new: dict[int, dict[str, Any]]) -> Verdict:
    """Each new seed against the row: bit-identical to the recorded seed (same digest), else inside the
    recorded 95% interval of the mean. Reproduced when every new seed is one or the other."""
    from uda.report.stats import summarize

    rec = summarize(row.values())
    ci = rec.ci if rec else None
    seeds, outside = {}, []
    for s, run in sorted(new.items()):
        v = run[row.metric]
        if s in row.seeds and row.seeds[s]["weights_sha256"] == run["weights_sha256"]:
            seeds[s] = "bit-identical"
        elif ci is not None and ci[0] <= v <= ci[1]:
            seeds[s] = "inside"
        else:
            seeds[s] = "outside" if ci else "no interval"
            where = f"outside [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "not bit-identical"
            outside.append(f"seed {s}: {v:.2f} {where}")
    first = row.seeds[min(row.seeds)]["machine"]
    differ = {machine_difference(row.seeds[s]["machine"] if s in row.seeds else first, run["machine"])
              for s, run in new.items()} - {""}
    why = (f"different machine ({'; '.join(sorted(differ))}): bit identity is not expected" if differ
           else "same machine kind, precision, layout, torch and threads")
    if all(v == "bit-identical" for v in seeds.values()):
        return Verdict(True, "reproduced: bit-identical on every seed", seeds)
    if not outside:
        return Verdict(True, f"reproduced: every new seed inside the recorded 95% interval; {why}", seeds)
    if ci is None:
        return Verdict(False, f"not reproduced: the row has one seed, so no interval, and {outside[0]}; {why}", seeds)
    return Verdict(False, f"not reproduced: {'; '.join(outside)}; {why}", seeds)


def render(row: Row, new: dict[int, dict[str, Any]], verdict: Verdict) -> str:
    """The side-by-side table ``uda repro`` prints: per seed, the recorded and the new value; the means."""
    from uda.report.stats import summarize

    m = row.metric
    lines = [f"{row.name}: {row.command}", f"{'seed':>6} {'recorded':>10} {'new':>10}  "]
    for s in sorted(set(row.seeds) | set(new)):
        r = f"{row.seeds[s][m]:.2f}" if s in row.seeds else "-"
        n = f"{new[s][m]:.2f}" if s in new else "-"
        lines.append(f"{s:>6} {r:>10} {n:>10}  {verdict.seeds.get(s, '')}")
    rec, got = summarize(row.values()), summarize([new[s][m] for s in sorted(new)])
    lines.append(f"{'mean':>6} {rec.text(ci=True)} ({rec.n} seeds) | new {got.text(ci=True)} ({got.n})")
    first, here = row.seeds[min(row.seeds)], next(iter(new.values()))
    lines.append(f"recorded on: {describe(first)}")
    lines.append(f"re-run on:   {describe(here)}")
    lines.append(verdict.reason)
    return "\n".join(lines)


def describe(run: dict[str, Any]) -> str:
    """A run's machine in a line: CPU (kind), precision, layout, torch, commit, contention."""
    mc = run["machine"]
    where = mc.get("gpu") or mc.get("cpu") or "?"
    cl = ", channels_last" if mc.get("channels_last") else ""
    busy = ", contended (timings not the machine's)" if run.get("contended") else ""
    return (f"{where} ({mc.get('kind')}), {mc.get('precision')}{cl}, torch {mc.get('torch')}, "
            f"{mc.get('threads')} threads, commit {str(run.get('commit'))[:10]}, {run.get('date')}{busy}")


# ---------- uda repro
def listing(results: Path) -> str:
    """``uda repro --list``: every row, its seeds, mean and interval, and what it cost where recorded."""
    from uda.report.stats import summarize

    found = rows(results) if results.is_dir() else {}
    if not found:
        return f"no recorded rows in {results}"
    lines = [f"{len(found)} recorded rows in {results} (uda repro NAME [--seeds 0,1,2]):"]
    for name, row in found.items():
        s = summarize(row.values())
        first = row.seeds[min(row.seeds)]
        wall = sum(r["wall_s"] for r in row.seeds.values()) / len(row.seeds)
        lines.append(f"  {name}: {row.command}")
        lines.append(f"      {row.metric} {s.text(ci=True)}, seeds {','.join(map(str, sorted(row.seeds)))}; "
                     f"{wall / 60:.1f} min a seed on {describe(first)}")
    return "\n".join(lines)


def finished_record(run_dir: Path, row: Row) -> dict[str, Any] | None:
    path = run_dir / "summary.json"
    if not path.is_file():
        return None
    summary = json.loads(path.read_text())
    steps = {r["steps"] for r in row.seeds.values()}
    return seed_record(run_dir, summary, row.metric) if summary.get("steps") in steps else None


def pinned(row: Row, seed: int) -> list[str]:
    """The overrides that keep a re-run in the numerics the row recorded where its command leaves them to
    ``auto``: an fp32 row runs in fp32 with its memory layout (``auto`` would take bf16 on a CPU with AMX or
    AVX-512 BF16). Other precisions are left to the command: bf16 on a CPU without it runs ~7x slower, fp16
    needs CUDA; the verdict says when the machine differs."""
    given = {o.lstrip("+").split("=", 1)[0] for o in row.overrides}
    rec = (row.seeds.get(seed) or row.seeds[min(row.seeds)])["machine"]
    if rec.get("precision") != "fp32":
        return []
    layout = f"trainer.channels_last={'true' if rec.get('channels_last') else 'false'}"
    return [o for key, o in (("trainer.precision", "trainer.precision=fp32"), ("trainer.channels_last", layout))
            if key not in given]


def repro(name: str, seeds: list[int] | None, results: Path, out: Path) -> int:
    """Run the row's command for each seed (a finished seed is not run again; a partial one resumes),
    print the comparison, and return 0 when it reproduced, 1 when not."""
    import subprocess
    import sys

    row = find_row(name, results)
    seeds = seeds if seeds else sorted(row.seeds)
    new = {}
    for s in seeds:
        run_dir = out / row.name / f"seed_{s}"
        done = finished_record(run_dir, row)
        if done is None:
            argv = [*row.overrides, *pinned(row, s), f"seed={s}", f"hydra.run.dir={run_dir}", "resume=auto"]
            print(f"uda repro: seed {s}: uda train {' '.join(argv)}", flush=True)
            rc = subprocess.call([sys.executable, "-m", "uda.cli", "train", *argv])
            if rc != 0:
                raise ResultError(f"seed {s}: uda train exited with status {rc} (its log: {run_dir}/train.log)")
            done = finished_record(run_dir, row)
            if done is None:
                raise ResultError(f"seed {s}: {run_dir} holds no finished run after uda train")
        else:
            print(f"uda repro: seed {s}: finished earlier in {run_dir}", flush=True)
        new[s] = done
    verdict = compare(row, new)
    print(render(row, new, verdict), flush=True)
    return 0 if verdict.ok else 1


# ---------- docs/results.md
BEGIN, END = "<!-- recorded rows: begin (generated from results/ by scripts/results_table.py) -->", \
    "<!-- recorded rows: end -->"


def markdown(found: dict[str, Row]) -> str:
    """The generated block of docs/results.md: one line per row, the commands below."""
    from uda.report.stats import summarize

    out = [BEGIN, "", "| row | target (seeds) | mean ± std [95% CI] | source | machine | commit | wall / seed, img/s |",
           "|---|---|---|---|---|---|---|"]
    for name, row in found.items():
        s = summarize(row.values())
        src = summarize([r[row.metric.replace("target_", "source_")] for r in row.seeds.values()])
        first = row.seeds[min(row.seeds)]
        mc = first["machine"]
        vals = ", ".join(f"{row.seeds[k][row.metric]:.2f}" for k in sorted(row.seeds))
        walls = [r["wall_s"] for r in row.seeds.values()]
        speeds = [r["images_per_s"] for r in row.seeds.values()]
        busy = " (contended)" if any(r.get("contended") for r in row.seeds.values()) else ""
        out.append(f"| `{name}` | {vals} | {s.text(ci=True)} | {src.mean:.2f} | {mc.get('gpu') or mc.get('cpu')} "
                   f"({mc['kind']}), {mc['precision']}{' + cl' if mc['channels_last'] else ''}, torch {mc['torch']} | "
                   f"{str(first['commit'])[:7]} | {min(walls):.0f}-{max(walls):.0f} s, "
                   f"{min(speeds):.0f}-{max(speeds):.0f}{busy} |")
    out += ["", "```bash"] + [f"uda repro {name}   # {row.command} seed=..." for name, row in found.items()]
    out += ["```", "", END]
    return "\n".join(out)


def update_docs(text: str, found: dict[str, Row]) -> str:
    """``text`` (docs/results.md) with its generated block replaced by ``markdown(found)``."""
    if BEGIN not in text or END not in text:
        raise ResultError("docs/results.md has no generated block (its begin and end markers)")
    head, rest = text.split(BEGIN, 1)
    return head + markdown(found) + rest.split(END, 1)[1]
