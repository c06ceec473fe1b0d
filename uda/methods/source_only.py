"""Source-only baseline: the backbone and classifier trained on labelled source images alone."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from uda.config import SourceOnlyConfig
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
