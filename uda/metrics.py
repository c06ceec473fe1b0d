"""Evaluation metrics: test accuracy (classification) or per-class IoU and mIoU (segmentation) for
reporting, and the label-free selection scores."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F

from uda import selection

if TYPE_CHECKING:
    from uda.data.pairs import Domain
    from uda.methods.base import Method


@torch.no_grad()
def accuracy(predict: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor, *,
             prepare: Callable[[torch.Tensor], torch.Tensor], batch_size: int) -> float:
    """Top-1 accuracy in percent of ``predict`` over the whole set ``x`` (uint8) / ``y``."""
    correct = torch.zeros((), dtype=torch.long, device=y.device)
    for i in range(0, x.shape[0], batch_size):
        logits = predict(prepare(x[i : i + batch_size]))
        correct += (logits.argmax(1) == y[i : i + batch_size]).sum()
    return 100.0 * correct.item() / max(1, x.shape[0])


@torch.no_grad()
def features_and_logits(method: "Method", x: torch.Tensor, *, prepare, batch_size: int):
    """Flattened float32 features and logits of ``method`` over all of ``x`` (uint8)."""
    feats, logits = [], []
    for i in range(0, x.shape[0], batch_size):
        f, lo = method.features_and_logits(prepare(x[i : i + batch_size]))
        feats.append(f.float().flatten(1))
        logits.append(lo.float())
    return torch.cat(feats), torch.cat(logits)


@torch.no_grad()
def evaluate(method: "Method", source: "Domain", target: "Domain", *, prepare, batch_size: int,
             selection_scores: bool = True) -> dict[str, float]:
    """Test accuracies (reporting only) and, from held-out data, the label-free selection scores.

    Target validation labels are never read: the target scores use predictions and features only.
    """
    out = {
        "source_acc": accuracy(method.predict, source.test_x, source.test_y, prepare=prepare, batch_size=batch_size),
        "target_acc": accuracy(method.predict, target.test_x, target.test_y, prepare=prepare, batch_size=batch_size),
    }
    if not selection_scores or source.val_x is None or target.val_x is None:
        return out
    if len(source.val_x) < 2 or len(target.val_x) < 2:
        return out
    f_sv, lo_sv = features_and_logits(method, source.val_x, prepare=prepare, batch_size=batch_size)
    f_tv, lo_tv = features_and_logits(method, target.val_x, prepare=prepare, batch_size=batch_size)
    f_st, _ = features_and_logits(method, source.train_x[: len(source.val_x)], prepare=prepare, batch_size=batch_size)
    y_sv = source.val_y.to(lo_sv.device)
    probs = torch.softmax(lo_tv.double(), dim=1)
    out["source_val_acc"] = 100.0 * (lo_sv.argmax(1) == y_sv).double().mean().item()
    out["target_entropy"] = selection.entropy(probs).item()
    out["snd"] = selection.snd(probs).item()
    loss_sv = F.cross_entropy(lo_sv, y_sv, reduction="none")
    out["dev"] = selection.dev_score(f_st.cpu(), f_tv.cpu(), f_sv.cpu(), loss_sv.cpu()).item()
    return out


# ------------------------------------------------------------------------------------ segmentation
IGNORE = 255


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


def _predicted(method: "Method", x: torch.Tensor, size) -> torch.Tensor:
    from uda.nets.segmentation import upsample

    return upsample(method.predict(x).float(), tuple(size)).argmax(1)


@torch.no_grad()
def seg_confusion(method: "Method", batches, *, prepare, num_classes: int) -> torch.Tensor:
    """Confusion matrix accumulated over all (uint8 images, labels) batches; scores are upsampled
    bilinearly to the labels' size (full-size Cityscapes labels for a resized input)."""
    cm = None
    for x, y in batches:
        y = y.to(x.device if x.is_cuda else y.device)
        pred = _predicted(method, prepare(x), y.shape[-2:]).to(y.device)
        c = confusion(pred, y, num_classes)
        cm = c if cm is None else cm + c
    return cm


def in_memory_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int):
    for i in range(0, x.shape[0], batch_size):
        yield x[i : i + batch_size], y[i : i + batch_size]


def file_batches(dataset, device: torch.device, workers: int = 0):
    """One image at a time from a file-backed dataset (full-size labels differ from the input size)."""
    from torch.utils.data import DataLoader

    for x, y in DataLoader(dataset, batch_size=1, shuffle=False, num_workers=workers):
        yield x.to(device), y.to(device)


def _iou_dict(cm: torch.Tensor, names) -> dict[str, float | None]:
    return {n: (None if math.isnan(v) else round(100.0 * v, 2)) for n, v in zip(names, iou(cm).tolist())}


@torch.no_grad()
def evaluate_segmentation(method: "Method", source, target, *, prepare, batch_size: int, num_classes: int,
                          class_names, device: torch.device, workers: int = 0) -> dict:
    """Source and target test mIoU (percent) with per-class IoUs, and the label-free selection scores
    (source validation mIoU, mean per-pixel prediction entropy on held-out target images)."""
    out: dict = {}
    for role, dom in (("source", source), ("target", target)):
        if hasattr(dom, "test_x"):
            batches = in_memory_batches(dom.test_x, dom.test_y, batch_size)
        else:
            batches = file_batches(dom.test, device, workers)
        cm = seg_confusion(method, batches, prepare=prepare, num_classes=num_classes)
        out[f"{role}_miou"] = miou(cm)
        out[f"{role}_iou"] = _iou_dict(cm, class_names)
    if getattr(source, "val_x", None) is not None and len(source.val_x):
        cm = seg_confusion(method, in_memory_batches(source.val_x, source.val_y, batch_size), prepare=prepare,
                           num_classes=num_classes)
        out["source_val_miou"] = miou(cm)
    if getattr(target, "val_x", None) is not None and len(target.val_x):
        total, count = 0.0, 0
        for i in range(0, target.val_x.shape[0], batch_size):
            probs = torch.softmax(method.predict(prepare(target.val_x[i : i + batch_size])).double(), dim=1)
            total += selection.entropy(probs.movedim(1, -1).reshape(-1, probs.shape[1])).item() * probs[:, 0].numel()
            count += probs[:, 0].numel()
        out["target_entropy"] = total / count
    return out
