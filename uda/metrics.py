"""Evaluation metrics: test accuracy for reporting, and the label-free selection scores."""
from __future__ import annotations

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
