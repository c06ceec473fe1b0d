"""Evaluation: ``evaluate_pair`` (test metrics for reporting and the label-free selection scores, for
classification and segmentation alike; the loop and ``uda eval`` both call it), the image grids, and
``Evaluator``, which runs both at each evaluation point, logs them, keeps ``best.pt`` and appends to
``metrics.jsonl``.

Target labels are read only for the test metrics (reported, never used for a choice); the target scores
use predictions and features of held-out target images, never their labels.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from uda import selection
from uda.data.domain import Domain, batches_of
from uda.engine.logging import write_images
from uda.metrics import accuracy, class_accuracy, confusion, iou_dict, mean_class_accuracy, miou, prediction_confusion
from uda.nets.seg_base import upsample
from uda.schema import CLASSIFICATION, SEGMENTATION

if TYPE_CHECKING:
    from uda.data.pairs import Normalize, PairInfo
    from uda.methods.base import Method


@torch.no_grad()
def features_and_logits(method: Method, x: torch.Tensor, *, prepare, batch_size: int):
    """Flattened float32 features and logits of ``method`` over all of ``x`` (uint8)."""
    feats, logits = [], []
    for xb, _ in batches_of(x, None, batch_size):
        f, lo = method.features_and_logits(prepare(xb))
        feats.append(f.float().flatten(1))
        logits.append(lo.float())
    return torch.cat(feats), torch.cat(logits)


@torch.no_grad()
def mixval_predictions(method: Method, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, *, prepare,
                       batch_size: int) -> torch.Tensor:
    """argmax of the model on lambda x_a + (1 - lambda) x_b for each pair, mixed in the normalised input
    space as MixVal's official code does (``x`` uint8, the held-out target images)."""
    lam, preds = selection.MIXVAL_LAMBDA, []
    a, b = a.to(x.device), b.to(x.device)
    for i in range(0, len(a), batch_size):
        x_mix = lam * prepare(x[a[i : i + batch_size]]) + (1 - lam) * prepare(x[b[i : i + batch_size]])
        preds.append(method.predict(x_mix).float().argmax(1))
    return torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long)


@torch.no_grad()
def classification_scores(method: Method, source: Domain, target: Domain, *, prepare, batch_size: int,
                          class_names: tuple[str, ...], device: torch.device, workers: int = 0) -> dict[str, Any]:
    """Test accuracy, per-class accuracy (class name -> %) and mean class accuracy of both domains, and from
    the held-out splits the score of every classification criterion of ``uda.selection.TABLE``."""
    out: dict[str, Any] = {}
    for role, dom in (("source", source), ("target", target)):
        cm = prediction_confusion(method.predict, dom.test_batches(batch_size, device, workers), prepare=prepare,
                                  num_classes=len(class_names))
        out[f"{role}_acc"] = accuracy(cm)
        out[f"{role}_mean_class_acc"] = mean_class_accuracy(cm)
        out[f"{role}_class_acc"] = class_accuracy(cm, class_names)
    if source.val is None or target.val is None or len(source.val[0]) < 2 or len(target.val[0]) < 2:
        return out
    (x_sv, y_sv), x_tv = source.val, target.val[0]  # the target's validation labels are never read
    f_sv, lo_sv = features_and_logits(method, x_sv, prepare=prepare, batch_size=batch_size)
    f_tv, lo_tv = features_and_logits(method, x_tv, prepare=prepare, batch_size=batch_size)
    x_st = source.train_batch(torch.arange(len(x_sv)))[0]  # as many source train images, for DEV's classifier
    f_st, _ = features_and_logits(method, x_st, prepare=prepare, batch_size=batch_size)
    readings = selection.Readings(lo_sv=lo_sv, y_sv=y_sv.to(lo_sv.device), f_sv=f_sv, f_st=f_st, f_tv=f_tv,
                                  lo_tv=lo_tv, mix=partial(mixval_predictions, method, x_tv, prepare=prepare,
                                                           batch_size=batch_size))
    for c in selection.for_task(CLASSIFICATION):
        out[c.key] = c.classify(readings)
    return out


