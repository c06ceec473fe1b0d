"""The source and target batch of every step, normalised on the device.

Each domain is sampled as an infinite stream of indices that is a function of (seed, step)
(``uda.data.streams``), so a resumed run sees the same batches. Under torchrun the streams draw one
global batch of world x batch_size per domain, as one process would, and each rank takes its slice.
Augmentation (random crops and flips) is drawn from (seed, step, rank) too. Target labels never leave
this module: the target ``Batch`` carries ``y=None``.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from uda.data.domain import Domain, rank_slice
from uda.data.pairs import Normalize, random_crop_flip, random_seg_crop
from uda.data.streams import IndexStream
from uda.methods.base import Batch

SOURCE_STREAM, TARGET_STREAM = 1, 2


@dataclass(frozen=True)
class SegCrop:
    """Segmentation training crops (``data.seg_crop`` and its neighbours; ``uda.data.pairs.random_seg_crop``):
    the window (None: whole images), mmseg's cat_max_ratio on source windows, the mirror, and the share of a
    crop the class rare class sampling drew must exceed (0: no re-crop)."""

    size: tuple[int, int] | None
    max_share: float = 1.0
    flip: bool = False
    min_class_share: float = 0.0


class PairBatches:
    """``next(batches)`` -> (source Batch, target Batch) for steps start, start + 1, ..., end - 1."""

    def __init__(self, source: Domain, target: Domain, *, seed: int, batch: int, world: int, rank: int, start: int,
                 end: int, workers: int, device: torch.device, prepare: Normalize, augment_size: int | None,
                 per_pixel: bool, source_stream: Callable[[int, int, int], Any] | None = None,
                 seg_crop: SegCrop | None = None):
        """``source_stream(batch, seed, stream)``: the source's index stream when the method asks for another
        sampling than ``IndexStream``'s permutations (rare class sampling). ``seg_crop``: segmentation training
        crops and mirrors."""
        self.seed, self.world, self.rank, self.step = seed, world, rank, start
        self.device, self.prepare, self.augment_size, self.per_pixel = device, prepare, augment_size, per_pixel
        self.seg_crop = seg_crop
        self.streams = [IndexStream(d.train_size, batch * world, seed=seed, stream=s)
                        for d, s in ((source, SOURCE_STREAM), (target, TARGET_STREAM))]
        if source_stream is not None:
            self.streams[0] = source_stream(batch * world, seed, SOURCE_STREAM)
        self.domains, self.batch = (source, target), batch
        self.source: Iterator = source.step_batches(
            self.streams[0], start, end, rank=rank, batch=batch, workers=workers
        )
        self.target: Iterator = target.step_batches(
            self.streams[1], start, end, rank=rank, batch=batch, workers=workers
        )

    def __iter__(self):
        return self

    def _augment(self, x_s: torch.Tensor, y_s: torch.Tensor, x_t: torch.Tensor, step: int):
        """(x_s, y_s, x_t) cropped and mirrored as the pair asks; drawn from (seed, step, rank): a resumed run
        sees the same crops."""
        if not (self.augment_size or self.seg_crop):
            return x_s, y_s, x_t
        gen = torch.Generator().manual_seed((self.seed * 1_000_003 + step) * self.world + self.rank)
        if self.augment_size:
            return (random_crop_flip(x_s, self.augment_size, gen), y_s,
                    random_crop_flip(x_t, self.augment_size, gen))
        c = self.seg_crop
        need = None
        if c.size and c.min_class_share and hasattr(self.streams[0], "drawn"):  # rare class sampling's re-crop
            classes = rank_slice(self.streams[0].drawn(step)[0], self.rank, self.batch)[: len(x_s)]
            pixels = c.min_class_share * c.size[0] * c.size[1]  # not rounded: the test is strict
            need = [(int(k), pixels) for k in classes.tolist()]
        x_s, y_s = random_seg_crop(x_s, y_s, c.size, gen, max_share=c.max_share, flip=c.flip, need=need)
        x_t, _ = random_seg_crop(x_t, None, c.size, gen, flip=c.flip)  # target labels are never read
        return x_s, y_s, x_t

    def __next__(self) -> tuple[Batch, Batch]:
        (x_s, y_s), (x_t, _) = next(self.source), next(self.target)
        x_s, y_s, x_t = self._augment(x_s, y_s, x_t, self.step)
        idx_t = rank_slice(self.streams[1].indices(self.step), self.rank, self.batch)
        self.step += 1
        y_s = y_s.to(self.device, non_blocking=True)
        src = Batch(self.prepare(x_s.to(self.device, non_blocking=True)), y_s.long() if self.per_pixel else y_s)
        tgt = Batch(self.prepare(x_t.to(self.device, non_blocking=True)), None,  # target labels never enter training
                    idx_t.to(self.device, non_blocking=True))
        return src, tgt

    def target_epoch_steps(self) -> int:
        """The steps of one pass over the target training set: ceil(N_t / global batch)."""
        return -(-self.domains[1].train_size // (self.batch * self.world))

    def target_pass(self, size: int):
        """The whole target training set in order, un-augmented (the evaluation's central crop), as
        ``Batch(x, None, idx)`` of ``size`` images: what a method's ``refresh`` reads."""
        target = self.domains[1]
        for start in range(0, target.train_size, size):
            idx = torch.arange(start, min(start + size, target.train_size))
            x, _ = target.train_batch(idx)
            yield Batch(self.prepare(x.to(self.device, non_blocking=True)), None, idx.to(self.device))

    def first_images(self, n: int = 16) -> dict[str, torch.Tensor]:
        """The first ``n`` source and target images of the next step's batches as the network sees such images
        (resized, channel-converted, randomly cropped and flipped as in training, normalised), mapped back to
        [0, 1] for a picture; [N, C, H, W]. Read beside the batch iterators, which they leave untouched (the
        crops are drawn for these n images, so they need not be the step's own)."""
        out = {}
        idx = [rank_slice(st.indices(self.step), self.rank, self.batch)[:n] for st in self.streams]
        (x_s, y_s), (x_t, _) = (dom.train_batch(i) for dom, i in zip(self.domains, idx))
        x_s, _, x_t = self._augment(x_s, y_s, x_t, self.step)
        for role, x in zip(("source", "target"), (x_s, x_t)):
            out[f"train/{role}"] = self.prepare.undo(self.prepare(x.to(self.device)))
        return out
