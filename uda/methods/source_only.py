"""Source-only baseline: the backbone and classifier trained on labelled source images alone.

On a segmentation pair (``info.task == "segmentation"``) the same name builds ``SegSourceOnly``:
the segmenter trained with per-pixel cross-entropy on source (AdaptSegNet's "source only" row),
with the same parameter groups and optimizers as the adaptation methods, so the comparison is fair.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from uda.config import OptimizerConfig, SourceOnlyConfig, TrainConfig
from uda.losses import seg_ce
from uda.methods.base import Batch, Method
from uda.nets import build_backbone
from uda.registry import register


@register("source_only")
class SourceOnly(Method):
    def __init__(self, *, cfg: SourceOnlyConfig, features: nn.Module, classifier: nn.Module):
        super().__init__()
        self.cfg = cfg
        self.features = features
        self.classifier = classifier

    @classmethod
    def from_config(cls, cfg, info):
        if info.task == "segmentation":
            return SegSourceOnly.from_config(cfg, info)
        features, classifier, _ = build_backbone(
            cfg.backbone, in_channels=info.channels, image_size=info.image_size, num_classes=info.num_classes
        )
        return cls(cfg=cfg.method, features=features, classifier=classifier)

    def param_groups(self):
        return {"feat": list(self.features.parameters()), "cls": list(self.classifier.parameters())}

    def update(self, src: Batch, tgt: Batch, step, opt):
        # 1) F+C step: cross-entropy on labelled source; the target batch is never looked at
        logits_s = self.classifier(self.features(src.x))
        loss_cls = F.cross_entropy(logits_s.float(), src.y)
        opt.step(loss_cls, "feat", "cls")
        return {
            "loss/cls": loss_cls.detach(),
            "acc/source_batch": (logits_s.argmax(1) == src.y).float().mean().detach(),
        }

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        return f, self.classifier(f)


def seg_groups(segmenter: nn.Module) -> dict[str, list[nn.Parameter]]:
    """A segmenter's parameter groups: "seg" (the body) and "head" (the new classifier heads)."""
    return {"seg": segmenter.pretrained_parameters(), "head": segmenter.new_parameters()}


def seg_overrides(cfg: TrainConfig) -> dict[str, OptimizerConfig]:
    """The heads' optimizer: the run's, with ``backbone.head_lr_mult`` x its learning rate (DeepLab: 10)."""
    return {"head": dataclasses.replace(cfg.optimizer, lr=cfg.optimizer.lr * cfg.backbone.head_lr_mult)}


class SegSourceOnly(Method):
    method_name = "source_only"

    def __init__(self, *, cfg: SourceOnlyConfig, segmenter: nn.Module, head_optimizer: OptimizerConfig):
        super().__init__()
        self.cfg = cfg
        self.segmenter = segmenter
        self.head_optimizer = head_optimizer

    @classmethod
    def from_config(cls, cfg, info):
        from uda.nets.segmentation import build_segmenter

        segmenter = build_segmenter(cfg.backbone, in_channels=info.channels, num_classes=info.num_classes)
        return cls(cfg=cfg.method, segmenter=segmenter, head_optimizer=seg_overrides(cfg)["head"])

    def param_groups(self):
        return seg_groups(self.segmenter)

    def optimizer_overrides(self):
        return {"head": self.head_optimizer}

    def update(self, src: Batch, tgt: Batch, step, opt):
        # 1) segmenter step: per-pixel cross-entropy on labelled source (255 ignored); target unused
        logits_s = self.segmenter(src.x).logits
        loss_seg = seg_ce(logits_s, src.y)
        opt.step(loss_seg, "seg", "head")
        return {"loss/seg": loss_seg.detach()}

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.segmenter(x)
        return out.features, out.logits
