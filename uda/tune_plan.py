"""The plan of a ``uda tune`` study (the command: ``uda.tune``; the study that runs it: ``uda.tune_study``):
its arguments, the composed command checked before anything is written, the search space with each key's
value in the command (the first trial), the label-free criterion the method does not optimise, and
source-only's command on the same pair and budget.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any

from uda.errors import ConfigError
from uda.schema.search import Dist, parse

STUDY = "uda_tune"
SPEC = "tune.json"  # the study's command, criterion and space, checked when it resumes
BASELINE = "source_only"
# the fallback order when the method optimises the recommended criterion: the candidates of
# docs/notes/selection.md by their measured checkpoint regret (entropy 1.25, IM 1.43, MaNo 1.89,
# source_val 5.73), each kept only where the task has it
FALLBACK = ("entropy", "im", "mano", "source_val")


@dataclass
class TuneArgs:
    train: list[str]  # every trial's uda train overrides (the space's values are added)
    directory: Path
    trials: int = 10
    criterion: str | None = None
    storage: str | None = None
    seed: int = 0
    seeds: int = 1  # runs per candidate (seeds seed, seed + 1, ...): its score and target metric are their means
    space: dict[str, str] = field(default_factory=dict)  # tune.space.KEY=TEXT as given ("none" drops KEY)
    show_space: bool = False
    workers: int = 1
    launcher: list[str] = field(default_factory=list)  # hydra/launcher=... and hydra.launcher.* (the workers')


@dataclass
class Plan:
    args: TuneArgs
    method: str
    data: str
    task: str
    metric: str  # "acc" or "miou"
    criterion: str
    key: str  # the criterion's metrics.jsonl column
    higher: bool
    space: dict[str, Dist]
    defaults: dict[str, Any]  # each space key's value in the composed command: the first trial
    baseline: list[str] = field(default_factory=list)  # source-only's overrides (baseline_command)
    recipe: tuple[str, str] | None = None  # (name, YAML) of the recipe copy source-only needs, if any
    seed: int = 0  # the command's seed: a candidate's first run

    @property
    def seeds(self) -> list[int]:
        """The seeds of each candidate's runs (``tune.seeds=N``: the command's seed and the N - 1 after it)."""
        return list(range(self.seed, self.seed + self.args.seeds))

    @property
    def storage(self) -> str:
        return self.args.storage or f"sqlite:///{(self.args.directory / 'study.db').resolve()}"

    def spec(self) -> dict[str, Any]:
        return {"train": self.args.train, "method": self.method, "data": self.data, "criterion": self.criterion,
                "key": self.key, "higher": self.higher, "metric": self.metric,
                "space": {k: str(d) for k, d in self.space.items()},
                **({"seeds": self.seeds} if self.args.seeds > 1 else {})}  # absent for one: older studies resume


def candidate_runs(directory: Path, name: str, seeds: list[int]) -> list[tuple[Path, list[str]]]:
    """A candidate's runs, each (run directory, the overrides it adds): ``<dir>/<name>`` itself for one seed;
    ``<dir>/<name>/seed_<s>`` with ``seed=<s>`` for several."""
    if len(seeds) == 1:
        return [(directory / name, [])]
    return [(directory / name / f"seed_{s}", [f"seed={s}"]) for s in seeds]


def without_seed(overrides: list[str]) -> list[str]:
    """The command's overrides less its ``seed=``: each run of a several-seed candidate gives its own."""
    return [o for o in overrides if o.partition("=")[0].lstrip("+~") != "seed"]


