"""The source and target batch of every step, normalised on the device.

Each domain is sampled as an infinite stream of indices that is a function of (seed, step)
(``uda.data.streams``), so a resumed run sees the same batches. Under torchrun the streams draw one
global batch of world x batch_size per domain, as one process would, and each rank takes its slice.
Augmentation (random crops and flips) is drawn from (seed, step, rank) too. Target labels never leave
this module: the target ``Batch`` carries ``y=None``.
"""
from __future__ import annotations

from typing import Iterator

import torch

from uda.data.domain import Domain
from uda.data.pairs import Normalize, random_crop_flip
from uda.data.streams import IndexStream
from uda.methods.base import Batch

SOURCE_STREAM, TARGET_STREAM = 1, 2


class PairBatches:
    """``next(batches)`` -> (source Batch, target Batch) for steps start, start + 1, ..., end - 1."""

    def __init__(self, source: Domain, target: Domain, *, seed: int, batch: int, world: int, rank: int, start: int,
                 end: int, workers: int, device: torch.device, prepare: Normalize, augment_size: int | None,
                 per_pixel: bool):
        self.seed, self.world, self.rank, self.step = seed, world, rank, start
        self.device, self.prepare, self.augment_size, self.per_pixel = device, prepare, augment_size, per_pixel
        streams = [IndexStream(d.train_size, batch * world, seed=seed, stream=s)
                   for d, s in ((source, SOURCE_STREAM), (target, TARGET_STREAM))]
        self.source: Iterator = source.step_batches(streams[0], start, end, rank=rank, batch=batch, workers=workers)
        self.target: Iterator = target.step_batches(streams[1], start, end, rank=rank, batch=batch, workers=workers)

    def __iter__(self):
        return self

    def __next__(self) -> tuple[Batch, Batch]:
        (x_s, y_s), (x_t, _) = next(self.source), next(self.target)
        if self.augment_size:  # crops and flips drawn from (seed, step): a resumed run sees the same ones
            gen = torch.Generator().manual_seed((self.seed * 1_000_003 + self.step) * self.world + self.rank)
            x_s, x_t = random_crop_flip(x_s, self.augment_size, gen), random_crop_flip(x_t, self.augment_size, gen)
        self.step += 1
        y_s = y_s.to(self.device, non_blocking=True)
        src = Batch(self.prepare(x_s.to(self.device, non_blocking=True)), y_s.long() if self.per_pixel else y_s)
        tgt = Batch(self.prepare(x_t.to(self.device, non_blocking=True)), None)  # target labels never enter training
        return src, tgt