@torch.no_grad()
def seg_confusion(method: Method, batches, *, prepare, num_classes: int) -> torch.Tensor:
    """Confusion matrix accumulated over all (uint8 images, labels) batches; scores are upsampled
    bilinearly to the labels' size (full-size Cityscapes labels for a resized input)."""
    cm = None
    for x, y in batches:
        y = y.to(x.device if x.is_cuda else y.device)
        pred = upsample(method.predict(prepare(x)).float(), tuple(y.shape[-2:])).argmax(1).to(y.device)
        c = confusion(pred, y, num_classes)
        cm = c if cm is None else cm + c
    return cm


@torch.no_grad()
def segmentation_scores(method: Method, source: Domain, target: Domain, *, prepare, batch_size: int,
                        num_classes: int, class_names, device: torch.device, workers: int = 0) -> dict[str, Any]:
    """Test mIoU (percent) with per-class IoUs, and the score of every segmentation criterion of
    ``uda.selection.TABLE``: source validation mIoU, and over every pixel of the held-out target images (each
    one row of the prediction matrix) the target ones."""
    out: dict[str, Any] = {}
    for role, dom in (("source", source), ("target", target)):
        cm = seg_confusion(method, dom.test_batches(batch_size, device, workers), prepare=prepare,
                           num_classes=num_classes)
        out[f"{role}_miou"] = miou(cm)
        out[f"{role}_iou"] = iou_dict(cm, class_names)
    s = selection.SegReadings(num_classes)
    if source.val is not None and len(source.val[0]):
        cm = seg_confusion(method, batches_of(*source.val, batch_size), prepare=prepare, num_classes=num_classes)
        s.source_val_miou = miou(cm)
    if target.val is not None and len(target.val[0]):
        for x, _ in batches_of(target.val[0], None, batch_size):
            logits = method.predict(prepare(x)).double()
            logits = logits.movedim(1, -1).reshape(-1, logits.shape[1])  # one row per pixel
            probs = torch.softmax(logits, dim=1)
            s.sum_entropy += selection.entropy(probs).item() * len(probs)
            s.sum_probs = s.sum_probs + probs.sum(0)
            s.mano = s.mano + selection.mano_sums(logits)
            s.count += len(probs)
    for c in selection.for_task(SEGMENTATION):
        if (score := c.segment(s)) is not None:
            out[selection.criterion_key(c.name, "miou")[0]] = score
    return out


def evaluate_pair(method: Method, source: Domain, target: Domain, info: PairInfo, *, prepare, batch_size: int,
                  device: torch.device, workers: int = 0) -> dict[str, Any]:
    """The evaluation of a pair: accuracies (classification) or mIoU with per-class IoUs (segmentation) on
    both test splits, and the label-free selection scores. ``method`` in eval mode, under autocast."""
    if info.task == SEGMENTATION:
        return segmentation_scores(method, source, target, prepare=prepare, batch_size=batch_size,
                                   num_classes=info.num_classes, class_names=info.class_names, device=device,
                                   workers=workers)
    return classification_scores(method, source, target, prepare=prepare, batch_size=batch_size,
                                 class_names=info.class_names, device=device, workers=workers)


# ---------- grids
def seg_grid(method: Method, domain: Domain, prepare: Normalize, num_classes: int, n: int = 4) -> torch.Tensor:
    """[3n, 3, H, W] in [0, 1]: n test images, their colourised labels, the colourised predictions."""
    from torchvision.transforms.v2 import functional as TF
    from torchvision.utils import draw_segmentation_masks

    from uda.nets.segmentation import palette

    x, y = domain.first_test_images(n)
    x = x.to(prepare.scale.device)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    y = TF.resize(y.to(x.device)[:, None], list(x.shape[-2:]), interpolation=TF.InterpolationMode.NEAREST)[:, 0]
    pred = upsample(method.predict(prepare(x)).float(), tuple(x.shape[-2:])).argmax(1)
    colours = palette(num_classes)
    classes = torch.arange(num_classes, device=x.device)[:, None, None]

    def paint(labels: torch.Tensor) -> torch.Tensor:
        canvas = torch.zeros_like(x[0])  # ignore (255) stays black
        return torch.stack([draw_segmentation_masks(canvas, lab[None] == classes, alpha=1.0, colors=colours)
                            for lab in labels])

    return torch.cat([x, paint(y), paint(pred)]).float() / 255.0


