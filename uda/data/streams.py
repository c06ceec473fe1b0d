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
