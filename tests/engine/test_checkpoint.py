"""Checkpoint files: the previous one survives a write, a damaged one falls back to it with a warning
naming both, a pickled object is refused, a crash or a full disk at any point of a write leaves a loadable
checkpoint; and the loop's resume falls back the same way, and refuses a checkpoint of another network."""
import errno
import json
import logging
import os

import pytest
import torch

from helpers import SMALL, make_cfg
from uda.engine import checkpoint as ckpt
from uda.engine.loop import train


def _state(step: int) -> dict:
    g = torch.Generator().manual_seed(step)
    return {"step": step, "method": {"w": torch.randn(64, 64, generator=g)}}


class NotATensor:  # a pickled object weights_only loading must refuse
    def __init__(self):
        self.payload = "os.system('echo pwned')"


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
    with pytest.raises(ckpt.CheckpointError, match="refused") as e:
        ckpt.load(tmp_path / "last.pt")
    # one plain line of ours, naming what it refused (torch's own runs to paragraphs with terminal escapes)
    assert str(e.value) == (
        f"{tmp_path / 'last.pt'}: refused: it holds objects other than tensors and plain "
        f"containers (such as {NotATensor.__module__}.NotATensor), and uda loads weights only, never code "
        f"from a file"
    )


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


def test_resume_falls_back_to_prev_when_last_is_corrupt(tmp_path, caplog):
    train(make_cfg(*SMALL), tmp_path)  # checkpoints at 3 and 6
    last = tmp_path / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    with caplog.at_level(logging.WARNING, logger="uda"):
        res = train(make_cfg(*SMALL, "resume=true"), tmp_path)
    assert "falling back" in caplog.text and "prev.pt" in caplog.text
    assert res["steps"] == 6
    assert [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [3, 6]


def test_resuming_with_an_incompatible_architecture_is_one_clear_error(tmp_path):
    train(make_cfg(*SMALL), tmp_path)
    with pytest.raises(ckpt.CheckpointError, match="does not fit this config"):
        train(make_cfg(*SMALL, "resume=true", "trainer.max_steps=9", "backbone.cls_hidden=[50,50]"), tmp_path)


def test_resume_trims_metrics_in_one_rename_and_drops_a_line_cut_short_by_a_kill(tmp_path, monkeypatch):
    from uda.engine import state

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 10, "a": 1}\n{"step": 20, "a": 2}\n{"step": 30, "a": 3}\n{"step": 4')
    written = []
    monkeypatch.setattr(state, "write_text_atomic", lambda text, p: written.append(p) or p.write_text(text))
    state.trim_metrics(path, 20)
    assert written == [path]
    assert [json.loads(ln)["step"] for ln in path.read_text().splitlines()] == [10, 20]