@torch.no_grad()
def pictures(method: Method, source: Domain, target: Domain, info: PairInfo, prepare: Normalize,
             device: torch.device) -> dict[str, torch.Tensor]:
    """The image grids of an evaluation, [N, C, H, W] in [0, 1]: segmentation inputs / labels / predictions
    (4 test images per domain), and the method's own grids (``Method.images``; 8 or 4 test images)."""
    seg = info.task == SEGMENTATION
    out = ({f"seg/{role}": seg_grid(method, dom, prepare, info.num_classes)
            for role, dom in (("source", source), ("target", target))} if seg else {})
    n = 4 if seg else 8
    grids = method.images(*(prepare(d.first_test_images(n)[0].to(device)) for d in (source, target)))
    for name, imgs in grids.items():  # back from the normalised space to [0, 1]
        out[name] = prepare.undo(imgs)
    return out


# ---------- the evaluator
class BestCheckpoint:
    """The evaluation ``trainer.select`` prefers so far (a label-free criterion), as checkpoints/best.pt holds it."""

    def __init__(self, criterion: str, metric: str):
        self.criterion = criterion
        self.key, self.higher = selection.criterion_key(criterion, metric)
        self.best: dict[str, Any] = {}  # {criterion, step, score}: in every checkpoint, restored on resume

    def restore(self, saved: dict[str, Any] | None) -> None:
        if (saved or {}).get("criterion") == self.criterion:
            self.best.update(saved)

    def improves(self, res: dict[str, Any]) -> bool:
        """Is ``res`` at least as good as the best so far (ties: the later step)? Then it becomes the best."""
        score = res.get(self.key)
        if score is None or not math.isfinite(score):
            return False
        old = self.best.get("score")
        if old is not None and not (score >= old if self.higher else score <= old):
            return False
        self.best.update(criterion=self.criterion, step=res["step"], score=score)
        return True


class Evaluator:
    """One evaluation point of the loop (rank 0): ``evaluate_pair`` and the grids with the method in eval
    mode, then TensorBoard, ``best.pt`` (through ``save_best``), the images, and a ``metrics.jsonl`` row."""

    def __init__(self, *, method, source, target, info, prepare, device, autocast, batch_size, workers, writer,
                 run_dir: Path, stage_ends: dict[int, str], best: BestCheckpoint, save_best: Callable[[int], None],
                 images: bool = True):
        self.method, self.source, self.target, self.info, self.prepare = method, source, target, info, prepare
        self.device, self.autocast, self.batch_size, self.workers = device, autocast, batch_size, workers
        self.writer, self.run_dir, self.stage_ends, self.best, self.save_best = (
            writer,
            run_dir,
            stage_ends,
            best,
            save_best,
        )
        self.metrics_path = run_dir / "metrics.jsonl"
        self.images = images  # trainer.images: the grids at each evaluation

    def __call__(self, done: int) -> dict[str, Any]:
        self.method.eval()
        with self.autocast():
            res = {"step": done} | evaluate_pair(self.method, self.source, self.target, self.info,
                                                 prepare=self.prepare, batch_size=self.batch_size,
                                                 device=self.device, workers=self.workers)
            if done in self.stage_ends:
                res["stage_end"] = self.stage_ends[done]
            grids = pictures(self.method, self.source, self.target, self.info, self.prepare, self.device) \
                if self.images else {}
        self.method.train()
        self._scalars(res, done)
        if self.best.improves(res):
            self.save_best(done)
        if grids:
            write_images(self.writer, self.run_dir, grids, done)
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(res) + "\n")
        return res

    def _scalars(self, res: dict[str, Any], done: int) -> None:
        metric = self.info.metric
        for k, v in res.items():
            if k in (f"source_{metric}", f"target_{metric}", "source_mean_class_acc", "target_mean_class_acc"):
                self.writer.add_scalar(f"eval/{k}", v, done)
            elif k.endswith(("_iou", "_class_acc")) and isinstance(v, dict):  # per class: iou_target/road, ...
                kind, role = (
                    ("iou", k[: -len("_iou")]) if k.endswith("_iou") else ("class_acc", k[: -len("_class_acc")])
                )
                for name, value in v.items():
                    if value is not None:
                        self.writer.add_scalar(f"{kind}_{role}/{name}", value, done)
            elif k != "step" and isinstance(v, float):
                self.writer.add_scalar(f"select/{k}", v, done)
