"""What stops a run before it does harm: an unwritable or full output directory (before training), and
non-finite losses: skipped and logged with the term's name, the stop policies, the fp16 scaler's back-off."""
import logging

import pytest
import torch

from helpers import SMALL, make_cfg
from uda.engine import checkpoint as ckpt
from uda.engine.loop import NonFiniteLoss, train
from uda.engine.runtime import Stepper
from uda.schema import ConfigError


def test_unwritable_output_directory_fails_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match="not writable"):
        train(make_cfg(*SMALL), blocker / "run")


def test_too_little_free_space_fails_before_training(tmp_path, monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10 << 20, 10 << 20, 1 << 20))
    with pytest.raises(ConfigError, match="not enough free space"):
        train(make_cfg(*SMALL), tmp_path)
    assert not (tmp_path / "checkpoints").exists()


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


def test_nonfinite_steps_are_skipped_and_logged(tmp_path, monkeypatch, caplog):
    _nan_domain_loss(monkeypatch, {1, 4})
    with caplog.at_level(logging.WARNING, logger="uda"):
        res = train(make_cfg(*SMALL, "trainer.nonfinite_patience=2"), tmp_path)
    assert res["steps"] == 6
    assert "step 2: non-finite loss/domain" in caplog.text and "step 5: non-finite" in caplog.text
    state = ckpt.load(tmp_path / "checkpoints" / "last.pt")
    assert all(torch.isfinite(v).all() for v in state["method"].values() if v.is_floating_point())


@pytest.mark.parametrize("policy, bad, stop_step", [("skip", set(range(2, 6)), 5), ("stop", {3}, 4)])
def test_nonfinite_policy_stops_naming_the_loss_term(tmp_path, monkeypatch, policy, bad, stop_step):
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
