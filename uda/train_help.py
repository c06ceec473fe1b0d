"""``uda train --help``: the config groups a user chooses, with their options, and the settings people change
most, each with the one-line meaning written beside its field in the dataclass (no torch is imported)."""
from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
from pathlib import Path

GROUPS = ("method", "data", "backbone", "optimizer", "trainer", "experiment", "debug")
# the settings shown, by schema: (prefix, dataclass, fields; None = all)
SETTINGS = (
    ("", "uda.schema.train:TrainConfig", ("seed", "resume", "device", "deterministic")),
    ("trainer.", "uda.schema.trainer:TrainerConfig", None),
    ("data.", "uda.schema.data:DataConfig", ("root", "val_size", "train_subset", "test_subset", "workers")),
    ("optimizer.", "uda.schema.optimizer:OptimizerConfig", ("name", "lr", "momentum", "weight_decay", "schedule")),
)
WIDTH = 110


def field_help(cls: type) -> dict[str, str]:
    """Each field's comment: the comment lines just above it, else the one on its line."""
    lines, _ = inspect.getsourcelines(cls)
    tree = ast.parse(textwrap.dedent("".join(lines)))
    out = {}
    for node in tree.body[0].body:
        if not isinstance(node, ast.AnnAssign) or not isinstance(node.target, ast.Name):
            continue
        row, above = node.lineno - 1, []
        for prev in reversed(lines[:row]):
            if not prev.strip().startswith("#"):
                break
            above.insert(0, prev.strip().lstrip("#").strip())
        trailing = lines[row].split("#", 1)[1].strip() if "#" in lines[row] else ""
        out[node.target.id] = " ".join(above) or trailing
    return out


def _load(spec: str) -> type:
    import importlib

    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def _default(f: dataclasses.Field) -> str:
    value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    value = getattr(value, "value", value)
    return "(required)" if str(value) == "???" else repr(value) if isinstance(value, str) else str(value)


def _options(group: str) -> list[str]:
    from uda.schema.data import benchmark_pairs

    names = sorted(p.stem for p in (Path(__file__).parent / "configs" / group).glob("*.yaml"))
    if group == "data":  # the generated pairs, one pattern per benchmark
        for kind in dict.fromkeys(n.split("_")[0] for n in benchmark_pairs()):
            domains = sorted({n.split("_")[1] for n in benchmark_pairs() if n.startswith(kind)})
            n = sum(k.startswith(kind) for k in benchmark_pairs())
            names.append(f"{kind}_<s>_<t> ({n} pairs of {' '.join(domains)})")
    return names


def _items(items: list[str], first: str) -> list[str]:
    """``items`` comma-separated over lines of at most WIDTH characters, never breaking inside an item."""
    lines, line = [], first
    for i, item in enumerate(items):
        piece = item + ("," if i < len(items) - 1 else "")
        if len(line) + len(piece) + 1 > WIDTH and line.strip():
            lines.append(line.rstrip())
            line = " " * len(first)
        line += piece + " "
    return [*lines, line.rstrip()]


def train_help() -> str:
    out = ["usage: uda train [-m] [GROUP=OPTION ...] [KEY=VALUE ...] [+experiment=RECIPE] [--cfg job]",
           "",
           "  -m                 a sweep: one job per combination (uda train -m method=source_only,dann seed=0,1,2)",
           "  --cfg job          print the composed config and exit (add --package method for one group)",
           "  resume=true hydra.run.dir=DIR   continue a stopped run exactly",
           "",
           "groups (GROUP=OPTION; experiment and debug are added: +experiment=RECIPE, +debug=fast):"]
    for group in GROUPS:
        out += _items(_options(group), f"  {group + ':':12s}")
    out += ["", "settings (KEY=VALUE, default in brackets; every key is typed: a typo or a wrong type is refused):"]
    for prefix, spec, names in SETTINGS:
        cls = _load(spec)
        helps, fields = field_help(cls), {f.name: f for f in dataclasses.fields(cls)}
        for name in names or fields:
            key = f"  {prefix}{name} [{_default(fields[name])}]"
            text = helps.get(name, "")
            out += textwrap.wrap(text, WIDTH, initial_indent=f"{key:42s} ", subsequent_indent=" " * 43) or [key]
    out += ["", "  method.*: the chosen method's own settings (uda train method=dsn --cfg job --package method);",
            "  backbone.*, data.*: likewise. docs/design.md says how to add a method, a dataset or a criterion."]
    return "\n".join(out)
