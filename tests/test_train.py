"""End-to-end runs of the shared loop: outputs, resume bit-identity, interruption, CLI, sweeps."""
import contextlib
import json
import os
import signal
import time

import pytest
import torch

from uda.config import ConfigError
from uda.engine import checkpoint as ckpt
from uda.engine.loop import TrainingInterrupted, train

from conftest import KILL_ARGS, SMALL, make_cfg, run_cli, spawn_train, state_equal


@pytest.fixture(autouse=True)
def _data(mnist_root):
    return mnist_root


def test_run_writes_everything_a_report_or_resume_needs(tmp_path):
    summary = train(make_cfg(*SMALL), tmp_path)
    for key in ("method", "data", "seed", "steps", "source_acc", "target_acc", "wall_s", "images_per_s", "versions"):
        assert key in summary
    assert summary["method"] == "dann" and summary["steps"] == 6
    assert set(summary["versions"]) >= {"torch", "torchvision", "uda"}
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [3, 6]
    assert all(0 <= x["target_acc"] <= 100 for x in lines)
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    state = ckpt.load(tmp_path / "checkpoints" / "last.pt")  # weights_only=True
    assert state["step"] == 6 and set(state["optimizers"]) == {"feat", "cls", "disc"}
    assert state["config"]["method"]["name"] == "dann"


