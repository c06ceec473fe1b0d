"""Evaluation metrics, pure functions of predictions and labels: top-1 accuracy over batches
(classification), and the confusion matrix, per-class IoU and mIoU (segmentation)."""
from __future__ import annotations

import math
from typing import Callable, Iterable

import torch

IGNORE = 255  # segmentation labels: pixels that do not count


@torch.no_grad()
def accuracy(predict: Callable[[torch.Tensor], torch.Tensor], batches: Iterable[tuple[torch.Tensor, torch.Tensor]], *,
             prepare: Callable[[torch.Tensor], torch.Tensor]) -> float:
    """Top-1 accuracy in percent of ``predict`` over (uint8 images, labels) ``batches``."""
    correct, total = None, 0
    for x, y in batches:
        hits = (predict(prepare(x)).argmax(1) == y).sum()
        correct = hits if correct is None else correct + hits
        total += x.shape[0]
    return 100.0 * (0 if correct is None else correct.item()) / max(1, total)


def confusion(pred: torch.Tensor, y: torch.Tensor, num_classes: int, ignore: int = IGNORE) -> torch.Tensor:
    """Confusion matrix [K, K] (rows: true class, columns: predicted) over the pixels whose label is
    not ``ignore``; ``pred`` and ``y`` are integer tensors of the same shape."""
    keep = y != ignore
    idx = y[keep].long() * num_classes + pred[keep].long()
    return torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes)


def iou(cm: torch.Tensor) -> torch.Tensor:
    """Per-class IoU = TP / (TP + FP + FN) from an accumulated confusion matrix (float64).

    NaN for a class that is neither in the labels nor in the predictions (it does not enter the mean).
    """
    cm = cm.double()
    tp = cm.diag()
    union = cm.sum(0) + cm.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, math.nan))


def miou(cm: torch.Tensor) -> float:
    """Mean IoU in percent over the classes present in labels or predictions."""
    return 100.0 * torch.nanmean(iou(cm)).item()


def iou_dict(cm: torch.Tensor, names) -> dict[str, float | None]:
    """class name -> IoU in percent (2 decimals), None for a class absent from labels and predictions."""
    return {n: (None if math.isnan(v) else round(100.0 * v, 2)) for n, v in zip(names, iou(cm).tolist())}
