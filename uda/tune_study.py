"""The study half of ``uda tune`` (the command and its plan: ``uda.tune``): the label-free objective of a
finished trial, each trial's ``uda train`` child, and the Optuna study that runs (or resumes) them and picks
the best by the criterion; which process owns a trial: ``uda.tune_claims``.
"""
from __future__ import annotations

import contextlib
import json
import math
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from uda.errors import ConfigError
from uda.schema.search import override
from uda.tune_claims import CLAIMS, beating, claim, superseded, take
from uda.tune_plan import BASELINE, SPEC, STUDY, Plan, candidate_runs, without_seed, write_recipe

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


LOST = -1000  # train()'s status for a trial another worker took over meanwhile: killed, left to that worker
# a trial's exit status after it checkpointed on a signal and stopped (uda.engine.signals: 128 + signum):
# interrupted, not failed; the study stops with it and a resumed study continues it
STOPPED = {128 + s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGUSR1", 0),
                             getattr(signal, "SIGUSR2", 0)) if s}


def train(run_dir: Path, overrides: list[str], log: Path, mine: Path | None = None) -> int:
    """``uda train`` in a child process into ``run_dir``: resumed from its checkpoint where a killed study
    left one, skipped where it already finished. The exit status (0: finished); KeyboardInterrupt where the
    trial stopped at a checkpoint on a signal (SLURM's SIGTERM at a time limit or preemption, a forwarded
    SIGUSR2), so that its trial stays RUNNING for the resumed study to continue. Its claim ``mine`` is touched
    meanwhile (``beating``)."""
    if (run_dir / "summary.json").is_file():
        return 0
    ckpts = run_dir / "checkpoints"
    resume = ["resume=true"] if any((ckpts / f).is_file() for f in ("last.pt", "prev.pt")) else []
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "uda.cli", "train", *overrides, f"hydra.run.dir={run_dir}", *resume]
    with open(log, "a") as out, _forwarding() as trial, beating(mine, trial.lose):
        out.write("$ " + " ".join(command) + "\n")
        out.flush()
        trial.start(subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT))
        try:
            code = trial.child.wait()
        except KeyboardInterrupt:  # the child got the same SIGINT: it checkpoints and stops; let it
            trial.child.wait()
            raise
    if trial.lost:  # killed; finished all the same where it wrote its summary first
        return 0 if (run_dir / "summary.json").is_file() else LOST
    if code in STOPPED:
        raise KeyboardInterrupt
    return code


class _Trial:
    """The running trial's process, and the SIGUSR2s received for it (one may come before it starts)."""

    def __init__(self):
        self.child: subprocess.Popen | None = None
        self.received: list[int] = []
        self.lost = False

    def lose(self) -> None:
        """Another worker owns the trial now and resumes it from its run directory: kill this ``uda train``
        (SIGKILL), whose checkpoint, had it written one, would overwrite the new owner's."""
        self.lost = True
        if self.child is not None:
            self.child.kill()

    def forward(self, signum, frame) -> None:
        self.received.append(signum)
        if self.child is not None:
            self.child.send_signal(signum)

    def start(self, child: subprocess.Popen) -> None:
        self.child = child
        if self.lost:
            child.kill()
        for signum in self.received:  # arrived between installing the handler and the start
            child.send_signal(signum)


@contextlib.contextmanager
def _forwarding():
    """SIGUSR2, which submitit sends a SLURM job before its time limit, goes to the trial's ``uda train`` (it
    checkpoints after its step and exits 140); once the trial has stopped, the handler installed before gets it
    (submitit's: requeue the job, then exit; the requeued job continues the trial)."""
    usr2, trial = getattr(signal, "SIGUSR2", None), _Trial()
    try:
        previous = signal.signal(usr2, trial.forward) if usr2 is not None else None
    except ValueError:  # not the main thread: signals stay with their owner
        usr2 = None
    try:
        yield trial
    finally:
        if usr2 is not None and previous is not None:  # None: a handler not installed from Python
            signal.signal(usr2, previous)
            if trial.received and callable(previous):
                previous(usr2, None)


def scored(run_dir: Path, key: str) -> float | None:
    """A run's score: its objective once it finished (summary.json), else None."""
    return objective(run_dir, key) if (run_dir / "summary.json").is_file() else None


def candidate_score(directory: Path, name: str, key: str, seeds: list[int]) -> float | None:
    """A candidate's score: the mean of its runs' scores (one per seed), None until each has one. The study and
    ``uda report`` both use this rule."""
    scores = [scored(run_dir, key) for run_dir, _ in candidate_runs(directory, name, seeds)]
    return None if any(v is None for v in scores) else sum(scores) / len(scores)


def _say(text: str) -> None:
    print(f"uda tune: {text}", flush=True)


