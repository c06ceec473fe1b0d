"""Stopping on request: SIGINT / SIGTERM / SIGUSR1 / SIGUSR2 finish the current step, checkpoint, and stop."""
from __future__ import annotations

import logging
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from uda.engine import dist
from uda.errors import UserError

log = logging.getLogger("uda")


class TrainingInterrupted(UserError):
    """Raised after a requested stop (signal, or ``stop_after``) once a checkpoint is safely written."""

    def __init__(self, step: int, path: Path, signum: int | None):
        self.step, self.path, self.signum = step, path, signum
        self.exit_code = 128 + (signum or signal.SIGINT)  # 130 Ctrl-C, 143 SIGTERM, 138 SIGUSR1, 140 SIGUSR2
        super().__init__(f"stopped at step {step}; checkpoint saved to {path}. "
                         f"Continue with the same overrides plus: resume=true hydra.run.dir={path.parent.parent}")


@dataclass
class StopFlag:
    """Set by SIGINT/SIGTERM/SIGUSR1/SIGUSR2: the loop finishes the current step, checkpoints, and stops.

    SIGUSR2 is what submitit (Hydra's SLURM launcher) sends before a job's time limit; once the
    checkpoint is written it is handed on to the handler that was installed before (submitit's, which
    requeues the job; the requeued job continues from the checkpoint with ``resume=auto``).
    ``stop_after``: stop as a signal would after that many steps (tests, scripted preemption).
    """

    stop_after: int | None = None
    signum: int | None = None
    previous: dict[int, Any] = field(default_factory=dict)

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGUSR1", None), getattr(signal, "SIGUSR2", None)):
            if sig is None:
                continue
            try:
                self.previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: signals stay with their owner
                pass

    def _handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.signum = signum
        log.warning("signal %d received: saving a checkpoint after this step", signum)

    def requested(self, done: int, device: torch.device) -> bool:
        """Stop after step ``done``? Under torchrun every rank stops at the same step."""
        asked = self.signum is not None or (self.stop_after is not None and done >= self.stop_after)
        return dist.any_flag(asked, device) if dist.world() > 1 else asked

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def hand_over(self) -> None:
        """After restore(): pass a received SIGUSR2 on to the previous Python handler, if there was one."""
        usr2 = getattr(signal, "SIGUSR2", None)
        previous = self.previous.get(usr2)
        if usr2 is not None and self.signum == usr2 and callable(previous):
            previous(usr2, None)