def parse_args(argv: list[str]) -> TuneArgs:
    """Split ``uda tune``'s own keys from the overrides every trial gets; ConfigError for a malformed one."""
    train, opts, space, show, launcher = [], {}, {}, False, []
    for a in argv:
        if a == "--space":
            show = True
            continue
        if a.startswith("-"):
            raise ConfigError(f"uda tune: unknown flag {a} (a study is one command; trials run in their own "
                              f"directories); see uda tune --help")
        key, eq, value = a.partition("=")
        if key.startswith("tune.space."):
            space[key[len("tune.space."):]] = value
        elif key.lstrip("+") == "hydra/launcher" or key.startswith("hydra.launcher."):
            launcher.append(a)
        elif key in ("trials", "tune.trials", "tune.criterion", "tune.storage", "tune.seed", "tune.seeds",
                     "tune.workers", "hydra.sweep.dir"):
            if not eq or not value:
                raise ConfigError(f"{a}: give a value ({key}=...)")
            opts[key.removeprefix("tune.")] = value
        elif key.startswith("tune."):
            raise ConfigError(f"unknown key {key}; valid: trials, tune.criterion, tune.space.<key>, tune.storage, "
                              f"tune.seed, tune.seeds, tune.workers")
        elif key.lstrip("+~") in ("hydra.run.dir", "resume") or key.startswith("hydra.sweep"):
            raise ConfigError(f"{a}: uda tune sets each trial's directory and resumes it itself; give the study's "
                              f"directory as hydra.sweep.dir=DIR")
        else:
            train.append(a)
    directory = Path(opts.pop("hydra.sweep.dir", None) or
                     Path("outputs/tune") / datetime.now().strftime("%Y-%m-%d/%H-%M-%S"))
    args = TuneArgs(train=train, directory=directory, space=space, show_space=show, launcher=launcher)
    for name, cast in (("trials", int), ("seed", int), ("seeds", int), ("workers", int)):
        if name in opts:
            try:
                setattr(args, name, cast(opts[name]))
            except ValueError:
                raise ConfigError(f"{'trials' if name == 'trials' else 'tune.' + name}={opts[name]}: not an "
                                  f"integer") from None
    if args.trials < 1:
        raise ConfigError(f"trials={args.trials}: a study needs at least 1 trial")
    if args.workers < 1:
        raise ConfigError(f"tune.workers={args.workers}: give at least 1")
    if args.seeds < 1:
        raise ConfigError(f"tune.seeds={args.seeds}: each candidate needs at least 1 seed")
    if launcher and args.workers == 1:
        raise ConfigError(f"{launcher[0]}: a launcher places the study's workers; give tune.workers=N (N > 1)")
    args.criterion, args.storage = opts.get("criterion"), opts.get("storage")
    return args


def _setting(cfg: Any, key: str) -> Any:
    """The composed config's value at ``key`` ("method.adv_weight"); ConfigError where it has no such setting."""
    import dataclasses

    node = cfg
    for i, part in enumerate(key.split(".")):
        names = [f.name for f in dataclasses.fields(node)] if dataclasses.is_dataclass(node) else (
            list(node) if isinstance(node, dict) else [])
        if part not in names:
            where = ".".join(key.split(".")[:i]) or "the config"
            raise ConfigError(f"tune.space.{key}: {where} has no setting {part!r}; valid: {', '.join(names)}")
        node = node[part] if isinstance(node, dict) else getattr(node, part)
    return node.value if isinstance(node, Enum) else node


def baseline_command(train: list[str]) -> tuple[list[str], tuple[str, str] | None]:
    """Source-only's overrides on the study's pair and budget: the study's, less the method's; and where a
    recipe (``+experiment=X``) sets the method's settings, which source-only lacks, a copy of it without them
    ((name, YAML), written into the study directory and searched by the baseline's run)."""
    from uda.compose import recipe_without_method

    base, recipe = [], None
    for o in train:
        key, _, value = o.partition("=")
        if key.lstrip("+~").startswith("method"):
            continue
        if key.lstrip("+") == "experiment" and (text := recipe_without_method(value)) is not None:
            recipe = (f"uda_tune_baseline_{value}", text)
            o = f"{key}={recipe[0]}"
        base.append(o)
    return [*base, "method=source_only"], recipe


def write_recipe(root: Path, recipe: tuple[str, str] | None) -> str | None:
    """``recipe`` as ``root/experiment/<name>.yaml``; the config directory to search, or None."""
    if recipe is None:
        return None
    (root / "experiment").mkdir(parents=True, exist_ok=True)
    (root / "experiment" / f"{recipe[0]}.yaml").write_text(recipe[1])
    return str(root.resolve())


