"""Evaluation metrics, pure functions of predictions and labels, all from one confusion matrix: top-1,
per-class and mean class accuracy (classification), per-class IoU and mIoU (segmentation)."""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch

IGNORE = 255  # segmentation labels: pixels that do not count


@torch.no_grad()
def prediction_confusion(predict: Callable[[torch.Tensor], torch.Tensor],
                         batches: Iterable[tuple[torch.Tensor, torch.Tensor]], *,
                         prepare: Callable[[torch.Tensor], torch.Tensor], num_classes: int) -> torch.Tensor:
    """Confusion matrix [K, K] (rows: true class, columns: argmax of ``predict``) over (uint8 images, labels)
    ``batches`` of a classification test split; accumulated on the labels' device (one sync at the end)."""
    cm = None
    for x, y in batches:
        c = confusion(predict(prepare(x)).argmax(1), y, num_classes)
        cm = c if cm is None else cm + c
    return torch.zeros(num_classes, num_classes, dtype=torch.long) if cm is None else cm.cpu()


def accuracy(cm: torch.Tensor) -> float:
    """Top-1 accuracy in percent: the trace of the confusion matrix over its sum (0 for an empty one)."""
    return 100.0 * cm.diag().sum().item() / max(1, cm.sum().item())


def class_accuracy(cm: torch.Tensor, names) -> dict[str, float | None]:
    """Class name -> recall in percent (2 decimals): of its test images, the share predicted as it; None for
    a class with no test image."""
    total = cm.sum(1).tolist()
    return {n: (None if t == 0 else round(100.0 * hit / t, 2)) for n, hit, t in zip(names, cm.diag().tolist(), total)}


def mean_class_accuracy(cm: torch.Tensor) -> float:
    """The mean of the per-class accuracies over the classes with test images (VisDA-2017's measure), percent."""
    total = cm.sum(1).double()
    present = total > 0
    return 100.0 * (cm.diag().double()[present] / total[present]).mean().item() if present.any() else 0.0


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
