"""What a run shows while it trains: the progress display, TensorBoard scalars and images, and the
loss averages between logging points (kept on the device: one reduction per ``trainer.log_every``)."""
from __future__ import annotations

import logging
import math
import os
import sys
import time
from pathlib import Path

import torch

from uda.schema import Progress

log = logging.getLogger("uda")


class ProgressDisplay:
    """A tqdm bar on a terminal; plain log lines under CI or when output is a file."""

    def __init__(self, mode: Progress, total: int, initial: int, every: int):
        self.every = every  # plain log lines: one per `every` steps
        if mode == Progress.auto:
            mode = Progress.bar if sys.stderr.isatty() and not os.environ.get("CI") else Progress.log
        self.mode, self.total = mode, total
        self.bar = None
        if mode == Progress.bar:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, leave=True)

    def update(self, step: int, n: int, scalars: dict[str, float], img_s: float) -> None:
        if self.bar is not None:
            self.bar.update(n)
            post = {k.split("/")[-1]: f"{v:.3g}" for k, v in scalars.items() if k.startswith(("loss/", "acc/domain"))}
            self.bar.set_postfix(post | {"img/s": f"{img_s:.0f}"}, refresh=False)
        elif self.mode == Progress.log and (step % self.every == 0 or step == self.total):
            parts = " ".join(f"{k}={v:.4g}" for k, v in scalars.items() if k.startswith(("loss/", "acc/")))
            log.info("step %d/%d  %s  %.0f img/s", step, self.total, parts, img_s)

    def write(self, msg: str) -> None:
        if self.bar is not None:
            self.bar.write(msg)
        elif self.mode != Progress.none:
            log.info(msg)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class NullWriter:
    """What ranks other than 0 log to: nothing."""

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: None


def tensorboard(run_dir: Path, start: int, main: bool):
    """Rank 0's SummaryWriter on ``run_dir/tb`` (a resumed run drops the events after ``start``); others: NullWriter."""
    if not main:
        return NullWriter()
    from torch.utils.tensorboard import SummaryWriter

    run_dir.mkdir(parents=True, exist_ok=True)
    return SummaryWriter(str(run_dir / "tb"), purge_step=start + 1 if start else None)


class TrainLog:
    """The losses of each update, summed on the device, and at each logging point their means, the learning
    rates, the stage and the throughput written to TensorBoard and the progress display."""

    def __init__(self, writer, progress: ProgressDisplay, images_per_step: int, multi_stage_ends: dict[int, str]):
        self.writer, self.progress, self.images_per_step = writer, progress, images_per_step
        self.stage_ends = multi_stage_ends  # {} for one-stage methods
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self.n, self.t_last = 0, time.perf_counter()
        self.marks: list[tuple[int, float]] = []  # (step, wall clock) at each logging point

    def add(self, out: dict[str, torch.Tensor] | None) -> None:
        """One iteration; ``out`` None when its update was skipped (its losses are not averaged)."""
        for k, v in (out or {}).items():
            self.sums[k] = self.sums[k] + v if k in self.sums else v.clone()
            self.counts[k] = self.counts.get(k, 0) + 1
        self.n += 1

    def write(self, done: int, stepper) -> None:
        """At a logging point: the interval's loss means, each group's learning rate, the fp16 loss scale,
        the stage and images/s (``stepper``: the run's Stepper, its optimizers and gradient scaler)."""
        scalars = {k: v.item() / self.counts[k] for k, v in self.sums.items()}  # the interval's one sync
        now = time.perf_counter()
        img_s = self.n * self.images_per_step / max(now - self.t_last, 1e-9)
        w = self.writer
        for k, v in scalars.items():
            w.add_scalar(k, v, done)
        for name, opt in stepper.optimizers.items():
            w.add_scalar(f"lr/{name}", opt.param_groups[0]["lr"], done)
        if stepper.scaler.is_enabled():  # fp16: the gradient scaler's current scale
            w.add_scalar("amp/loss_scale", stepper.scaler.get_scale(), done)
        w.add_scalar("perf/images_per_s", img_s, done)
        if self.stage_ends:
            w.add_scalar("sched/stage", sum(done > end for end in self.stage_ends), done)
        bad = [k for k, v in scalars.items() if not math.isfinite(v)]
        if bad:
            log.warning("non-finite values at step %d: %s", done, ", ".join(bad))
        self.progress.update(done, self.n, scalars, img_s)
        self.sums, self.counts, self.n, self.t_last = {}, {}, 0, now
        self.marks.append((done, now))

    def loop_images_per_s(self) -> float | None:
        """Wall-clock throughput from the first logging point to the last (evaluations, checkpoints included)."""
        (s0, t0), (s1, t1) = (self.marks[0], self.marks[-1]) if len(self.marks) > 1 else ((0, 0.0), (0, 0.0))
        return round((s1 - s0) * self.images_per_step / (t1 - t0), 1) if t1 > t0 else None


def write_images(writer, run_dir: Path, pictures: dict[str, torch.Tensor], done: int) -> None:
    """Image grids ([N, C, H, W] in [0, 1]) to TensorBoard and ``images/<name>_<step>.png`` (rows of 8,
    segmentation grids rows of 4: images, labels, predictions)."""
    from torchvision.utils import save_image

    for name, imgs in pictures.items():
        writer.add_images(name, imgs, done)
        (run_dir / "images").mkdir(exist_ok=True)
        save_image(imgs.cpu(), run_dir / "images" / f"{name.replace('/', '_')}_{done:07d}.png",
                   nrow=4 if name.startswith("seg/") else 8)
