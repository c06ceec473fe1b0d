"""``uda tune``: every method's search space composes and samples; bad input is one line and exit 2 with
nothing written; the objective reads no target label; a killed study resumes, continuing its interrupted
trial and never re-running a finished one; ``uda report`` over the study writes tune.csv."""
import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from helpers import KILL_ARGS, SEG_SMALL, SMALL, cli, make_cfg, run_cli
from uda import tune_claims, tune_plan, tune_study
from uda.compose import compose
from uda.errors import ConfigError
from uda.methods import METHODS
from uda.schema import CLASSIFICATION, SEGMENTATION, validate
from uda.schema.search import Dist, override, parse
from uda.selection import TABLE, criterion_key

CASES = [(name, task) for name, cls in METHODS.items() for task in cls.Config.TASKS]
PER_TASK = {("mic", SEGMENTATION): ["method/host=daformer"]}


class Ends:
    """A stand-in for an Optuna trial: each distribution's low end (or its last choice) or its high end."""

    def __init__(self, high: bool):
        self.high = high

    def suggest_float(self, key, low, high, log=False):
        return high if self.high else low

    def suggest_int(self, key, low, high):
        return high if self.high else low

    def suggest_categorical(self, key, choices):
        return choices[-1] if self.high else choices[0]


@pytest.mark.parametrize("name, task", CASES, ids=[f"{n}-{t}" for n, t in CASES])
def test_search_space_composes_and_samples(name, task):
    # the default budget: the staged methods' phases need it (nothing is trained here)
    small = [o for o in (SMALL if task == CLASSIFICATION else SEG_SMALL) if o != "+debug=fast"]
    base = [*small, f"method={name}", *PER_TASK.get((name, task), [])]
    if name == "source_only":  # nothing of its own to tune
        with pytest.raises(ConfigError, match="declares no search space"):
            tune_plan.plan(tune_plan.parse_args(base))
        return
    p = tune_plan.plan(tune_plan.parse_args(base))  # (a default outside its range is refused here)
    for key, dist in p.space.items():
        assert dist.source, f"{name}: {key} has no stated source"
        assert parse(str(dist), key) == Dist(dist.kind, dist.low, dist.high, dist.choices, "command line")
    import optuna

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    drawn = [{k: d.suggest(study.ask(), k) for k, d in p.space.items()} for _ in range(2)]  # through Optuna
    ends = [{k: d.suggest(Ends(high), k) for k, d in p.space.items()} for high in (False, True)]
    for sampled in [*drawn, *ends]:  # Optuna's draws and both ends of every range compose into a valid run
        assert all(p.space[k].contains(v) for k, v in sampled.items()), sampled
        cfg = make_cfg(*base, *(override(k, v) for k, v in sampled.items()))
        validate(cfg)
        for key, value in sampled.items():
            assert tune_plan._setting(cfg, key) == value


