"""Infinite sampling streams whose position is a function of the step (nothing to checkpoint).

Each epoch is a fresh permutation drawn from (seed, stream, epoch); batch ``step`` covers samples
[step * B, (step + 1) * B) of the concatenated epochs. Resuming at any step gives the same batches.
"""
from __future__ import annotations

import numpy as np
import torch


class IndexStream:
    def __init__(self, n: int, batch_size: int, *, seed: int, stream: int):
        if n <= 0:
            raise ValueError("cannot sample from an empty dataset")
        self.n, self.batch_size, self.seed, self.stream = n, batch_size, seed, stream
        self._perms: dict[int, torch.Tensor] = {}

    def permutation(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            state = np.random.SeedSequence([self.seed, self.stream, epoch]).generate_state(2)
            g = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
            self._perms = {k: v for k, v in self._perms.items() if k >= epoch - 1}
            self._perms[epoch] = torch.randperm(self.n, generator=g)
        return self._perms[epoch]

    def indices(self, step: int) -> torch.Tensor:
        start, need = step * self.batch_size, self.batch_size
        parts = []
        while need > 0:
            epoch, offset = divmod(start, self.n)
            take = min(need, self.n - offset)
            parts.append(self.permutation(epoch)[offset : offset + take])
            start, need = start + take, need - take
        return parts[0] if len(parts) == 1 else torch.cat(parts)


def step_generator(seed: int, step: int, *, stream: int, rank: int = 0) -> torch.Generator:
    """A CPU generator that is a function of (seed, step, stream, rank): random draws a method makes at a
    step (mean teacher's augmentations) repeat exactly when a run resumes there, and differ across ranks."""
    state = np.random.SeedSequence([seed, stream, step, rank]).generate_state(2)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def rcs_probabilities(class_pixels: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Rare class sampling (DAFormer): (the classes with any labelled pixel, P over them), P(c) =
    softmax((1 - f_c) / T) with f_c = the pixels of class c over all labelled pixels of the source training
    labels. ``class_pixels``: int64 [N, K + 1], pixels of each class per image, the last column unlabelled."""
    total = class_pixels[:, :-1].sum(0).double()
    classes = torch.nonzero(total > 0).flatten()
    f = total[classes] / total[classes].sum()
    return classes, torch.softmax((1 - f) / temperature, dim=0)


class RareClassStream:
    """Source indices by rare class sampling: per sample, a class c ~ ``rcs_probabilities``, then uniformly an
    image where c covers more than ``min_share`` of the label map (the official 3000 pixels of a 1914 x 1052
    GTA5 label). A function of (seed, stream, step), as ``IndexStream``: a resumed run draws the same images."""

    def __init__(self, class_pixels: torch.Tensor, batch_size: int, *, temperature: float, min_share: float,
                 seed: int, stream: int):
        from uda.errors import ConfigError

        self.n, self.batch_size, self.seed, self.stream = class_pixels.shape[0], batch_size, seed, stream
        self.classes, self.probs = rcs_probabilities(class_pixels, temperature)
        share = class_pixels.double() / class_pixels.sum(1, keepdim=True).clamp(min=1)
        self.images = [torch.nonzero(share[:, c] > min_share).flatten() for c in self.classes.tolist()]
        empty = [c for c, imgs in zip(self.classes.tolist(), self.images) if not len(imgs)]
        if empty:  # the official code asserts the same (uda_dataset.py)
            raise ConfigError(f"rare class sampling: no source image where class(es) {empty} cover more than "
                              f"{min_share:g} of the pixels; lower method.rcs_min_share")

    def drawn(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(the class drawn for each sample of the step's batch, the image drawn for it)."""
        gen = step_generator(self.seed, step, stream=self.stream)
        drawn = torch.multinomial(self.probs.float(), self.batch_size, replacement=True, generator=gen)
        images = torch.stack([self.images[k][torch.randint(len(self.images[k]), (1,), generator=gen)][0]
                              for k in drawn.tolist()])
        return self.classes[drawn], images

    def indices(self, step: int) -> torch.Tensor:
        return self.drawn(step)[1]
