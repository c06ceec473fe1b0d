"""Source-only baseline: the network trained on labelled source images alone.

Per iteration:
  1) one step of the network on the source loss; the target batch is never looked at.
     classification: CE(C(F(x_s)), y_s); segmentation: per-pixel CE of the segmenter on x_s (255 ignored).

Readings: on a segmentation pair (``info.task``) the same name builds ``SegSourceOnly``, the segmenter with
the same parameter groups and optimizers as the adaptation methods (AdaptSegNet's "source only" row), so
the comparison is fair.

Ledger row (paper settings, departures, evidence): docs/fidelity.md#source_only.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from uda.losses import seg_ce
from uda.methods.base import Batch, Method
from uda.methods.parts import (
    classifier_nets,
    feature_groups,
    head_groups,
    head_optimizer,
    new_layer_overrides,
    seg_groups,
    source_ce,
)
from uda.nets.segmentation import build_segmenter
from uda.schema import CLASSIFICATION, SEGMENTATION, OptimizerConfig
from uda.schema.method import MethodConfig


@dataclass
class SourceOnlyConfig(MethodConfig):
    name: str = "source_only"
    TASKS = (CLASSIFICATION, SEGMENTATION)


class SourceOnly(Method):
    Config = SourceOnlyConfig

    def __init__(self, *, cfg: SourceOnlyConfig, features: nn.Module, classifier: nn.Module,
                 head_optimizer: OptimizerConfig):
        super().__init__()
        self.cfg = cfg
        self.features = features
        self.classifier = classifier
        self.head_optimizer = head_optimizer
        # the group names, fixed by the nets ("neck" only where a pretrained body has new layers)
        self.groups = (*feature_groups(features), "cls")

    @classmethod
    def from_config(cls, cfg, info):
        if info.task == SEGMENTATION:
            return SegSourceOnly.from_config(cfg, info)
        features, classifier, _ = classifier_nets(cfg, info)
        return cls(cfg=cfg.method, features=features, classifier=classifier, head_optimizer=head_optimizer(cfg))

    def param_groups(self):
        return head_groups(self.features, cls=self.classifier)

    def optimizer_overrides(self):
        return new_layer_overrides(self.groups, self.head_optimizer)

    def update(self, src: Batch, tgt: Batch, step, opt):
        # 1) F+C step: cross-entropy on labelled source; the target batch is never looked at
        loss_cls, acc_s = source_ce(self.classifier(self.features(src.x)), src.y)
        opt.step(loss_cls, *self.groups)
        return {"loss/cls": loss_cls.detach(), "acc/source_batch": acc_s}

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        return f, self.classifier(f)


class SegSourceOnly(Method):
    Config = SourceOnlyConfig

    def __init__(self, *, cfg: SourceOnlyConfig, segmenter: nn.Module, head_optimizer: OptimizerConfig):
        super().__init__()
        self.cfg = cfg
        self.segmenter = segmenter
        self.head_optimizer = head_optimizer

    @classmethod
    def from_config(cls, cfg, info):
        segmenter = build_segmenter(cfg.backbone, in_channels=info.channels, num_classes=info.num_classes)
        return cls(cfg=cfg.method, segmenter=segmenter, head_optimizer=head_optimizer(cfg))

    def param_groups(self):
        return seg_groups(self.segmenter)

    def optimizer_overrides(self):
        return {"head": self.head_optimizer}

    def update(self, src: Batch, tgt: Batch, step, opt):
        # 1) segmenter step: per-pixel CE on labelled source (255 ignored); target unused
        loss_seg = seg_ce(self.segmenter(src.x).logits, src.y)
        opt.step(loss_seg, "seg", "head")
        return {"loss/seg": loss_seg.detach()}

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.segmenter(x)
        return out.features, out.logits
