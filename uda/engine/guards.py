"""What stops a run before it can do harm: an unwritable or full output directory (checked before
training), non-finite losses (``trainer.nonfinite``), ranks that disagree, and errors on rank 0 alone."""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import torch

from uda.engine import dist
from uda.schema import ConfigError, NonFinite, TrainerConfig, UserError

log = logging.getLogger("uda")


class NonFiniteLoss(UserError):
    """Training produced non-finite losses (``trainer.nonfinite``); the last checkpoint is untouched."""

    exit_code = 3


def on_main(fn, *args) -> None:
    """Run ``fn`` on rank 0 only; a UserError it raises is raised on every rank (none waits forever)."""
    err = None
    if dist.is_main():
        try:
            fn(*args)
        except UserError as e:
            err = e
    err = dist.broadcast_object(err)
    if err is not None:
        raise err


def check_writable(run_dir: Path) -> None:
    """Fail before training when the output directory cannot be created or written."""
    probe = run_dir / f".write_probe{os.getpid()}"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"output directory {run_dir} is not writable ({e.strerror or e}); "
                          f"choose another with hydra.run.dir=...") from e


def check_free_space(run_dir: Path, method: torch.nn.Module) -> None:
    """Enough room for the checkpoints (a temporary file, last.pt and prev.pt)?"""
    weights = sum(t.numel() * t.element_size() for t in method.state_dict().values())
    need = 3 * 3 * weights + (16 << 20)  # weights + up to two optimizer moments, three files; + logs
    free = shutil.disk_usage(run_dir).free
    if free < need:
        raise ConfigError(f"not enough free space in {run_dir}: checkpoints need about {need >> 20} MiB, "
                          f"{free >> 20} MiB free")


class NonFiniteGuard:
    """``trainer.nonfinite``: a skipped update (the Stepper's) is logged with the loss terms that were not
    finite; ``stop`` stops at the first, ``skip`` after ``nonfinite_patience`` in a row (NonFiniteLoss)."""

    def __init__(self, tr: TrainerConfig, ckpt_dir: Path):
        self.tr, self.ckpt_dir = tr, ckpt_dir
        self.in_a_row, self.total, self.longest = 0, 0, 0

    def after_update(self, step: int, skipped: bool, out: dict[str, torch.Tensor], writer, saved: int | None) -> bool:
        """True when the update went through; else logs it and raises NonFiniteLoss if the policy says stop.
        ``saved``: the step of the newest checkpoint on disk (None: none yet)."""
        if not skipped:
            self.in_a_row = 0
            return True
        self.in_a_row, self.total = self.in_a_row + 1, self.total + 1
        self.longest = max(self.longest, self.in_a_row)
        terms = [k for k, v in out.items() if not bool(torch.isfinite(v).all())] or ["(unlogged term)"]
        log.warning("step %d: non-finite %s; update skipped (%d in a row)", step + 1, ", ".join(terms), self.in_a_row)
        writer.add_scalar("perf/nonfinite_skipped", self.total, step + 1)
        tr = self.tr
        if tr.nonfinite == NonFinite.stop or self.in_a_row >= tr.nonfinite_patience:
            where = f"{self.ckpt_dir} (step {saved})" if saved is not None else "none written yet"
            why = ("trainer.nonfinite=stop" if tr.nonfinite == NonFinite.stop
                   else f"{self.in_a_row} consecutive steps, trainer.nonfinite_patience={tr.nonfinite_patience}")
            raise NonFiniteLoss(f"non-finite loss at step {step + 1} in {', '.join(terms)} ({why}); "
                                f"last checkpoint: {where}. Lower the learning rate or loss weights, "
                                f"or use trainer.precision=fp32")
        return False


class RankCheck:
    """``trainer.check_ranks_every``: under torchrun, all ranks must hold identical parameters."""

    def __init__(self, every: int):
        self.every, self.passed = every, 0

    def __call__(self, method: torch.nn.Module, done: int) -> None:
        if dist.world() == 1 or not self.every or done % self.every:
            return
        diff = dist.max_param_difference(method)
        if diff > 0:
            raise RuntimeError(f"ranks disagree on the parameters after step {done} (max |diff| {diff:.3g})")
        self.passed += 1