def open_study(p: Plan):
    """The study (created, or loaded with the same spec); ConfigError for a storage that cannot be opened or a
    directory that holds a study of another command."""
    import hashlib
    import logging

    import optuna

    d = p.args.directory
    spec = p.spec()
    held = json.loads((d / SPEC).read_text()) if (d / SPEC).is_file() else None
    for name in [*spec, *(k for k in held or {} if k not in spec)]:  # both ways: a key one side lacks differs too
        if held is not None and held.get(name) != spec.get(name):
            raise ConfigError(f"{d} holds a study of another command ({name}: {held.get(name)}, not "
                              f"{spec.get(name)}); give the same command to resume it, or another hydra.sweep.dir")
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
    if not study.trials:  # the first trial: the command's own setting
        study.enqueue_trial(p.defaults)
    if held is None:
        (d / SPEC).write_text(json.dumps(spec, indent=2))
    return study


def sampler(p: Plan, number: int):
    """Trial ``number``'s TPE sampler, seeded by ``tune.seed`` and the number: a resumed study does not draw an
    earlier trial's values again, and workers that ask at once (SLURM jobs started together, machines sharing
    the storage) draw apart; in the random phase a trial's values are the same however many workers ask."""
    import optuna

    startup = min(10, max(1, p.args.trials // 2))  # half the budget explores at random, then TPE's model
    return optuna.samplers.TPESampler(seed=p.args.seed + number, n_startup_trials=startup)


def shared_sqlite(p: Plan) -> bool:
    """Whether a launcher places the workers (possibly on several nodes) while the study is the default SQLite
    file, which Optuna advises against sharing between machines."""
    chosen = [a.lstrip("+").split("=", 1)[1] for a in p.args.launcher if a.lstrip("+").startswith("hydra/launcher=")]
    one_machine = chosen and all(name == "basic" for name in chosen)  # Hydra's basic launcher: here, in turn
    return bool(p.args.launcher) and not one_machine and p.args.workers > 1 and p.storage.startswith("sqlite:")


def launch_workers(p: Plan) -> None:
    """``tune.workers=N``: N copies of the study's loop as the jobs of a Hydra multirun, placed by the launcher
    given (``hydra/launcher=slurm``, ...), sharing the study's storage (``tune.storage``: an RDB URL where
    they run on several machines). A worker asks for trials until the study has ``trials`` (up to N - 1 more
    where workers ask at once)."""
    import hydra
    from hydra.core.config_store import ConfigStore

    from uda.compose import CONFIG_DIR, register_configs

    open_study(p)  # created, its first trial queued and its spec written once, before any worker
    if shared_sqlite(p):
        _say(f"{p.args.workers} workers placed by {p.args.launcher[0]} share the SQLite file {p.storage}: "
             f"on several nodes give tune.storage=<RDB URL> (SQLite over a network file system may lock)")
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
    study = open_study(p)
    d = p.args.directory
    _say(f"{p.method} on {p.data}, {p.args.trials} trials by {p.criterion} ({'higher' if p.higher else 'lower'} "
         f"is better{', the mean over seeds ' + ', '.join(map(str, p.seeds)) if len(p.seeds) > 1 else ''}) in {d}; "
         f"space: " + ", ".join(f"{k} {v}" for k, v in p.space.items()))
    searched = write_recipe(d / "baseline_config", p.recipe)
    worker = _Worker(p, study, [*p.baseline, *([f"hydra.searchpath=[file://{searched}]"] if searched else [])])
    worker.source_only(first=True)
    worker.loop()
    return _picked(p, study)


class _Worker:
    """One process's part of a study: source-only and each trial it asks for or takes over from a worker that is
    gone, each trained by ``train`` under its claim (``uda.tune_claims``)."""

    def __init__(self, p: Plan, study, baseline: list[str]):
        self.p, self.study, self.d, self.baseline = p, study, p.args.directory, baseline
        self.tried = False  # source-only, once this worker trained it or tried and failed (not if it was lost)
        # a worker's failed source-only: retried by a later run of the command, not by this one
        self.failed = self.d / CLAIMS / f"{BASELINE}.failed"

    def loop(self) -> None:
        """Trials until the study has ``trials`` (finished, failed or running)."""
        from optuna.trial import TrialState

        while True:
            self.continue_interrupted()  # before each new trial: another worker's may end (a lost node) meanwhile
            if len(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL,
                                                                 TrialState.RUNNING))) >= self.p.args.trials:
                return
            trial = self.study.ask()
            self.study.sampler = sampler(self.p, trial.number)  # before its values are drawn (``suggest``)
            mine = claim(self.d, f"trial_{trial.number:03d}")
            if mine is None:  # asked so long ago that another worker took it over
                continue
            self.finish(trial.number, {k: dist.suggest(trial, k) for k, dist in self.p.space.items()}, mine)

    def source_only(self, first: bool) -> None:
        """Source-only, trained by the one worker that holds its claim: at the start, or later (``first``
        False) where its owner is gone before it finished or failed."""
        d = self.d
        done = all((run_dir / "summary.json").is_file() for run_dir, _ in candidate_runs(d, BASELINE, self.p.seeds))
        if self.tried or (not first and (done or self.failed.is_file())):
            return
        mine = None if done else take(d, BASELINE)
        if not done and mine is None:
            if first:
                _say(f"{BASELINE} runs in another process; uda report {d} will read it")
            return
        self.tried = True
        if not first:
            _say(f"{BASELINE} was interrupted: continuing it")
        self.failed.unlink(missing_ok=True)
        log = d / "logs" / f"{BASELINE}.log"
        code = self.train(BASELINE, self.baseline, log, mine)
        if not _kept(code, log, BASELINE):
            self.tried = False  # its new owner may be lost in turn
            return
        if code != 0:
            self.failed.write_text(mine.name if mine else "")
        _say(f"{BASELINE}: {self.p.criterion} {_fmt(candidate_score(d, BASELINE, self.p.key, self.p.seeds))}" +
             ("" if code == 0 else f" (failed, exit {code}; log {log})"))

    def finish(self, number: int, params: dict[str, Any], mine: Path) -> None:
        """Trial ``number`` trained with ``params`` (from its checkpoint where it has one) and told to the study."""
        from optuna.trial import TrialState

        p, name = self.p, f"trial_{number:03d}"
        log = self.d / "logs" / f"{name}.log"
        code = self.train(name, [*p.args.train, *(override(k, v) for k, v in params.items())], log, mine)
        if not _kept(code, log, name):
            return
        score = candidate_score(self.d, name, p.key, p.seeds)
        if score is None:
            self.study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
            why = f"exit {code}" if code else f"it recorded no {p.key}"
            _say(f"{name} failed ({why}; log {log})")
        else:
            self.study.tell(number, score, skip_if_finished=True)
            _say(f"{name}: {p.criterion} {_fmt(score)}  " + " ".join(override(k, v) for k, v in params.items()))

    def train(self, name: str, overrides: list[str], log: Path, mine: Path | None) -> int:
        """The candidate's runs in turn (one per seed; each skipped where it finished, resumed where it has a
        checkpoint); the first status that is not 0, else 0. ``LOST`` before a run where another worker took the
        candidate over meanwhile (a run finished as it was lost counts; the next one is the new owner's)."""
        several = len(self.p.seeds) > 1
        for run_dir, seed in candidate_runs(self.d, name, self.p.seeds):
            if superseded(mine):
                return LOST
            code = train(run_dir, [*(without_seed(overrides) if several else overrides), *seed], log, mine)
            if code != 0:
                return code
        return 0

    def continue_interrupted(self) -> None:
        """Source-only and each RUNNING trial whose owner is gone (``take``), continued from its checkpoint."""
        from optuna.trial import TrialState

        self.source_only(first=False)
        now = datetime.now()
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            age = (now - t.datetime_start).total_seconds() if t.datetime_start else math.inf
            mine = take(self.d, f"trial_{t.number:03d}", age)
            if mine is None:  # its owner trains it, or another worker took it over first
                continue
            if self.study._storage.get_trial(t._trial_id).state != TrialState.RUNNING:  # its owner ended it meanwhile
                continue
            params = {**t.system_attrs.get("fixed_params", {}), **t.params}
            if set(params) != set(self.p.space):  # killed between asking and sampling: nothing was trained
                self.study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
                continue
            _say(f"trial_{t.number:03d} was interrupted: continuing it")
            self.finish(t.number, params, mine)


def _kept(code: int, log: Path, name: str) -> bool:
    """False where another worker took the candidate over meanwhile (``LOST``: left to it); ConfigError where
    ``uda train`` refused it (exit 2: its command, its data), which stops the study, left to resume."""
    if code == LOST:
        _say(f"{name} was taken over by another worker; left to it")
        return False
    if code == 2:
        lines = [ln for ln in log.read_text().splitlines() if ln.startswith("uda: error:")]
        why = lines[-1].removeprefix("uda: error: ") if lines else f"see {log}"
        raise ConfigError(f"{name}: uda train refused it: {why}")
    return True


def _picked(p: Plan, study) -> dict[str, Any]:
    """The scores of the finished candidates and the best of them, said with what is still unfinished."""
    from optuna.trial import TrialState

    d = p.args.directory
    scores = {BASELINE: candidate_score(d, BASELINE, p.key, p.seeds)}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        scores[f"trial_{t.number:03d}"] = t.value
    pick = best(scores, p.higher)
    running = [f"trial_{t.number:03d}" for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
    if running:  # another worker's, or interrupted and not yet judged gone: this pick is without them
        _say(f"{', '.join(running)} not finished (another worker's, or continued by the next run of this "
             f"command); uda report {d} picks over them once they are")
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
