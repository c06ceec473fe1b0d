"""``uda tune``: choose a method's hyperparameters on a pair without target labels.

    uda tune method=dann trials=8 hydra.sweep.dir=tunes/dann        [tune.criterion=...] [any train override]

A study (Optuna, TPE) over the method's declared search space (``Config.SEARCH``, or ``tune.space.<key>=
log[a,b]`` from the command line). Every trial is an ordinary run directory ``<dir>/trial_<k>`` trained by
``uda train`` in a child process (resumable, TensorBoard, summary.json); the first trial is the method's
default, and source-only on the same pair (``<dir>/source_only``) is always a candidate, so the study can
choose not to adapt. The objective of a trial is a label-free criterion of its last evaluation
(``tune.criterion``; default: ``trainer.select``'s recommendation, or the next by measured regret where the
method's own loss optimises it) read through ``label_free``: target labels cannot reach it.

The study lives in ``<dir>/study.db`` (or ``tune.storage=<RDB URL>``, which machines running the same
command share): an interrupted study resumes with the same command, continuing a killed trial from its last
checkpoint and never re-running a finished one. ``uda report <dir>`` shows the trials, the pick, the target
metric of each (reported, never used), the oracle and the pick's regret, and writes tune.csv.
"""
from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any

from uda.errors import ConfigError
from uda.schema.search import Dist, override, parse

STUDY = "uda_tune"
SPEC = "tune.json"  # the study's command, criterion and space, checked when it resumes
BASELINE = "source_only"
# the fallback order when the method optimises the recommended criterion: the candidates of
# docs/notes/selection.md by their measured checkpoint regret (entropy 1.25, IM 1.43, MaNo 1.89,
# source_val 5.73), each kept only where the task has it
FALLBACK = ("entropy", "im", "mano", "source_val")
USAGE = """usage: uda tune method=NAME [data=PAIR] [trials=N] [tune.criterion=NAME] [tune.space.KEY=DIST]
                [tune.storage=URL] [tune.seed=N] [tune.workers=N hydra/launcher=...] [hydra.sweep.dir=DIR]
                [any uda train override]

  trials=N                 trials of the method (default 10; the first is the method's default); source-only
                           on the same pair runs once more, as a candidate
  tune.criterion=NAME      the label-free objective (default: trainer.select's recommendation, or the next by
                           measured regret where the method optimises it: entropy, im, mano, source_val)
  tune.space.KEY=DIST      search KEY over DIST (log[a,b], uniform[a,b], int[a,b], choice[x,y,...]); =none drops
                           a declared key; the declared spaces: uda tune method=NAME --space
  tune.storage=URL         an Optuna RDB URL that several machines share (default sqlite in the directory)
  tune.workers=N           N workers of the study as a Hydra multirun: hydra/launcher=slurm places them on a
                           cluster (with a shared tune.storage); the same command on several machines also works
  hydra.sweep.dir=DIR      the study's directory (default outputs/tune/<date>/<time>); the same command with the
                           same DIR resumes it
Then: uda report DIR (trials, the pick, its regret, tune.csv)."""


@dataclass
class TuneArgs:
    train: list[str]  # every trial's uda train overrides (the space's values are added)
    directory: Path
    trials: int = 10
    criterion: str | None = None
    storage: str | None = None
    seed: int = 0
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

    @property
    def storage(self) -> str:
        return self.args.storage or f"sqlite:///{(self.args.directory / 'study.db').resolve()}"

    def spec(self) -> dict[str, Any]:
        return {"train": self.args.train, "method": self.method, "data": self.data, "criterion": self.criterion,
                "key": self.key, "higher": self.higher, "metric": self.metric,
                "space": {k: str(d) for k, d in self.space.items()}}


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
        elif key in ("trials", "tune.trials", "tune.criterion", "tune.storage", "tune.seed", "tune.workers",
                     "hydra.sweep.dir"):
            if not eq or not value:
                raise ConfigError(f"{a}: give a value ({key}=...)")
            opts[key.removeprefix("tune.")] = value
        elif key.startswith("tune."):
            raise ConfigError(f"unknown key {key}; valid: trials, tune.criterion, tune.space.<key>, tune.storage, "
                              f"tune.seed, tune.workers")
        elif key.lstrip("+~") in ("hydra.run.dir", "resume") or key.startswith("hydra.sweep"):
            raise ConfigError(f"{a}: uda tune sets each trial's directory and resumes it itself; give the study's "
                              f"directory as hydra.sweep.dir=DIR")
        else:
            train.append(a)
    directory = Path(opts.pop("hydra.sweep.dir", None) or
                     Path("outputs/tune") / datetime.now().strftime("%Y-%m-%d/%H-%M-%S"))
    args = TuneArgs(train=train, directory=directory, space=space, show_space=show, launcher=launcher)
    for name, cast in (("trials", int), ("seed", int), ("workers", int)):
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
                baseline, recipe)


