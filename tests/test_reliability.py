"""Preemption, corruption, non-finite losses, full disks and bad input lose nothing (issue 10)."""
import errno
import json
import logging
import os
import random
import signal
import time

import pytest
import torch

from uda.config import ConfigError
from uda.engine import checkpoint as ckpt
from uda.engine.loop import NonFiniteLoss, train
from uda.engine.optim import Stepper

from conftest import KILL_ARGS, SMALL, make_cfg, run_cli, spawn_train, state_equal


def _state(step: int) -> dict:
    g = torch.Generator().manual_seed(step)
    return {"step": step, "method": {"w": torch.randn(64, 64, generator=g)}}


class NotATensor:  # a pickled object weights_only loading must refuse
    def __init__(self):
        self.payload = "os.system('echo pwned')"


# --- checkpoint files --------------------------------------------------------------------------

def test_save_keeps_the_previous_checkpoint(tmp_path):
    for step in (1, 2, 3):
        ckpt.save_atomic(_state(step), tmp_path / "last.pt")
    assert ckpt.load(tmp_path / "last.pt")["step"] == 3
    assert ckpt.load(tmp_path / "prev.pt")["step"] == 2
    state, used = ckpt.load_latest(tmp_path)
    assert state["step"] == 3 and used.name == "last.pt"
    assert not list(tmp_path.glob(".*tmp*"))


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty"])
def test_damaged_last_falls_back_to_prev_with_a_warning_naming_both(tmp_path, caplog, damage):
    for step in (1, 2):
        ckpt.save_atomic(_state(step), tmp_path / "last.pt")
    data = bytearray((tmp_path / "last.pt").read_bytes())
    if damage == "flip":  # inside the tensor data: the zip container still parses, the checksum does not
        data[len(data) // 2] ^= 0xFF
    elif damage == "truncate":
        data = data[: len(data) // 3]
    else:
        data = b""
    (tmp_path / "last.pt").write_bytes(bytes(data))
    with pytest.raises(ckpt.CheckpointError, match="last.pt"):
        ckpt.load(tmp_path / "last.pt")
    with caplog.at_level(logging.WARNING, logger="uda"):
        state, used = ckpt.load_latest(tmp_path)
    assert state["step"] == 1 and used.name == "prev.pt"
    assert "last.pt" in caplog.text and "prev.pt" in caplog.text


def test_no_loadable_checkpoint_is_one_clear_error(tmp_path):
    for step in (1, 2):
        ckpt.save_atomic(_state(step), tmp_path / "last.pt")
    for name in ("last.pt", "prev.pt"):
        (tmp_path / name).write_bytes((tmp_path / name).read_bytes()[:100])
    with pytest.raises(ckpt.CheckpointError, match="no usable checkpoint") as e:
        ckpt.load_latest(tmp_path)
    assert "last.pt" in str(e.value) and "prev.pt" in str(e.value) and "checksum" in str(e.value)


def test_checkpoint_holding_a_pickled_object_is_refused(tmp_path):
    ckpt.save_atomic({"step": 1, "method": {}, "evil": NotATensor()}, tmp_path / "last.pt")
    with pytest.raises(ckpt.CheckpointError, match="refused"):
        ckpt.load(tmp_path / "last.pt")


@pytest.mark.parametrize("crash_at", range(7))
def test_a_crash_at_any_point_of_a_write_leaves_a_loadable_checkpoint(tmp_path, monkeypatch, crash_at):
    """Die (no cleanup, like kill -9) at each rename/fsync of the third save."""
    for step in (1, 2):
        ckpt.save_atomic(_state(step), tmp_path / "last.pt")
    calls = {"n": 0}

    class Killed(BaseException):
        """Stands for the process dying mid-write."""

    def dying(real):
        def f(*a, **k):
            if calls["n"] == crash_at:
                raise Killed
            calls["n"] += 1
            return real(*a, **k)
        return f

    monkeypatch.setattr(ckpt.os, "replace", dying(os.replace))
    monkeypatch.setattr(ckpt.os, "fsync", dying(os.fsync))
    with pytest.raises(Killed):
        ckpt.save_atomic(_state(3), tmp_path / "last.pt")
    monkeypatch.undo()
    state, _ = ckpt.load_latest(tmp_path)
    assert state["step"] in (2, 3)


def test_disk_full_during_a_write_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    ckpt.save_atomic(_state(1), tmp_path / "last.pt")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt.os, "fsync", full)
    with pytest.raises(ckpt.CheckpointError, match="no space left on device.*last.pt.*intact"):
        ckpt.save_atomic(_state(2), tmp_path / "last.pt")
    monkeypatch.undo()
    assert ckpt.load(tmp_path / "last.pt")["step"] == 1
    assert not list(tmp_path.glob(".*tmp*"))


# --- the loop ----------------------------------------------------------------------------------

@pytest.fixture()
def data(mnist_root):
    return mnist_root


def test_unwritable_output_directory_fails_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match="not writable"):
        train(make_cfg(*SMALL), blocker / "run")


def test_too_little_free_space_fails_before_training(tmp_path, monkeypatch, data):
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10 << 20, 10 << 20, 1 << 20))
    with pytest.raises(ConfigError, match="not enough free space"):
        train(make_cfg(*SMALL), tmp_path)
    assert not (tmp_path / "checkpoints").exists()