def test_source_only_has_no_space_and_says_how_to_give_one(tmp_path):
    r = cli("tune", *SMALL, "method=source_only", f"hydra.sweep.dir={tmp_path / 't'}")
    assert r.returncode == 2 and "declares no search space" in r.stderr and "tune.space." in r.stderr
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize("args, says", [
    (["method=dann", "tune.space.method.adv_wieght=log[0.1,1]"], "no setting 'adv_wieght'; valid:"),
    (["method=dann", "tune.space.method.adv_weight=log[1,1]"], "empty range"),
    (["method=dann", "tune.space.method.adv_weight=log[0,1]"], "low > 0"),
    (["method=dann", "tune.space.method.adv_weight=choice[]"], "choice[] is empty"),
    (["method=dann", "tune.space.method.adv_weight=gauss[0,1]"], "not a distribution"),
    (["method=dann", "tune.criterion=accuracy"], "not a label-free criterion; valid for classification"),
    (["method=dann", "trials=0"], "at least 1 trial"),
    (["method=dann", "tune.trails=3"], "unknown key tune.trails"),
    (["method=dann", "hydra.run.dir=x"], "hydra.sweep.dir"),
    (["method=dann", "hydra/launcher=slurm"], "give tune.workers=N"),
    (["method=dann", "tune.workers=0"], "tune.workers=0: give at least 1"),
    (["method=dann", "tune.seeds=0"], "tune.seeds=0: each candidate needs at least 1 seed"),
    (["method=dann", "tune.seeds=two"], "tune.seeds=two: not an integer"),
    (["method=dann", "method.adv_weight=-1"], "method.adv_weight must be >= 0"),
    (["method=dann", "method.adv_weight=20"], "lies outside the space log[0.1, 10]"),
    (["method=dann", "tune.space.method.adv_weight=choice[1,1.0]"], "names one value twice"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, says):
    r = cli("tune", *SMALL, *args, f"hydra.sweep.dir={tmp_path / 't'}")
    assert r.returncode == 2, r.stderr
    assert says in r.stderr and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "t").exists()


def test_criterion_the_task_lacks_or_the_method_optimises_is_refused(tmp_path):
    r = cli("tune", *SEG_SMALL, "method=dacs", "tune.criterion=dev", f"hydra.sweep.dir={tmp_path / 't'}")
    assert r.returncode == 2 and "segmentation runs do not record it" in r.stderr
    r = cli("tune", *SEG_SMALL, "method=advent", "tune.criterion=entropy", f"hydra.sweep.dir={tmp_path / 't'}")
    assert r.returncode == 2 and "optimises it itself" in r.stderr
    # by default: the recommendation, or the next by measured regret where the method optimises it
    assert tune_plan.plan(tune_plan.parse_args([*SEG_SMALL, "method=advent"])).criterion == "mano"
    assert tune_plan.plan(tune_plan.parse_args([*SMALL, "method=shot"])).criterion == "mano"
    assert tune_plan.plan(tune_plan.parse_args([*SMALL, "method=dann"])).criterion == "entropy"


def test_a_declared_empty_range_is_one_line(monkeypatch):
    cls = METHODS["dann"].Config
    monkeypatch.setattr(cls, "SEARCH", {**cls.SEARCH, "method.adv_weight": Dist("log", 1.0, 1.0, source="stated")})
    with pytest.raises(ConfigError, match=r"tune.space.method.adv_weight: log\[1, 1\] is an empty range"):
        tune_plan.plan(tune_plan.parse_args([*SMALL, "method=dann"]))


def test_source_only_runs_on_a_recipe_that_sets_the_method(tmp_path):
    # dsn's recipe sets method.adapt_start, which source-only lacks: the candidate that does not adapt runs on
    # a copy of the recipe without the method, on the recipe's pair and budget
    with pytest.raises(ConfigError, match="dsn_mnist_mnistm_paper.yaml sets method.adapt_start, which "
                                          "SourceOnlyConfig has no key for; valid keys of method: name"):
        make_cfg("+experiment=dsn_mnist_mnistm_paper", "data=synthetic", "method=source_only")
    baseline, recipe = tune_plan.baseline_command(["+experiment=dsn_mnist_mnistm_paper", "data=synthetic", "seed=3"])
    assert baseline == [f"+experiment={recipe[0]}", "data=synthetic", "seed=3", "method=source_only"]
    assert "adapt_start" not in recipe[1] and "/method" not in recipe[1] and "@package _global_" in recipe[1]
    cfg = compose(baseline, config_dir=tune_plan.write_recipe(tmp_path, recipe))
    validate(cfg)
    assert (cfg.method.name, cfg.trainer.max_steps, cfg.trainer.checkpoint_every) == ("source_only", 30000, 2000)
    p = tune_plan.plan(tune_plan.parse_args(["+experiment=dsn_mnist_mnistm_paper", "data=synthetic", "seed=3",
                                   f"hydra.sweep.dir={tmp_path / 's'}"]))
    assert p.recipe == recipe and not (tmp_path / "s").exists()
    # a nested method group goes too (mic's host); a recipe without the method needs no copy
    assert "host" not in tune_plan.baseline_command(["+experiment=mic_daformer_gta5_cityscapes"])[1][1]
    assert tune_plan.baseline_command(["+experiment=synth2real_seg_cpu", "method=dacs"]) == (
        ["+experiment=synth2real_seg_cpu", "method=source_only"], None)


def test_a_study_resumed_through_another_spelling_of_its_directory_is_the_same(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def study(directory):
        args = tune_plan.parse_args([*SMALL, "method=dann", f"hydra.sweep.dir={directory}"])
        return tune_study.open_study(tune_plan.plan(args))

    relative, absolute = study("s"), study(tmp_path / "s")
    assert relative.study_name == absolute.study_name and len(absolute.trials) == 1  # the one default, queued once


def test_workers_started_together_draw_apart(tmp_path):
    """Two workers that open the study at once (SLURM jobs started together): each trial's sampler is seeded by
    its number, so they do not draw the same values (both samplers were seeded by the study's size at opening);
    the same number draws the same values."""
    pytest.importorskip("optuna")
    p = tune_plan.plan(tune_plan.parse_args([*SMALL, "method=dann", "trials=8", f"hydra.sweep.dir={tmp_path}"]))
    a, b = tune_study.open_study(p), tune_study.open_study(p)
    assert a.ask().number == 0 and a.trials[0].system_attrs["fixed_params"] == p.defaults  # a took the default
    assert len(b.trials) == 1  # queued once

    def drawn(study):
        trial = study.ask()
        study.sampler = tune_study.sampler(p, trial.number)
        return trial.number, {k: dist.suggest(trial, k) for k, dist in p.space.items()}

    (n_b, b_values), (n_a, a_values) = drawn(b), drawn(a)
    assert (n_b, n_a) == (1, 2) and b_values != a_values
    again = tune_study.open_study(tune_plan.plan(tune_plan.parse_args(
        [*SMALL, "method=dann", "trials=8", f"hydra.sweep.dir={tmp_path / 'again'}"])))
    again.ask()
    assert drawn(again) == (1, b_values)


def _claim_as(d, name, gen, who, age_s=0.0):
    """Generation ``gen`` of ``name``'s claim as another process left it, last touched ``age_s`` ago."""
    path = d / tune_claims.CLAIMS / f"{name}.{gen}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(who))
    os.utime(path, (time.time() - age_s,) * 2)
    return path


def test_source_only_is_claimed_by_one_worker_and_a_dead_claim_is_taken_over_once(tmp_path):
    first = tune_claims.take(tmp_path, "source_only")
    assert first.name == "source_only.0" and tune_claims.take(tmp_path, "source_only") is None  # held: alive
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # another worker of this host
    try:
        who = {"host": tune_claims.socket.gethostname(), "pid": other.pid, "token": tune_claims._process(other.pid)}
        assert who["token"] not in ("", "alive")  # its start time, read from /proc
        _claim_as(tmp_path, "source_only", 1, who, age_s=3 * tune_claims.STALE_S)
        assert tune_claims.take(tmp_path, "source_only") is None  # alive: this host's, untouched or not
        assert tune_claims.gone({**who, "token": str(int(who["token"]) + 1)}, 0)  # its pid, another process
    finally:
        other.kill()
        other.wait()
    second = tune_claims.take(tmp_path, "source_only")  # the newest claim's process is gone: the next generation
    assert second.name == "source_only.2" and json.loads(second.read_text())["pid"] == os.getpid()
    assert tune_claims.take(tmp_path, "source_only") is None
    # two workers that judged generation 2 gone together: the first to create generation 3 continues it
    assert tune_claims.claim(tmp_path, "source_only", 3) is not None
    assert tune_claims.claim(tmp_path, "source_only", 3) is None
    assert not list((tmp_path / tune_claims.CLAIMS).glob(".*"))  # no temporary file left behind


def test_a_killed_worker_not_yet_reaped_is_gone():
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    who = {"host": tune_claims.socket.gethostname(), "pid": other.pid, "token": tune_claims._process(other.pid)}
    assert not tune_claims.gone(who, 0)
    os.kill(other.pid, signal.SIGKILL)  # a zombie until its parent waits for it
    deadline = time.time() + 30
    while not tune_claims.gone(who, 0) and time.time() < deadline:
        time.sleep(0.05)
    try:
        assert tune_claims.gone(who, 0) and other.poll() is not None
    finally:
        other.wait()


def test_an_unclaimed_trial_is_taken_once_stale(tmp_path):
    stale = tune_claims.STALE_S
    assert tune_claims.take(tmp_path, "trial_004", age_s=stale - 1) is None  # its asker is about to claim it
    assert tune_claims.take(tmp_path, "trial_004", age_s=stale + 1).name == "trial_004.0"


def test_a_claim_that_cannot_be_read_is_judged_by_its_beat(tmp_path, monkeypatch):
    def unreadable(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    _claim_as(tmp_path, "trial_002", 0, REMOTE, age_s=30)
    monkeypatch.setattr(tune_claims, "open", unreadable, raising=False)
    gen, who, beat_s = tune_claims.held(tmp_path, "trial_002")
    assert (gen, who) == (0, None) and 29 < beat_s < 60
    assert tune_claims.take(tmp_path, "trial_002") is None
    _claim_as(tmp_path, "trial_002", 0, REMOTE, age_s=tune_claims.STALE_S + 30)
    assert tune_claims.take(tmp_path, "trial_002").name == "trial_002.1"


@pytest.mark.parametrize("code, message, needle", [
    ("EPERM", "Operation not permitted", "has no hard links .*hydra.sweep.dir"),
    # EACCES (some FUSE mounts): claim() returned None as if another worker held the trial, so each trial the
    # study asked for stayed unclaimed and nothing trained
    ("EACCES", "Permission denied", "cannot create the claim trial_000.0 .Permission denied."),
])
def test_a_claim_that_cannot_be_linked_is_one_line_not_a_silent_loss(tmp_path, monkeypatch, code, message, needle):
    def refused(src, dst):
        raise OSError(getattr(tune_claims.errno, code), message)

    monkeypatch.setattr(tune_claims.os, "link", refused)
    with pytest.raises(ConfigError, match=needle):
        tune_claims.claim(tmp_path, "trial_000")
    assert not list((tmp_path / tune_claims.CLAIMS).iterdir())


REMOTE = {"host": "node-07", "pid": 1234, "token": "99", "job": None, "task": None}


def test_a_requeued_slurm_job_continues_its_own_trials_on_any_node(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    monkeypatch.delenv("SLURM_PROCID", raising=False)
    live = tune_claims.owner()
    assert live["job"] == "42" and not tune_claims.gone(live, beat_s=1e9)  # this very process
    earlier = {**REMOTE, "job": "42", "restart": 0}  # the job before its requeue, on another node
    assert tune_claims.gone(earlier, beat_s=0)
    assert not tune_claims.gone({**earlier, "restart": 1}, beat_s=0)  # this same run of the job, elsewhere
    assert not tune_claims.gone({**earlier, "job": "43"}, beat_s=0)  # another job's: its own
    monkeypatch.delenv("SLURM_JOB_ID")
    assert not tune_claims.gone(earlier, beat_s=0)  # outside SLURM: another host's trial is that host's


def test_another_hosts_trial_is_taken_over_once_its_claim_is_stale(tmp_path):
    """A job SLURM ended unrequeued (its trial did not stop within signal_delay_s) or a lost node: nobody
    touches its claim; STALE_S later the next study run continues its trial."""
    stale = tune_claims.STALE_S
    assert not tune_claims.gone(REMOTE, beat_s=stale - 1) and tune_claims.gone(REMOTE, beat_s=stale + 1)
    assert not tune_claims.gone(None, beat_s=stale - 1) and tune_claims.gone(None, beat_s=stale + 1)  # unreadable
    _claim_as(tmp_path, "trial_001", 0, REMOTE, age_s=stale - 30)
    assert tune_claims.take(tmp_path, "trial_001") is None  # that worker beat half a minute ago
    _claim_as(tmp_path, "trial_001", 0, REMOTE, age_s=stale + 30)
    assert tune_claims.take(tmp_path, "trial_001").name == "trial_001.1"
    assert tune_claims.take(tmp_path, "trial_001") is None  # now this live process's


class _Trains:
    """A ``uda train`` child that runs for ``seconds`` (or is interrupted: ``raises``); SIGTERM ends it at its
    next checkpoint (exit 143)."""

    seconds, raises = 0.4, None

    def __init__(self, *args, **kwargs):
        self.terminated, self.killed = threading.Event(), threading.Event()

    def terminate(self):
        self.terminated.set()

    def kill(self):
        self.killed.set()
        self.terminated.set()

    def wait(self):
        if self.terminated.wait(self.seconds):
            return -9 if self.killed.is_set() else 143
        if self.raises:
            raise self.raises
        return 0


@pytest.mark.parametrize("raises", [None, KeyboardInterrupt])
def test_a_trial_touches_its_claim_while_it_trains_and_stops_after(tmp_path, monkeypatch, raises):
    mine = _claim_as(tmp_path, "trial_000", 0, tune_claims.owner(), age_s=3600)
    monkeypatch.setattr(tune_claims, "HEARTBEAT_S", 0.05)
    monkeypatch.setattr(_Trains, "raises", raises)
    monkeypatch.setattr(tune_study.subprocess, "Popen", _Trains)
    touched = []
    monkeypatch.setattr(tune_claims.os, "utime", lambda path, *a: touched.append(time.time()))
    with pytest.raises(KeyboardInterrupt) if raises else contextlib.nullcontext():
        tune_study.train(tmp_path / "trial_000", ["method=dann"], tmp_path / "log", mine)
    ended, beats = time.time(), len(touched)
    assert beats >= 2  # at the start, then again while the child ran (every 0.05 s of its 0.4 s)
    time.sleep(0.2)
    assert len(touched) == beats and all(t <= ended for t in touched)  # and never after it ended
    assert "uda-tune-heartbeat" not in [t.name for t in threading.enumerate()]


def test_a_trial_another_worker_took_over_is_killed_and_left_to_it(tmp_path, monkeypatch):
    """A worker whose claim another took over (it was suspended for minutes, say): its child is killed, not
    stopped at a checkpoint that would overwrite the new owner's, and train() says LOST, so the study neither
    scores nor stops on it."""
    mine = tune_claims.take(tmp_path, "trial_000")
    monkeypatch.setattr(tune_claims, "HEARTBEAT_S", 0.05)
    monkeypatch.setattr(_Trains, "seconds", 30)
    children = []
    monkeypatch.setattr(tune_study.subprocess, "Popen", lambda *a, **k: children.append(_Trains()) or children[-1])
    threading.Timer(0.2, lambda: _claim_as(tmp_path, "trial_000", 1, REMOTE)).start()
    start = time.time()
    assert tune_study.train(tmp_path / "trial_000", ["method=dann"], tmp_path / "log", mine) == tune_study.LOST
    assert time.time() - start < 10 and children[0].killed.is_set()  # killed, not run to its end


def test_a_trial_taken_over_after_it_wrote_its_summary_counts_as_finished(tmp_path, monkeypatch):
    run_dir, mine = tmp_path / "trial_000", tune_claims.take(tmp_path, "trial_000")
    monkeypatch.setattr(tune_claims, "HEARTBEAT_S", 0.05)
    monkeypatch.setattr(_Trains, "seconds", 30)
    monkeypatch.setattr(tune_study.subprocess, "Popen", _Trains)

    def finished_then_taken():
        run_dir.mkdir()
        (run_dir / "summary.json").write_text("{}")
        _claim_as(tmp_path, "trial_000", 1, REMOTE)

    threading.Timer(0.2, finished_then_taken).start()
    assert tune_study.train(run_dir, ["method=dann"], tmp_path / "log", mine) == 0


@pytest.mark.parametrize("unreadable", [False, True])
def test_a_claim_that_cannot_be_touched_for_minutes_keeps_its_trial(tmp_path, monkeypatch, unreadable):
    """A flaky file system: the worker goes on training (a trial that gave up here would be left RUNNING,
    owned by a live process, for nobody to continue) and tries again at each beat."""
    mine = tune_claims.take(tmp_path, "trial_000")
    monkeypatch.setattr(tune_claims, "HEARTBEAT_S", 0.02)
    monkeypatch.setattr(tune_claims, "STALE_S", 0.05)  # many times over while the child runs its 0.4 s

    def failing(*args, **kwargs):
        failing.calls += 1
        raise OSError(5, "Input/output error")

    failing.calls = 0
    monkeypatch.setattr(tune_claims.os, "utime", failing)
    if unreadable:
        monkeypatch.setattr(tune_claims, "held", failing)
    monkeypatch.setattr(tune_study.subprocess, "Popen", _Trains)
    assert tune_study.train(tmp_path / "trial_000", ["method=dann"], tmp_path / "log", mine) == 0
    assert failing.calls >= 5  # at every beat, and the thread survived each failure


def _finished(run_dir, key, score=0.5) -> int:
    """What a finished ``uda train`` leaves for the study to read: one evaluation scoring ``score``."""
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.jsonl").write_text(json.dumps({"step": 1, key: score}) + "\n")
    (run_dir / "summary.json").write_text("{}")
    return 0


@pytest.mark.parametrize("failed", [False, True])
def test_source_only_whose_owner_is_lost_during_the_study_is_continued(tmp_path, monkeypatch, failed):
    """Another host claimed source-only and was lost while this worker trained trial 0: before its next trial
    this worker continues source-only, so the pick can still choose not to adapt; unless that host's
    source-only had failed, which is left to a later run of the command."""
    pytest.importorskip("optuna")
    p = tune_plan.plan(tune_plan.parse_args([*SMALL, "method=dann", "trials=2", f"hydra.sweep.dir={tmp_path}"]))
    _claim_as(tmp_path, tune_plan.BASELINE, 0, REMOTE)  # fresh: that worker trains it
    trained = []

    def train(run_dir, overrides, log, mine=None):
        trained.append((run_dir.name, mine.name))
        if run_dir.name == "trial_000":  # meanwhile the other host is lost: its claim is no longer touched
            _claim_as(tmp_path, tune_plan.BASELINE, 0, REMOTE, age_s=tune_claims.STALE_S + 30)
            if failed:
                (tmp_path / tune_claims.CLAIMS / f"{tune_plan.BASELINE}.failed").write_text("source_only.0")
        return _finished(run_dir, p.key)

    monkeypatch.setattr(tune_study, "train", train)
    result = tune_study.run(p)
    if failed:
        assert trained == [("trial_000", "trial_000.0"), ("trial_001", "trial_001.0")]
        assert result["scores"] == {"source_only": None, "trial_000": 0.5, "trial_001": 0.5}
    else:
        assert trained == [("trial_000", "trial_000.0"), ("source_only", "source_only.1"),
                           ("trial_001", "trial_001.0")]
        assert result["scores"] == {"source_only": 0.5, "trial_000": 0.5, "trial_001": 0.5}


def test_sigusr2_reaches_the_trial_which_checkpoints_then_the_previous_handler(tmp_path):
    """What submitit sends before a SLURM time limit: the trial stops at a checkpoint, then submitit's handler
    (here one that records and exits, as submitit's requeues and exits) runs; the next train() continues it."""
    run_dir, log, handed = tmp_path / "trial_000", tmp_path / "trial_000.log", []

    def submitit_like(signum, frame):
        handed.append((signum, (run_dir / "checkpoints" / "last.pt").is_file()))
        raise SystemExit(-1)

    def send_once_checkpointing():
        deadline = time.time() + 120
        while not (run_dir / "checkpoints" / "last.pt").is_file() and time.time() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGUSR2)

    previous = signal.signal(signal.SIGUSR2, submitit_like)
    sender = threading.Thread(target=send_once_checkpointing)
    sender.start()
    try:
        with pytest.raises(SystemExit):
            tune_study.train(run_dir, [*KILL_ARGS, "method=dann"], log)
    finally:
        sender.join()
        assert signal.getsignal(signal.SIGUSR2) is submitit_like  # restored before it was called
        signal.signal(signal.SIGUSR2, previous)
    assert handed == [(signal.SIGUSR2, True)]  # once, after the trial's checkpoint
    assert "signal 12 received" in log.read_text() and not (run_dir / "summary.json").exists()
    assert tune_study.train(run_dir, [*KILL_ARGS, "method=dann"], log) == 0  # continued from its checkpoint
    starts = [ln for ln in log.read_text().splitlines() if ln.startswith("$ ")]
    assert len(starts) == 2 and starts[1].endswith("resume=true") and (run_dir / "summary.json").is_file()


@pytest.mark.parametrize("code, stops", [(143, True), (140, True), (130, True), (1, False), (-9, False)])
def test_a_trial_stopped_at_a_checkpoint_stops_the_study_and_a_crashed_one_fails(tmp_path, monkeypatch, code, stops):
    """SLURM's SIGTERM (time limit, preemption): the trial exits 143 after its checkpoint; the study must not
    score it as failed but stop, leaving it RUNNING to continue. A crash (1) or a kill (-9) is a failure."""
    class Finished:
        def __init__(self, *args, **kwargs):
            pass

        def wait(self):
            return code

    monkeypatch.setattr(tune_study.subprocess, "Popen", Finished)
    if stops:
        with pytest.raises(KeyboardInterrupt):
            tune_study.train(tmp_path / "trial_000", ["method=dann"], tmp_path / "log")
    else:
        assert tune_study.train(tmp_path / "trial_000", ["method=dann"], tmp_path / "log") == code


class Guard(dict):
    """An evaluation row that fails the test if anything reads a column other than the label-free ones."""

    FREE = {"step"} | {criterion_key(c.name, m)[0] for c in TABLE for m in ("acc", "miou")}

    def __getitem__(self, key):
        assert key in self.FREE, f"the objective read {key!r}, which target labels produce"
        return super().__getitem__(key)

    def get(self, key, default=None):
        return self[key] if key in self else default


def test_objective_never_reads_target_labels(tmp_path, monkeypatch):
    rows = [{"step": 3, "target_acc": 50.0, "target_entropy": 0.9, "source_val_acc": 80.0, "mixval": 0.6},
            {"step": 6, "target_acc": 10.0, "target_entropy": 0.4, "source_val_acc": 85.0, "mixval": 0.7,
             "target_mean_class_acc": 9.0, "target_loss": 3.0}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert tune_study.objective(tmp_path, "target_entropy") == 0.4  # the last evaluation's
    loads = json.loads
    monkeypatch.setattr(tune_study.json, "loads", lambda s: Guard(loads(s)))
    assert tune_study.objective(tmp_path, "target_entropy") == 0.4
    assert tune_study.objective(tmp_path, "mixval") == 0.7
    # whatever the target labels say, the objective is the same
    monkeypatch.undo()
    for r in rows:
        r.update(target_acc=99.0, target_mean_class_acc=99.0, target_loss=0.0)
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert tune_study.objective(tmp_path, "target_entropy") == 0.4
    with pytest.raises(KeyError):
        tune_study.label_free(rows[-1])["target_acc"]


def test_best_by_direction():
    scores = {"source_only": 0.5, "trial_000": 0.3, "trial_001": None, "trial_002": 0.3}
    assert tune_study.best(scores, higher=False) == "trial_000"  # ties: the first
    assert tune_study.best(scores, higher=True) == "source_only"
    assert tune_study.best({"trial_000": None}, higher=True) is None


# a trial of a few seconds that checkpoints every step, so that a kill lands inside it
STUDY = [*SMALL, "method=dann", "trainer.max_steps=30", "trainer.checkpoint_every=1", "trainer.eval_every=10",
         "trainer.threads=1", "trials=2", "tune.seed=0"]


def _tune(tmp_path, *extra, background=False):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "uda.cli", "tune", *STUDY, f"hydra.sweep.dir={tmp_path / 'study'}", *extra]
    if background:
        return subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


def _wait_for(path, proc, timeout=300):
    start = time.time()
    while not path.exists():
        assert proc.poll() is None, f"the study ended before {path} appeared: {proc.stdout.read()}"
        assert time.time() - start < timeout, f"{path} did not appear"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory):
    pytest.importorskip("optuna")
    tmp_path = tmp_path_factory.mktemp("tune")
    d = tmp_path / "study"
    proc = _tune(tmp_path, background=True)
    _wait_for(d / "trial_001" / "checkpoints" / "last.pt", proc)  # trial 0 finished, trial 1 under way
    os.killpg(proc.pid, signal.SIGKILL)  # the study and its trial, as a lost node would
    proc.wait()
    assert not (d / "trial_001" / "summary.json").exists()
    # ... had it run on another node: a resumed study here knows it is gone only by its untouched claim
    assert json.loads((d / tune_claims.CLAIMS / "trial_001.0").read_text())["pid"] == proc.pid  # the killed one's
    _claim_as(d, "trial_001", 0, REMOTE, age_s=tune_claims.STALE_S + 60)
    first = (d / "trial_000" / "summary.json").stat().st_mtime_ns
    r = _tune(tmp_path, "trials=3")  # resumed, with one trial more
    return d, r, first


def test_a_killed_study_resumes_without_repeating_a_finished_trial(killed_and_resumed):
    d, r, first = killed_and_resumed
    assert r.returncode == 0, r.stdout + r.stderr
    assert "trial_001 was interrupted: continuing it" in r.stdout
    assert json.loads((d / tune_claims.CLAIMS / "trial_001.1").read_text())["host"] != REMOTE["host"]  # taken over
    assert (d / "trial_000" / "summary.json").stat().st_mtime_ns == first  # not re-run
    assert _commands(d / "logs" / "trial_000.log") == 1
    log1 = [ln for ln in (d / "logs" / "trial_001.log").read_text().splitlines() if ln.startswith("$ ")]
    assert len(log1) == 2 and not log1[0].endswith("resume=true") and log1[1].endswith("resume=true")
    assert _values(log1[0]) == _values(log1[1])  # continued with its own values
    assert sorted(p.name for p in d.glob("trial_*")) == ["trial_000", "trial_001", "trial_002"]
    assert all((d / n / "summary.json").is_file() for n in ("source_only", "trial_000", "trial_001", "trial_002"))
    # the resumed sampler does not draw the interrupted trial's values again
    log2 = [ln for ln in (d / "logs" / "trial_002.log").read_text().splitlines() if ln.startswith("$ ")]
    assert _values(log2[0]) != _values(log1[0])
    # trial 0 is the method's default; the study's spec holds the command
    over = (d / "trial_000" / ".hydra" / "overrides.yaml").read_text()
    assert "method.adv_weight=1.0" in over
    spec = json.loads((d / tune_plan.SPEC).read_text())
    assert spec["criterion"] == "entropy" and spec["space"] == {"method.adv_weight": "log[0.1, 10]"}
    # run again: finished, nothing trained
    again = _tune(d.parent)
    assert again.returncode == 0 and "continuing" not in again.stdout
    assert _commands(d / "logs" / "trial_000.log") == 1


def _values(command: str) -> list[str]:
    return [w for w in command.split() if w.startswith("method.adv_weight=")]


def _commands(log) -> int:
    """How many times the study started ``uda train`` for a trial (each start is logged as "$ command")."""
    return sum(ln.startswith("$ ") for ln in log.read_text().splitlines())


def test_another_command_in_the_study_directory_is_refused(killed_and_resumed):
    d, _, _ = killed_and_resumed
    r = cli("tune", *STUDY, "tune.criterion=mixval", f"hydra.sweep.dir={d}")
    assert r.returncode == 2 and "holds a study of another command (criterion: entropy, not mixval)" in r.stderr


def test_report_over_the_study(killed_and_resumed, tmp_path):
    d, _, _ = killed_and_resumed
    r = cli("report", str(d), "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(open(tmp_path / "tune.csv")))
    assert [x["trial"] for x in rows] == ["source_only", "trial_000", "trial_001", "trial_002"]
    assert list(rows[0]) == ["trial", "overrides", "score", "target_acc", "picked"]
    assert [x["picked"] for x in rows].count("yes") == 1
    scores = {x["trial"]: float(x["score"]) for x in rows}
    assert rows[[x["picked"] for x in rows].index("yes")]["trial"] == min(scores, key=scores.get)  # entropy: lower
    assert rows[0]["overrides"] == "method=source_only" and "method.adv_weight=" in rows[2]["overrides"]
    md = (tmp_path / "report.md").read_text()
    assert "## Tuning study: dann on synthetic" in md and "regret" in md
    assert list(tmp_path.glob("tune_*.png"))


SEEDS_STUDY = [*SMALL, "method=dann", "trainer.max_steps=4", "trainer.eval_every=2", "trainer.threads=1", "trials=1",
               "seed=5"]


def test_several_seeds_per_candidate_are_scored_and_reported_by_their_mean(tmp_path):
    """``tune.seeds=2`` with the command's seed 5: source-only and the trial each run seeds 5 and 6 in
    ``<name>/seed_<s>``; the study's score (Optuna's value) and the report's are the mean of the two runs'
    criterion, the report's target metric the mean of their target accuracies; run again, nothing trains;
    the same directory without ``tune.seeds`` is another command, refused."""
    optuna = pytest.importorskip("optuna")
    d = tmp_path / "study"
    r = run_cli("tune", *SEEDS_STUDY, "tune.seeds=2", f"hydra.sweep.dir={d}", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "the mean over seeds 5, 6" in r.stdout
    for name in ("source_only", "trial_000"):
        assert sorted(p.name for p in (d / name).iterdir()) == ["seed_5", "seed_6"]
        for s in (5, 6):
            assert json.loads((d / name / f"seed_{s}" / "summary.json").read_text())["seed"] == s
    spec = json.loads((d / tune_plan.SPEC).read_text())
    assert spec["seeds"] == [5, 6]
    per_seed = {name: [tune_study.objective(d / name / f"seed_{s}", spec["key"]) for s in (5, 6)]
                for name in ("source_only", "trial_000")}
    assert per_seed["trial_000"][0] != per_seed["trial_000"][1]  # so that the mean differs from either
    storage = f"sqlite:///{d / 'study.db'}"
    (summary,) = optuna.get_all_study_summaries(storage)
    (trial,) = optuna.load_study(study_name=summary.study_name, storage=storage).trials
    assert trial.value == pytest.approx(sum(per_seed["trial_000"]) / 2, rel=1e-9)

    again = cli("tune", *SEEDS_STUDY, "tune.seeds=2", f"hydra.sweep.dir={d}")  # finished: nothing trains
    assert again.returncode == 0 and "continuing" not in again.stdout, again.stdout + again.stderr
    assert [_commands(d / "logs" / f"{name}.log") for name in ("source_only", "trial_000")] == [2, 2]
    one = cli("tune", *SEEDS_STUDY, f"hydra.sweep.dir={d}")
    assert one.returncode == 2 and "holds a study of another command (seeds: [5, 6], not None)" in one.stderr

    out = tmp_path / "report"
    rep = cli("report", str(d), "--out", str(out))
    assert rep.returncode == 0, rep.stderr
    rows = {x["trial"]: x for x in csv.DictReader(open(out / "tune.csv"))}
    for name, scores in per_seed.items():
        summaries = [json.loads((d / name / f"seed_{s}" / "summary.json").read_text()) for s in (5, 6)]
        assert float(rows[name]["score"]) == pytest.approx(sum(scores) / 2, abs=1e-6)
        assert float(rows[name]["target_acc"]) == pytest.approx(sum(x["target_acc"] for x in summaries) / 2,
                                                                abs=1e-4)
    assert rows["trial_000"]["overrides"] == "method.adv_weight=1.0"  # the seeds are not the trial's own setting
    md = (out / "report.md").read_text()
    assert "the mean over seeds 5, 6" in md
    a, b = (json.loads((d / "trial_000" / f"seed_{s}" / "summary.json").read_text())["target_acc"] for s in (5, 6))
    assert f"| {(a + b) / 2:.2f} ({a:.2f}, {b:.2f}) |" in md  # each seed's beside the mean


def test_a_candidate_taken_over_between_its_seeds_is_left_to_the_new_owner(tmp_path, monkeypatch):
    """Another worker takes the trial over while its first seed finishes: this worker does not start the
    second seed (the new owner's), and tells the study nothing of the trial."""
    pytest.importorskip("optuna")
    p = tune_plan.plan(tune_plan.parse_args([*SMALL, "method=dann", "trials=1", "tune.seeds=2",
                                             f"hydra.sweep.dir={tmp_path}"]))
    trained = []

    def train(run_dir, overrides, log, mine=None):
        trained.append(f"{run_dir.parent.name}/{run_dir.name}")
        if run_dir.parent.name == "trial_000":  # taken over as its first seed ends
            _claim_as(tmp_path, "trial_000", 1, REMOTE)
        return _finished(run_dir, p.key)

    monkeypatch.setattr(tune_study, "train", train)
    result = tune_study.run(p)
    assert trained == ["source_only/seed_0", "source_only/seed_1", "trial_000/seed_0"]
    assert result["scores"] == {"source_only": 0.5}  # trial 0 still RUNNING: its new owner finishes it


def test_workers_through_a_hydra_launcher(tmp_path):
    """tune.workers=2 on Hydra's basic launcher: the workers run one after the other against the one study;
    the first does every trial, the second finds the study complete."""
    pytest.importorskip("optuna")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    d = tmp_path / "study"
    r = subprocess.run([sys.executable, "-m", "uda.cli", "tune", *SMALL, "method=dann", "trainer.threads=1",
                        "trials=1", "tune.workers=2", "hydra/launcher=basic", f"hydra.sweep.dir={d}"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(p.name for p in (d / "workers").iterdir() if p.is_dir()) == ["0", "1"]
    assert sorted(p.name for p in d.glob("trial_*")) == ["trial_000"]
    assert _commands(d / "logs" / "trial_000.log") == 1 and _commands(d / "logs" / "source_only.log") == 1
    assert r.stdout.count("picked") == 2
    assert "share the SQLite file" not in r.stdout  # the basic launcher runs them here, one after the other


@pytest.mark.parametrize("extra, warned", [
    (["hydra/launcher=submitit_slurm"], True),
    (["hydra/launcher=submitit_slurm", "tune.storage=postgresql://db/uda"], False),
    (["hydra/launcher=basic"], False),
])
def test_workers_on_a_cluster_are_told_to_share_an_rdb_not_the_sqlite_file(tmp_path, extra, warned):
    args = tune_plan.parse_args([*SMALL, "method=dann", "tune.workers=2", *extra, f"hydra.sweep.dir={tmp_path}"])
    assert tune_study.shared_sqlite(tune_plan.plan(args)) is warned