# ---------- the objective: a label-free reading of a finished trial


def label_free(row: dict[str, Any]) -> dict[str, Any]:
    """An evaluation row of metrics.jsonl with only what no target label produced: the step and the label-free
    criteria's columns. The objective reads nothing else."""
    from uda.selection import TABLE, criterion_key

    keys = {"step"} | {criterion_key(c.name, m)[0] for c in TABLE for m in ("acc", "miou")}
    return {k: row[k] for k in keys if k in row}


def objective(run_dir: Path, key: str) -> float | None:
    """The criterion column ``key`` at the run's last evaluation that has it (the last checkpoint's, as the
    trial's model is its last), or None if no evaluation recorded it."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return None
    rows = [label_free(json.loads(ln)) for ln in path.read_text().splitlines() if ln.strip()]
    rows = [r for r in rows if r.get(key) is not None]
    value = float(rows[-1][key]) if rows else math.nan
    return value if math.isfinite(value) else None


# ---------- the study


def _process(pid: int) -> str:
    """A token of the live process ``pid`` ("" if none): its start time where /proc has it, so that a reused
    pid does not pass for the process that claimed a trial."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return ""
    except PermissionError:
        pass
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "alive"


def owner() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "token": _process(os.getpid())}


def gone(claim: dict[str, Any] | None, age_s: float) -> bool:
    """Whether a RUNNING trial's process is gone: claimed on this host by a process that no longer runs, or
    never claimed and older than a minute (a process claims its trial right after asking for it). Trials
    claimed on another host are that host's to continue."""
    if not claim:
        return age_s > 60
    return claim.get("host") == socket.gethostname() and _process(int(claim.get("pid", -1))) != claim.get("token")


def claim_file(path: Path) -> bool:
    """Whether this process may train what ``path`` claims: created exclusively (atomic, also on a shared file
    system), so that two workers starting together do not both train source-only into one directory; a claim
    whose process is gone (or unreadable and older than a minute) is taken over."""
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                held = json.loads(path.read_text())
            except (OSError, ValueError):  # being written, or left half-written by a crash
                held = None
            age = datetime.now().timestamp() - path.stat().st_mtime if held is None and path.exists() else math.inf
            if not gone(held, age):
                return False
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(owner(), f)
        return True
    return False


def train(run_dir: Path, overrides: list[str], log: Path) -> int:
    """``uda train`` in a child process into ``run_dir``: resumed from its checkpoint where a killed study
    left one, skipped where it already finished. The exit status (0: finished)."""
    if (run_dir / "summary.json").is_file():
        return 0
    ckpts = run_dir / "checkpoints"
    resume = ["resume=true"] if any((ckpts / f).is_file() for f in ("last.pt", "prev.pt")) else []
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "uda.cli", "train", *overrides, f"hydra.run.dir={run_dir}", *resume]
    with open(log, "a") as out:
        out.write("$ " + " ".join(command) + "\n")
        out.flush()
        child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        try:
            return child.wait()
        except KeyboardInterrupt:  # the child got the same SIGINT: it checkpoints and stops; let it
            child.wait()
            raise


def scored(run_dir: Path, key: str) -> float | None:
    """A candidate's score: its objective once it finished (summary.json), else None. The study and
    ``uda report`` both use this rule."""
    return objective(run_dir, key) if (run_dir / "summary.json").is_file() else None


