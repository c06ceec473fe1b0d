"""Evaluation metrics."""
from __future__ import annotations

from typing import Callable

import torch


@torch.no_grad()
def accuracy(predict: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor, *,
             prepare: Callable[[torch.Tensor], torch.Tensor], batch_size: int) -> float:
    """Top-1 accuracy in percent of ``predict`` over the whole set ``x`` (uint8) / ``y``."""
    correct = torch.zeros((), dtype=torch.long, device=y.device)
    for i in range(0, x.shape[0], batch_size):
        logits = predict(prepare(x[i : i + batch_size]))
        correct += (logits.argmax(1) == y[i : i + batch_size]).sum()
    return 100.0 * correct.item() / max(1, x.shape[0])
