"""FixMatch for UDA: Sohn et al., "FixMatch: Simplifying Semi-Supervised Learning with Consistency and
Confidence", NeurIPS 2020, as Transfer-Learning-Library's UDA port (examples/domain_adaptation/
image_classification/fixmatch.py:182-241).

Per iteration, three forwards and one step of F and C:
  1) the weak view x_w (a random resized crop, scale (0.5, 1), + a mirror) and, independently, the strong
     view x_str (another crop + mirror, then RandAugment 'rand-m10-n2-mstd2') of each target image;
  2) p_w = softmax(C(F(x_w))) with no gradient, in train mode; y^ = argmax p_w;
  3) one step of F and C on
         L = CE(C(F(x_s)), y_s) + trade_off * (1 / n) sum_i 1[max p_w,i > threshold] CE(C(F(x_str,i)), y^_i)
     with source and target forwarded separately (each domain its own batch statistics).

Readings (TLlib, where the FixMatch paper's semi-supervised setting is not UDA): threshold 0.9 (strict >),
trade-off 1, the mean over the WHOLE target batch (masked examples count as 0), hard pseudo-labels from the
current model (no EMA, no distribution alignment), SGD with Nesterov momentum and weight decay 1e-3
(fixmatch.yaml). The mirror follows the pair: pairs with ``data.augment`` (object images) mirror, digits do
not. Every draw comes from (seed, step, rank), so a resumed run repeats it. Ledger row:
docs/fidelity.md#fixmatch.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from uda.augment import from_pixels, rand_augment, random_resized_crop, to_pixels
from uda.data.streams import step_generator
from uda.errors import ConfigError
from uda.methods.base import Batch, Method
from uda.methods.parts import (
    classifier_nets,
    feature_groups,
    head_groups,
    head_optimizer,
    new_layer_overrides,
    source_ce,
)
from uda.schema.base import nonneg, positive
from uda.schema.method import MethodConfig
from uda.schema.optimizer import OptimizerConfig
from uda.schema.search import log, uniform

VIEW_STREAM = 7  # after the index streams (1, 2), mean teacher's (3), DACS's (4) and MIC's (5, 6) draws


@dataclass
class FixMatchConfig(MethodConfig):
    name: str = "fixmatch"
    threshold: float = 0.9  # a pseudo-label counts where max p_w > threshold
    trade_off: float = 1.0  # the weight of the unlabelled loss
    crop_scale: list[float] = field(default_factory=lambda: [0.5, 1.0])  # both views' RandomResizedCrop scale
    # the strong view's RandAugment: 'rand-m{magnitude}-n{ops}-mstd{magnitude_std}', each op with p = op_prob
    ops: int = 2
    magnitude: float = 10.0
    magnitude_std: float = 2.0
    op_prob: float = 0.5
    # uda tune's search space (uda/schema/search.py): each range and where it comes from
    SEARCH = {
        "method.threshold": uniform(0.7, 0.98, "stated: over TLlib's 0.9 (fixmatch.py:296) and 0.8 (fixmatch.sh:26)"),
        "method.trade_off": log(0.1, 10.0, "stated: a decade either side of the official 1"),
    }

    def check(self, cfg) -> None:
        if not 0 <= self.threshold <= 1:
            raise ConfigError(f"method.threshold must be in [0, 1], got {self.threshold}")
        nonneg(self.trade_off, "method.trade_off")
        if len(self.crop_scale) != 2 or not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ConfigError(f"method.crop_scale must be [low, high] with 0 < low <= high <= 1, got {self.crop_scale}")
        positive(self.ops, "method.ops")
        if not 0 <= self.magnitude <= 10:
            raise ConfigError(f"method.magnitude must be in [0, 10] (timm's levels), got {self.magnitude}")
        nonneg(self.magnitude_std, "method.magnitude_std")
        if not 0 <= self.op_prob <= 1:
            raise ConfigError(f"method.op_prob must be in [0, 1], got {self.op_prob}")


def pseudo_label_loss(logits_str: torch.Tensor, probs_w: torch.Tensor, threshold: float) -> tuple[torch.Tensor,
                                                                                                      torch.Tensor]:
    """(mean over ALL n of 1[max p_w > threshold] CE(logits_str, argmax p_w), the share above it); TLlib's
    ConfidenceBasedSelfTrainingLoss."""
    conf, y_hat = probs_w.max(1)
    mask = (conf > threshold).float()
    return (mask * F.cross_entropy(logits_str.float(), y_hat, reduction="none")).mean(), mask.mean()


class FixMatch(Method):
    Config = FixMatchConfig

    def __init__(self, *, cfg: FixMatchConfig, features: nn.Module, classifier: nn.Module,
                 head_optimizer: OptimizerConfig, seed: int, flip: bool, mean: tuple[float, ...],
                 std: tuple[float, ...]):
        super().__init__()
        self.cfg, self.seed, self.flip = cfg, seed, flip
        self.features = features
        self.classifier = classifier
        self.head_optimizer = head_optimizer
        self.groups = (*feature_groups(features), "cls")
        self.register_buffer("mean", torch.tensor(mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(-1, 1, 1), persistent=False)
        self.fill = [round(255 * m) for m in mean]  # timm's img_mean: the colour geometric ops fill with

    @classmethod
    def from_config(cls, cfg, info):
        features, classifier, _ = classifier_nets(cfg, info)
        return cls(cfg=cfg.method, features=features, classifier=classifier, head_optimizer=head_optimizer(cfg),
                   seed=cfg.seed, flip=cfg.data.augment, mean=info.mean, std=info.std)

    def param_groups(self):
        return head_groups(self.features, cls=self.classifier)

    def optimizer_overrides(self):
        return new_layer_overrides(self.groups, self.head_optimizer)

    @torch.no_grad()
    def views(self, x_t: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(weak, strong) views of a normalised target batch: per image, a crop + mirror; then another crop +
        mirror and RandAugment, in pixel space."""
        c, scale = self.cfg, tuple(self.cfg.crop_scale)
        pixels = to_pixels(x_t, self.mean, self.std).cpu()
        weak, strong = [], []
        for img in pixels:
            weak.append(random_resized_crop(img, gen, scale, self.flip))
            s = random_resized_crop(img, gen, scale, self.flip)
            strong.append(rand_augment(s, gen, ops=c.ops, magnitude=c.magnitude, magnitude_std=c.magnitude_std,
                                       prob=c.op_prob, fill=self.fill))
        back = [from_pixels(torch.stack(v).to(x_t.device), self.mean, self.std, x_t.dtype) for v in (weak, strong)]
        return back[0], back[1]

    def update(self, src: Batch, tgt: Batch, step, opt):
        c = self.cfg
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        # 1) the weak and strong views of the target batch, from (seed, step, rank)
        x_w, x_str = self.views(tgt.x, step_generator(self.seed, step, stream=VIEW_STREAM, rank=rank))
        # 2) the current model's probabilities on the weak view: no gradient, train mode (BN statistics move)
        with torch.no_grad():
            p_w = torch.softmax(self.classifier(self.features(x_w)).float(), dim=1)
        # 3) one step of F and C: source CE + the confident pseudo-labels' CE on the strong view
        loss_cls, acc_s = source_ce(self.classifier(self.features(src.x)), src.y)
        loss_u, confident = pseudo_label_loss(self.classifier(self.features(x_str)), p_w, c.threshold)
        opt.step(loss_cls + c.trade_off * loss_u, *self.groups)
        return {"loss/cls": loss_cls.detach(), "loss/pseudo": loss_u.detach(), "acc/source_batch": acc_s,
                "acc/confident_target": confident}

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        return f, self.classifier(f)