def _refused(code: int, log: Path, name: str) -> None:
    """A trial that ``uda train`` refused (exit 2: its command, its data) stops the study, left to resume."""
    if code == 2:
        lines = [ln for ln in log.read_text().splitlines() if ln.startswith("uda: error:")]
        why = lines[-1].removeprefix("uda: error: ") if lines else f"see {log}"
        raise ConfigError(f"{name}: uda train refused it: {why}")


def _say(text: str) -> None:
    print(f"uda tune: {text}", flush=True)


def open_study(p: Plan):
    """The study (created, or loaded with the same spec), its sampler seeded by the trials it already has so a
    resumed study does not draw its first values again; ConfigError for a storage that cannot be opened or a
    directory that holds a study of another command."""
    import hashlib
    import logging

    import optuna

    d = p.args.directory
    spec = p.spec()
    held = json.loads((d / SPEC).read_text()) if (d / SPEC).is_file() else None
    for name, value in spec.items():
        if held is not None and held.get(name) != value:
            raise ConfigError(f"{d} holds a study of another command ({name}: {held.get(name)}, not {value}); give "
                              f"the same command to resume it, or another hydra.sweep.dir")
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create the study directory {d}: {e.strerror or e}; choose another with "
                          f"hydra.sweep.dir=...") from None
    optuna.logging.set_verbosity(logging.WARNING)
    # the absolute path: a study resumed through another spelling of its directory is the same study
    digest = hashlib.sha1(json.dumps([str(d.resolve()), spec], sort_keys=True).encode()).hexdigest()[:12]
    try:
        study = optuna.create_study(study_name=f"{STUDY}_{digest}", storage=p.storage, load_if_exists=True,
                                    direction="maximize" if p.higher else "minimize")
    except Exception as e:  # noqa: BLE001 -- SQLAlchemy and Optuna raise many types; each is one line here
        raise ConfigError(f"tune.storage={p.storage}: cannot open it ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''})") from None
    startup = min(10, max(1, p.args.trials // 2))  # half the budget explores at random, then TPE's model
    study.sampler = optuna.samplers.TPESampler(seed=p.args.seed + len(study.trials), n_startup_trials=startup)
    if not study.trials:  # the first trial: the command's own setting
        study.enqueue_trial(p.defaults)
    if held is None:
        (d / SPEC).write_text(json.dumps(spec, indent=2))
    return study


def launch_workers(p: Plan) -> None:
    """``tune.workers=N``: N copies of the study's loop as the jobs of a Hydra multirun, placed by the launcher
    given (``hydra/launcher=slurm``, ...), sharing the study's storage (``tune.storage``: an RDB URL where
    they run on several machines). A worker asks for trials until the study has ``trials`` (up to N - 1 more
    where workers ask at once)."""
    import hydra
    from hydra.core.config_store import ConfigStore

    from uda.compose import CONFIG_DIR, register_configs

    open_study(p)  # created, its first trial queued and its spec written once, before any worker
    register_configs()
    ConfigStore.instance().store(name="tune_worker", node={"worker": 0})

    @hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="tune_worker")
    def worker(cfg) -> None:
        run(p)

    sys.argv = ["uda tune", "-m", f"worker=range(0,{p.args.workers})", *p.args.launcher,
                f"hydra.sweep.dir={p.args.directory / 'workers'}", "hydra.sweep.subdir=${hydra.job.num}"]
    worker()


def run(p: Plan) -> dict[str, Any]:
    """Run (or resume) the study to ``trials`` trials, then print the pick. Returns the scores and the pick."""
    from optuna.trial import TrialState

    study = open_study(p)
    d = p.args.directory
    _say(f"{p.method} on {p.data}, {p.args.trials} trials by {p.criterion} ({'higher' if p.higher else 'lower'} "
         f"is better) in {d}; space: " + ", ".join(f"{k} {v}" for k, v in p.space.items()))
    searched = write_recipe(d / "baseline_config", p.recipe)
    base = [*p.baseline, *([f"hydra.searchpath=[file://{searched}]"] if searched else [])]
    unclaimed = gone(study.user_attrs.get(BASELINE), age_s=math.inf)  # by a process of this or another host
    if (d / BASELINE / "summary.json").is_file() or (unclaimed and claim_file(d / f"{BASELINE}.claim")):
        study.set_user_attr(BASELINE, owner())
        log = d / "logs" / f"{BASELINE}.log"
        code = train(d / BASELINE, base, log)
        _refused(code, log, BASELINE)
        _say(f"{BASELINE}: {p.criterion} {_fmt(scored(d / BASELINE, p.key))}" +
             ("" if code == 0 else f" (failed, exit {code}; log {log})"))
    else:
        _say(f"{BASELINE} runs in another process; uda report {d} will read it")

    def finish(number: int, params: dict[str, Any]) -> None:
        name, log = f"trial_{number:03d}", d / "logs" / f"trial_{number:03d}.log"
        code = train(d / name, [*p.args.train, *(override(k, v) for k, v in params.items())], log)
        _refused(code, log, name)
        score = scored(d / name, p.key)
        if score is None:
            study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
            why = f"exit {code}" if code else f"it recorded no {p.key}"
            _say(f"{name} failed ({why}; log {log})")
        else:
            study.tell(number, score, skip_if_finished=True)
            _say(f"{name}: {p.criterion} {_fmt(score)}  " + " ".join(override(k, v) for k, v in params.items()))

    now = datetime.now()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        age = (now - t.datetime_start).total_seconds() if t.datetime_start else math.inf
        if gone(t.user_attrs.get("owner"), age):
            params = {**t.system_attrs.get("fixed_params", {}), **t.params}
            if set(params) != set(p.space):  # killed between asking and sampling: nothing was trained
                study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
                continue
            # claimed again (Optuna's storage call: a Study sets attributes only of trials it asked for)
            study._storage.set_trial_user_attr(t._trial_id, "owner", owner())
            _say(f"trial_{t.number:03d} was interrupted: continuing it")
            finish(t.number, params)
    while len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL,
                                                       TrialState.RUNNING))) < p.args.trials:
        trial = study.ask()
        trial.set_user_attr("owner", owner())
        params = {k: dist.suggest(trial, k) for k, dist in p.space.items()}
        finish(trial.number, params)
    scores = {BASELINE: scored(d / BASELINE, p.key)}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        scores[f"trial_{t.number:03d}"] = t.value
    pick = best(scores, p.higher)
    if pick is None:
        _say("no candidate finished; nothing to pick")
    else:
        _say(f"picked {pick} ({p.criterion} {_fmt(scores[pick])}); trials, target metrics and regret: "
             f"uda report {d}")
    return {"scores": scores, "pick": pick}