def test_tensorboard_has_every_curve(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(make_cfg(*SMALL), tmp_path)
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert tags >= {"loss/cls", "loss/domain", "acc/domain", "sched/grl_lambda", "lr/feat", "lr/disc",
                    "eval/source_acc", "eval/target_acc", "perf/images_per_s"}
    lam = [e.value for e in acc.Scalars("sched/grl_lambda")]
    assert lam == sorted(lam) and lam[0] < lam[-1]
    lr = [e.value for e in acc.Scalars("lr/feat")]
    assert lr == sorted(lr, reverse=True) and lr[0] < 0.01


@pytest.mark.parametrize("method", ["dann", "source_only"])
def test_interrupted_and_resumed_run_is_bit_identical(tmp_path, method):
    cfg = make_cfg(*SMALL, f"method={method}")
    full = train(cfg, tmp_path / "full")
    with pytest.raises(TrainingInterrupted) as e:
        train(cfg, tmp_path / "cut", stop_after=4)  # between two periodic checkpoints
    assert e.value.step == 4
    assert ckpt.load(tmp_path / "cut" / "checkpoints" / "last.pt")["step"] == 4
    resumed = train(make_cfg(*SMALL, f"method={method}", "resume=true"), tmp_path / "cut")
    a = ckpt.load(tmp_path / "full" / "checkpoints" / "last.pt")
    b = ckpt.load(tmp_path / "cut" / "checkpoints" / "last.pt")
    assert state_equal(a["method"], b["method"])
    assert a["optimizers"]["feat"]["state"].keys() == b["optimizers"]["feat"]["state"].keys()
    for k, s in a["optimizers"]["feat"]["state"].items():
        assert torch.equal(s["momentum_buffer"], b["optimizers"]["feat"]["state"][k]["momentum_buffer"])
    assert resumed["target_acc"] == full["target_acc"]
    steps = [json.loads(x)["step"] for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [3, 6]


def test_resume_guards(tmp_path):
    with pytest.raises(ConfigError, match="no checkpoint"):
        train(make_cfg(*SMALL, "resume=true"), tmp_path)
    train(make_cfg(*SMALL), tmp_path)
    with pytest.raises(ConfigError, match="resume=true"):
        train(make_cfg(*SMALL), tmp_path)  # never overwrite a finished run by accident


def test_cli_end_to_end_few_steps(tmp_path):
    res = run_cli("train", *SMALL, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "target_acc=" in res.stdout
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["data"] == "mnist_mnistm"
    assert (tmp_path / "run" / ".hydra" / "config.yaml").is_file()


def test_cli_multirun_gives_each_run_its_own_directory(tmp_path):
    small = [o for o in SMALL if not o.startswith("trainer.max_steps")]
    res = run_cli("train", "-m", "method=source_only,dann", "seed=0", "trainer.max_steps=2", *small,
                  f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    runs = sorted(p.parent.name for p in (tmp_path / "sweep").glob("*/summary.json"))
    assert runs == ["0_source_only_seed0", "1_dann_seed0"]


def test_sweep_rerun_skips_finished_runs_and_resumes_unfinished_ones(tmp_path):
    small = [o for o in SMALL if not o.startswith("trainer.max_steps")]
    args = ["train", "-m", "method=source_only,dann", "seed=0", "trainer.max_steps=2", *small,
            f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    assert run_cli(*args, cwd=tmp_path).returncode == 0
    done0, done1 = (tmp_path / "sweep" / n / "summary.json" for n in ("0_source_only_seed0", "1_dann_seed0"))
    first0, first1 = done0.read_text(), done1.read_text()
    done1.unlink()  # run 1 as if killed after its last checkpoint, before its summary
    res = run_cli(*args, "resume=auto", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.count("target_acc=") == 2
    assert done0.read_text() == first0  # not trained again: the summary (with its wall time) is untouched
    log0 = (done0.parent / "train.log").read_text()
    assert "already finished" in log0
    again = json.loads(done1.read_text())
    assert again["target_acc"] == json.loads(first1)["target_acc"]  # resumed the finished checkpoint
    assert "resumed from" in (done1.parent / "train.log").read_text()
    # the same sweep directory with other settings is refused, naming the difference
    res = run_cli(*[a.replace("trainer.max_steps=2", "trainer.max_steps=3") for a in args], cwd=tmp_path)
    assert res.returncode == 2 and "trainer.max_steps" in res.stderr and "hydra.sweep.dir" in res.stderr, res.stderr


def _wait_for_checkpoint(path, proc, min_step, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        if path.exists():
            with contextlib.suppress(Exception):  # the file may be mid-rename: look again shortly
                if ckpt.load(path)["step"] >= min_step:
                    return
        time.sleep(0.2)
    raise AssertionError("no checkpoint appeared")


@pytest.mark.parametrize("sig, status", [(signal.SIGKILL, -9), (signal.SIGINT, 130), (signal.SIGTERM, 143),
                                         (signal.SIGUSR1, 138)])
def test_killed_cli_run_resumes_to_the_uninterrupted_result(tmp_path, uninterrupted, sig, status):
    """kill -9 loses the current step; Ctrl-C, SIGTERM and SIGUSR1 (SLURM preemption) checkpoint and
    exit with their own status. Either way the resumed run ends bit-identical to an uninterrupted one."""
    run = tmp_path / "cut"
    proc = spawn_train(*KILL_ARGS, run_dir=run, cwd=tmp_path)
    _wait_for_checkpoint(run / "checkpoints" / "last.pt", proc, min_step=3)
    proc.send_signal(sig)
    proc.wait(timeout=120)
    assert proc.returncode == status
    if sig != signal.SIGKILL:
        assert "resume=true" in proc.stderr.read()
    stopped = ckpt.load_latest(run / "checkpoints")[0]["step"]
    assert 3 <= stopped < 40
    res = run_cli("train", *KILL_ARGS, "resume=true", f"hydra.run.dir={run}", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    b = ckpt.load(run / "checkpoints" / "last.pt")
    assert b["step"] == 40 and state_equal(uninterrupted["method"], b["method"])


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_runs_on_cpu(tmp_path, precision):
    """The AMP paths (bf16 autocast; fp16 autocast with gradient scaling) train and stay finite."""
    summary = train(make_cfg(*SMALL, f"trainer.precision={precision}", "trainer.channels_last=true"), tmp_path)
    assert summary["precision"] == precision
    state = ckpt.load(tmp_path / "checkpoints" / "last.pt")
    assert all(torch.isfinite(v).all() for v in state["method"].values())
    if precision == "fp16":
        assert state["scaler"]["scale"] > 0  # the scaler's state is part of the checkpoint


@pytest.mark.parametrize("method", ["dann", "adda", "dsn"])
def test_target_labels_never_reach_update(tmp_path, monkeypatch, method):
    from uda.registry import get_method

    cls = get_method(method)
    seen = []
    original = cls.update

    def spy(self, src, tgt, step, opt):
        seen.append((src.y is not None, tgt.y))
        return original(self, src, tgt, step, opt)

    monkeypatch.setattr(cls, "update", spy)
    extra = {"adda": ["method.pretrain_steps=2"], "dsn": ["method.adapt_start=2"], "dann": []}[method]
    train(make_cfg(*SMALL, f"method={method}", *extra), tmp_path)
    assert len(seen) == 6 and all(has_src_labels and tgt_y is None for has_src_labels, tgt_y in seen)


def test_sigusr2_checkpoints_then_hands_over_to_the_previous_handler(tmp_path, monkeypatch):
    """submitit's SIGUSR2 handler (requeue before the SLURM time limit) runs only after our checkpoint."""
    from uda.registry import get_method

    class Requeued(Exception):
        pass

    seen = []

    def submitit_like(signum, frame):
        seen.append(ckpt.load(tmp_path / "checkpoints" / "last.pt")["step"])
        raise Requeued

    cls = get_method("dann")
    original = cls.update

    def update(self, src, tgt, step, opt):
        if step == 3:
            os.kill(os.getpid(), signal.SIGUSR2)
        return original(self, src, tgt, step, opt)

    monkeypatch.setattr(cls, "update", update)
    previous = signal.signal(signal.SIGUSR2, submitit_like)
    try:
        with pytest.raises(Requeued):
            train(make_cfg(*SMALL, "method=dann", "trainer.max_steps=20", "trainer.checkpoint_every=10"), tmp_path)
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert seen == [4]  # step index 3 is the 4th step: checkpointed there, off the checkpoint_every grid


def test_sweep_through_the_submitit_launcher_and_its_rerun(tmp_path):
    """Hydra's submitit launcher (local executor: the SLURM one's code path without a cluster)."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    small = [o for o in SMALL if not o.startswith("trainer.max_steps")]
    args = ["train", "-m", "hydra/launcher=submitit_local", "seed=0,1", "trainer.max_steps=2", *small,
            f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    res = run_cli(*args, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    done = sorted((tmp_path / "sweep").glob("*/summary.json"))
    assert [p.parent.name for p in done] == ["0_dann_seed0", "1_dann_seed1"]
    before = [p.read_text() for p in done]
    res = run_cli(*args, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert [p.read_text() for p in done] == before  # the re-run skipped both finished runs
    assert all("already finished" in (p.parent / "train.log").read_text() for p in done)


def test_the_slurm_launcher_config_composes_with_requeue_on_timeout(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    res = run_cli("train", "hydra/launcher=slurm", "hydra.launcher.partition=gpu", "--cfg", "hydra",
                  "--package", "hydra.launcher", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "SlurmLauncher" in res.stdout and "max_num_timeout: 3" in res.stdout and "partition: gpu" in res.stdout


def test_a_launcher_whose_plugin_is_missing_names_the_extra(monkeypatch, capsys):
    import importlib.util

    from uda import cli

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SystemExit) as e:
        cli._check_launcher(["seed=0,1", "hydra/launcher=slurm"])
    assert e.value.code == 2 and '.[slurm]' in capsys.readouterr().err
    cli._check_launcher(["hydra/launcher=basic"])  # Hydra's own launchers need nothing
