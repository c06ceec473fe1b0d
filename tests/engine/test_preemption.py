"""Killed and signalled runs: kill -9 at any moment (even mid-write), Ctrl-C, SIGTERM and SIGUSR1 checkpoint
and exit with their own status, and the resumed run ends bit-identical to an uninterrupted one; SIGUSR2
(submitit's requeue) is handed on only after the checkpoint is written."""
import contextlib
import os
import random
import signal
import time

import pytest

from helpers import KILL_ARGS, SMALL, make_cfg, run_cli, spawn_train, state_equal
from uda.engine import checkpoint as ckpt
from uda.engine.loop import train
from uda.methods import get_method


def _kill_and_resume(tmp_path, reference, delay: float):
    run = tmp_path / "run"
    proc = spawn_train(*KILL_ARGS, run_dir=run, cwd=tmp_path)
    deadline = time.time() + 120
    while not (run / "checkpoints" / "manifest.json").exists():  # the first write has begun
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        assert time.time() < deadline, "no checkpoint write began"
        time.sleep(0.01)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    res = run_cli("train", *KILL_ARGS, "resume=auto", f"hydra.run.dir={run}", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    final = ckpt.load(run / "checkpoints" / "last.pt")
    assert final["step"] == 40 and state_equal(final["method"], reference["method"])


@pytest.mark.slow  # a killed CLI run per case, then its resume
@pytest.mark.parametrize("delay", [0.0, 0.3])
def test_sigkill_during_training_and_writes_then_resume_matches(tmp_path, uninterrupted, delay):
    """kill -9 right as checkpoint writing starts, and later mid-run (checkpoint every step)."""
    _kill_and_resume(tmp_path, uninterrupted, delay)


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(20))
def test_sigkill_at_random_points_many_times(tmp_path, uninterrupted, trial):
    _kill_and_resume(tmp_path, uninterrupted, random.Random(trial).uniform(0.0, 1.5))


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


@pytest.mark.slow  # a killed CLI run per case, then its resume
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


def test_sigusr2_checkpoints_then_hands_over_to_the_previous_handler(tmp_path, monkeypatch):
    """submitit's SIGUSR2 handler (requeue before the SLURM time limit) runs only after our checkpoint."""
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