def test_resume_warns_about_changed_settings_and_auto_starts_fresh(tmp_path, caplog, data):
    with pytest.raises(ConfigError, match="resume=auto"):
        train(make_cfg(*SMALL, "resume=true"), tmp_path / "a")
    with caplog.at_level(logging.INFO, logger="uda"):
        first = train(make_cfg(*SMALL, "resume=auto"), tmp_path / "a")
    assert "starting fresh" in caplog.text and first["steps"] == 6
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="uda"):
        more = train(make_cfg(*SMALL, "resume=auto", "trainer.max_steps=9", "optimizer.lr=0.02"), tmp_path / "a")
    assert "trainer.max_steps: 6 -> 9" in caplog.text and "optimizer.lr: 0.01 -> 0.02" in caplog.text
    assert more["steps"] == 9 and ckpt.load(tmp_path / "a" / "checkpoints" / "last.pt")["step"] == 9


def test_resume_falls_back_to_prev_when_last_is_corrupt(tmp_path, caplog, data):
    train(make_cfg(*SMALL), tmp_path)  # checkpoints at 3 and 6
    last = tmp_path / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    with caplog.at_level(logging.WARNING, logger="uda"):
        res = train(make_cfg(*SMALL, "resume=true"), tmp_path)
    assert "falling back" in caplog.text and "prev.pt" in caplog.text
    assert res["steps"] == 6
    assert [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [3, 6]


def test_resuming_with_an_incompatible_architecture_is_one_clear_error(tmp_path, data):
    train(make_cfg(*SMALL), tmp_path)
    with pytest.raises(ckpt.CheckpointError, match="does not fit this config"):
        train(make_cfg(*SMALL, "resume=true", "trainer.max_steps=9", "backbone.cls_hidden=[50,50]"), tmp_path)


def _nan_domain_loss(monkeypatch, bad_steps):
    """Make DANN's domain loss NaN on the given (0-based) steps."""
    import uda.methods.dann as dann

    real = dann.DANN.update

    def update(self, src, tgt, step, opt):
        if step in bad_steps:
            real_bce = dann.domain_bce
            monkeypatch.setattr(dann, "domain_bce", lambda *a: real_bce(*a) * float("nan"))
            try:
                return real(self, src, tgt, step, opt)
            finally:
                monkeypatch.setattr(dann, "domain_bce", real_bce)
        return real(self, src, tgt, step, opt)

    monkeypatch.setattr(dann.DANN, "update", update)


def test_nonfinite_steps_are_skipped_and_logged(tmp_path, monkeypatch, caplog, data):
    _nan_domain_loss(monkeypatch, {1, 4})
    with caplog.at_level(logging.WARNING, logger="uda"):
        res = train(make_cfg(*SMALL, "trainer.nonfinite_patience=2"), tmp_path)
    assert res["steps"] == 6
    assert "step 2: non-finite loss/domain" in caplog.text and "step 5: non-finite" in caplog.text
    state = ckpt.load(tmp_path / "checkpoints" / "last.pt")
    assert all(torch.isfinite(v).all() for v in state["method"].values() if v.is_floating_point())


@pytest.mark.parametrize("policy, bad, stop_step", [("skip", set(range(2, 6)), 5), ("stop", {3}, 4)])
def test_nonfinite_policy_stops_naming_the_loss_term(tmp_path, monkeypatch, data, policy, bad, stop_step):
    _nan_domain_loss(monkeypatch, bad)
    cfg = make_cfg(*SMALL, f"trainer.nonfinite={policy}", "trainer.nonfinite_patience=3")
    with pytest.raises(NonFiniteLoss, match=f"step {stop_step} in loss/domain") as e:
        train(cfg, tmp_path)
    assert "step 3" in str(e.value)  # the checkpoint that is still there
    assert ckpt.load(tmp_path / "checkpoints" / "last.pt")["step"] == 3


def test_stepper_skips_a_nonfinite_update_and_fp16_scaler_backs_off():
    net = torch.nn.Linear(3, 1)
    before = [p.detach().clone() for p in net.parameters()]
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    stepper = Stepper({"net": opt}, scaler, "cpu")
    stepper.begin_iteration()
    stepper.step(net(torch.ones(2, 3)).sum() * float("inf"), "net")
    stepper.end_iteration()
    assert stepper.skipped == 1
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))
    assert scaler.get_scale() == 512.0
    stepper.begin_iteration()
    stepper.step(net(torch.ones(2, 3)).sum(), "net")
    stepper.end_iteration()
    assert stepper.skipped == 0 and not torch.equal(before[0], net.weight)


# --- killed processes --------------------------------------------------------------------------

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


@pytest.mark.parametrize("delay", [0.0, 0.3])
def test_sigkill_during_training_and_writes_then_resume_matches(tmp_path, uninterrupted, delay):
    """kill -9 right as checkpoint writing starts, and later mid-run (checkpoint every step)."""
    _kill_and_resume(tmp_path, uninterrupted, delay)


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(20))
def test_sigkill_at_random_points_many_times(tmp_path, uninterrupted, trial):
    _kill_and_resume(tmp_path, uninterrupted, random.Random(trial).uniform(0.0, 1.5))