def choose_criterion(asked: str | None, task: str, method_cls: Any) -> str:
    """The objective: ``asked`` if the task has it and the method does not optimise it, else ConfigError; by
    default the recommended criterion or the first of FALLBACK that qualifies."""
    from uda.schema.trainer import TrainerConfig
    from uda.selection import LABEL_FREE, for_task

    valid = [c.name for c in for_task(task)]
    optimised = tuple(method_cls.OPTIMISES)
    if asked is not None:
        if asked not in LABEL_FREE:
            raise ConfigError(f"tune.criterion={asked}: not a label-free criterion; valid for {task}: "
                              f"{', '.join(valid)}")
        if asked not in valid:
            raise ConfigError(f"tune.criterion={asked}: {task} runs do not record it; valid: {', '.join(valid)}")
        if asked in optimised:
            raise ConfigError(f"tune.criterion={asked}: method={method_cls.name} optimises it itself, so every "
                              f"trial would look good by it; valid: "
                              f"{', '.join(c for c in valid if c not in optimised)}")
        return asked
    for name in (TrainerConfig().select.value, *FALLBACK):  # the recommendation: trainer.select's default
        if name in valid and name not in optimised:
            return name
    raise ConfigError(f"method={method_cls.name}: no label-free criterion left for {task} runs; give tune.criterion")


def plan(args: TuneArgs) -> Plan:
    """Compose and validate the command (the method's default is the first trial), its space and its criterion;
    ConfigError (one line) for any problem, before anything is written."""
    from uda.compose import compose
    from uda.data.catalog import DOMAINS
    from uda.data.files import checked_root
    from uda.preflight import check_writable
    from uda.schema import validate
    from uda.selection import criterion_key

    cfg = compose(args.train)
    validate(cfg)
    method_cls = type(cfg.method)
    space = cfg.method.search_space()
    for key, text in args.space.items():
        if text.strip().lower() in ("none", "null", ""):
            if key not in space:
                raise ConfigError(f"tune.space.{key}={text}: {key} is not in the space; the space: "
                                  f"{', '.join(space) or '(empty)'}")
            del space[key]
        else:
            space[key] = parse(text, f"tune.space.{key}")
    if not space:
        raise ConfigError(f"method={cfg.method.name} declares no search space; give one, e.g. "
                          f"tune.space.optimizer.lr=log[0.001,0.1]")
    defaults = {}
    for key in space:
        space[key].check(f"tune.space.{key}")  # a declared range as a given one: one line, not Optuna's traceback
        if key.split(".")[0] in ("seed", "resume", "hydra", "data"):
            raise ConfigError(f"tune.space.{key}: not a hyperparameter to tune; search method.*, optimizer.*, "
                              f"backbone.* or trainer.* settings")
        defaults[key] = _setting(cfg, key)
        if not space[key].contains(defaults[key]):  # the first trial is the command's own setting
            raise ConfigError(f"the command's {key}={defaults[key]} lies outside the space {space[key]}; widen it "
                              f"(tune.space.{key}=...) or set {key} inside it")
    for role in (cfg.data.source, cfg.data.target):  # what uda train's preflight checks of every trial
        if role.name in DOMAINS and DOMAINS[role.name].needs_root:
            checked_root(cfg.data.root, role.name)
    check_writable(args.directory, [])
    baseline, recipe = baseline_command(args.train)
    with tempfile.TemporaryDirectory() as tmp:  # source-only is always a candidate: it must compose here too
        try:
            validate(compose(baseline, config_dir=write_recipe(Path(tmp), recipe)))
        except ConfigError as e:
            raise ConfigError(f"source-only, the study's candidate that does not adapt, cannot run on this "
                              f"command: {e}") from None
    criterion = choose_criterion(args.criterion, cfg.data.task, method_cls)
    metric = "miou" if cfg.data.task == "segmentation" else "acc"
    key, higher = criterion_key(criterion, metric)
    return Plan(args, cfg.method.name, cfg.data.name, cfg.data.task, metric, criterion, key, higher, space, defaults,
                baseline, recipe, cfg.seed)


def show_space(p: Plan) -> str:
    lines = [f"method={p.method}: the search space of uda tune (uda/schema/search.py)"]
    for key, dist in p.space.items():
        lines.append(f"  {key}={dist}  default {p.defaults[key]}  ({dist.source})")
    lines.append(f"objective: {p.criterion} ({'higher' if p.higher else 'lower'} is better)"
                 + (f", the mean over seeds {', '.join(map(str, p.seeds))}" if len(p.seeds) > 1 else ""))
    return "\n".join(lines)
