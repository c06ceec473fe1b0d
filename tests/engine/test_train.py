"""End-to-end runs of the trainer: what a run writes, TensorBoard's curves, bit-identical resume, the resume
guards, mixed precision on CPU, and target labels never reaching a method's update."""
import json
import logging

import pytest
import torch

from helpers import SMALL, make_cfg
from uda.engine import checkpoint as ckpt
from uda.engine.loop import train
from uda.methods import get_method
from uda.schema import ConfigError


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


def test_resume_guards(tmp_path):
    with pytest.raises(ConfigError, match="no checkpoint"):
        train(make_cfg(*SMALL, "resume=true"), tmp_path)
    train(make_cfg(*SMALL), tmp_path)
    with pytest.raises(ConfigError, match="resume=true"):
        train(make_cfg(*SMALL), tmp_path)  # never overwrite a finished run by accident


def test_resume_auto_starts_fresh_when_there_is_no_checkpoint(tmp_path, caplog):
    with pytest.raises(ConfigError, match="resume=auto"):
        train(make_cfg(*SMALL, "resume=true"), tmp_path / "a")
    with caplog.at_level(logging.INFO, logger="uda"):
        first = train(make_cfg(*SMALL, "resume=auto"), tmp_path / "a")
    assert "starting fresh" in caplog.text and first["steps"] == 6


def test_resuming_with_changed_settings_warns_naming_each_change(tmp_path, caplog):
    train(make_cfg(*SMALL), tmp_path / "a")
    with caplog.at_level(logging.WARNING, logger="uda"):
        more = train(make_cfg(*SMALL, "resume=auto", "trainer.max_steps=9", "optimizer.lr=0.02"), tmp_path / "a")
    assert "trainer.max_steps: 6 -> 9" in caplog.text and "optimizer.lr: 0.01 -> 0.02" in caplog.text
    assert more["steps"] == 9 and ckpt.load(tmp_path / "a" / "checkpoints" / "last.pt")["step"] == 9


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_runs_on_cpu(tmp_path, precision):
    """The AMP paths (bf16 autocast; fp16 autocast with gradient scaling) train and stay finite."""
    summary = train(make_cfg(*SMALL, f"trainer.precision={precision}", "trainer.channels_last=true"), tmp_path)
    assert summary["precision"] == precision
    state = ckpt.load(tmp_path / "checkpoints" / "last.pt")
    assert all(torch.isfinite(v).all() for v in state["method"].values())
    if precision == "fp16":
        assert state["scaler"]["scale"] > 0  # the scaler's state is part of the checkpoint
        assert summary["loss_scale"] == state["scaler"]["scale"] and summary["skipped_updates"] >= 0
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        acc = EventAccumulator(str(tmp_path / "tb"))
        acc.Reload()
        assert [e.step for e in acc.Scalars("amp/loss_scale")] == [2, 4, 6]
    else:
        assert summary["loss_scale"] is None


@pytest.mark.parametrize("method", ["dann", "adda", "dsn"])
def test_target_labels_never_reach_update(tmp_path, monkeypatch, method):
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