def best(scores: dict[str, float | None], higher: bool) -> str | None:
    """The candidate with the best score (ties: the first in order, source-only before the trials)."""
    done = [(name, s) for name, s in scores.items() if s is not None]
    if not done:
        return None
    sign = -1 if higher else 1
    return min(done, key=lambda ns: sign * ns[1])[0]


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g}"


def show_space(p: Plan) -> str:
    lines = [f"method={p.method}: the search space of uda tune (uda/schema/search.py)"]
    for key, dist in p.space.items():
        lines.append(f"  {key}={dist}  default {p.defaults[key]}  ({dist.source})")
    lines.append(f"objective: {p.criterion} ({'higher' if p.higher else 'lower'} is better)")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    from uda.errors import UserError

    if argv and argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    try:
        args = parse_args(argv)
        p = plan(args)
        if args.show_space:
            print(show_space(p))
            return 0
        try:
            import optuna  # noqa: F401
        except ModuleNotFoundError:
            raise ConfigError("uda tune needs optuna: pip install optuna") from None
        if args.workers > 1:
            launch_workers(p)
        else:
            run(p)
    except KeyboardInterrupt:
        print(f"uda tune: interrupted; the same command resumes the study in {args.directory}", file=sys.stderr)
        return 130
    except UserError as e:
        print(f"uda: error: {e}", file=sys.stderr)
        return 2
    return 0
