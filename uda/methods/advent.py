"""ADVENT: Vu et al., "ADVENT: Adversarial Entropy Minimization for Domain Adaptation in Semantic
Segmentation", CVPR 2019 — entropy minimisation on target predictions, direct or adversarial.

With I(p) = -p log2(p) / log2(C) per class and pixel (the weighted self-information map, [N, C, H, W]) and
P_main, P_aux the softmax of the main and auxiliary classifiers upsampled to the input size:

``mode: minent``, per iteration one step of the segmenter on
  1) CE(P_main_s, y_s) + lambda_seg CE(P_aux_s, y_s) + lambda_ent E(P_main_t) + lambda_ent_aux E(P_aux_t),
     E(p) = the mean over target pixels of sum_c I(p) (the entropy normalised to [0, 1]).
``mode: advent``, in the official code's order, one optimizer step at the end:
  1) D frozen: the source segmentation loss, as above;
  2) + lambda_adv L(D(I(P_main_t)), source) + lambda_adv_aux L(D_aux(I(P_aux_t)), source): target maps labelled
     "source" (gradients reach the segmenter only); one backward of their sum;
  3) D unfrozen: 1/2 L(D(I(P_s)), source) + 1/2 L(D(I(P_t)), target) per level on detached maps;
  4) step the segmenter and the discriminators.

Weights (official valeoai/ADVENT configs): lambda_seg 0.1, lambda_ent 0.001 / 0.0002, lambda_adv 0.001 /
0.0002, BCE with logits, source 0, target 1; D is AdaptSegNet's (5 convs 4x4, 64-128-256-512-1) on the C
channels of I. Readings: multi-level on by default, as the official configs; I adds 1e-30 inside the log
(the official code); one pass of the segmenter over both batches (``forward_pair``, as AdaptSegNet here:
with DeepLab's frozen batch norm this equals the official separate passes). "AdvEnt+MinEnt" in the paper is
an ensemble of two separately trained models, not a third mode. Ledger row: docs/fidelity.md#advent.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum

import torch
import torch.nn.functional as F
from torch import nn

from uda.losses import gan_loss, seg_ce
from uda.methods.base import Batch, Method
from uda.methods.parts import SOURCE, head_optimizer, output_disc_loss, output_levels, pixel_accuracy, seg_groups
from uda.nets import set_requires_grad
from uda.nets.segmentation import OutputDiscriminator, SegNet, build_segmenter, forward_pair
from uda.schema import SEGMENTATION, OptimizerConfig
from uda.schema.base import nonneg, positive
from uda.schema.method import MethodConfig
from uda.schema.optimizer import Schedule, adam
from uda.schema.search import log


class Mode(str, Enum):
    minent = "minent"  # direct entropy minimisation
    advent = "advent"  # adversarial: D on the self-information maps


@dataclass
class ADVENTConfig(MethodConfig):
    name: str = "advent"
    TASKS = (SEGMENTATION,)
    mode: Mode = Mode.advent
    multi_level: bool = True  # + the auxiliary output (its entropy / its own D)
    seg_aux_weight: float = 0.1
    ent_weight: float = 0.001  # minent: lambda_ent on the main output
    ent_aux_weight: float = 0.0002
    adv_weight: float = 0.001  # advent: lambda_adv on the main output
    adv_aux_weight: float = 0.0002
    ndf: int = 64
    # D: Adam 1e-4, betas (0.9, 0.99), poly (the official LEARNING_RATE_D and schedule)
    disc_optimizer: OptimizerConfig = field(default_factory=lambda: adam(1e-4, (0.9, 0.99), Schedule.poly,
                                                                         sched_power=0.9))
    # uda tune's search space (uda/schema/search.py): each range and where it comes from
    SEARCH = {
        "method.ent_weight": log(1e-4, 1e-2, "stated: a decade either side of the official 0.001 (minent)"),
        "method.adv_weight": log(1e-4, 1e-2, "stated: a decade either side of the official 0.001 (advent)"),
    }
    OPTIMISES = ("entropy", "im")  # minent minimises mean H(p), a term of IM = H(mean p) - mean H(p); advent
    # aligns the entropy maps

    def search_space(self):
        """The weight of the mode that runs: ent_weight for minent, adv_weight for advent."""
        unused = "method.adv_weight" if self.mode == Mode.minent else "method.ent_weight"
        return {k: v for k, v in self.SEARCH.items() if k != unused}

    def check(self, cfg) -> None:
        for key in ("seg_aux_weight", "ent_weight", "ent_aux_weight", "adv_weight", "adv_aux_weight"):
            nonneg(getattr(self, key), f"method.{key}")
        positive(self.ndf, "method.ndf")
        self.disc_optimizer.check("method.disc_optimizer")


def self_information(p: torch.Tensor) -> torch.Tensor:
    """I = -p log2(p + 1e-30) / log2(C), per class and pixel: [N, C, H, W] probabilities -> the same shape."""
    return -p * torch.log2(p + 1e-30) / math.log2(p.shape[1])


def entropy_loss(p: torch.Tensor) -> torch.Tensor:
    """E(p) = sum_c I(p) averaged over the N x H x W pixels: the entropy normalised by log C, in [0, 1]."""
    return self_information(p).sum(1).mean()


class ADVENT(Method):
    Config = ADVENTConfig

    def __init__(self, *, cfg: ADVENTConfig, segmenter: SegNet, discs: list[nn.Module],
                 head_optimizer: OptimizerConfig):
        super().__init__()
        self.cfg = cfg
        self.segmenter = segmenter
        self.discs = nn.ModuleList(discs)  # [D_main, D_aux] (advent; D_aux only multi-level), [] for minent
        self.head_optimizer = head_optimizer
        self.groups = ("seg", "head", "disc") if discs else ("seg", "head")

    @classmethod
    def from_config(cls, cfg, info):
        m = cfg.method
        segmenter = build_segmenter(cfg.backbone, in_channels=info.channels, num_classes=info.num_classes,
                                    aux=m.multi_level)
        levels = 2 if m.multi_level else 1
        discs = [OutputDiscriminator(info.num_classes, m.ndf) for _ in range(levels)] if m.mode == Mode.advent else []
        return cls(cfg=m, segmenter=segmenter, discs=discs, head_optimizer=head_optimizer(cfg))

    def param_groups(self):
        groups = seg_groups(self.segmenter)
        return groups | {"disc": list(self.discs.parameters())} if len(self.discs) else groups

    def optimizer_overrides(self):
        return {"head": self.head_optimizer} | ({"disc": self.cfg.disc_optimizer} if len(self.discs) else {})

    def update(self, src: Batch, tgt: Batch, step, opt):
        c = self.cfg
        opt.zero(*self.groups)
        discs = list(self.discs)
        # 1) (D frozen) the source segmentation loss, main + lambda_seg aux
        set_requires_grad(discs, False)
        seg_s, seg_t = forward_pair(self.segmenter, src.x, tgt.x)
        out_s = output_levels(seg_s, tuple(src.x.shape[-2:]), c.multi_level)
        out_t = output_levels(seg_t, tuple(tgt.x.shape[-2:]), c.multi_level)
        losses_seg = [seg_ce(o, src.y) for o in out_s]
        loss_seg = sum(w * lv for w, lv in zip([1.0, c.seg_aux_weight], losses_seg))
        p_t = [F.softmax(o.float(), dim=1) for o in out_t]
        stats = {"loss/seg": losses_seg[0].detach(), "acc/source_pixels": pixel_accuracy(out_s[0], src.y)}
        if c.mode == Mode.minent:
            # 1) + the normalised target entropy, then one step of the segmenter
            losses_ent = [entropy_loss(p) for p in p_t]
            opt.backward(loss_seg + sum(w * lv for w, lv in zip([c.ent_weight, c.ent_aux_weight], losses_ent)))
            opt.apply(*self.groups)
            return stats | {"loss/ent": losses_ent[0].detach()}
        # 2) target self-information maps labelled "source" by the frozen D
        i_t = [self_information(p) for p in p_t]
        losses_adv = [gan_loss(d(i), SOURCE) for d, i in zip(discs, i_t)]
        opt.backward(loss_seg + sum(w * lv for w, lv in zip([c.adv_weight, c.adv_aux_weight], losses_adv)))
        # 3) D unfrozen, on detached maps: source -> source, target -> target, each / 2
        set_requires_grad(discs, True)
        i_s = [self_information(F.softmax(o.detach().float(), dim=1)) for o in out_s]
        loss_d = output_disc_loss(discs, i_s, i_t)
        opt.backward(loss_d)
        # 4) one step of the segmenter and the discriminators
        opt.apply(*self.groups)
        return stats | {"loss/adv": losses_adv[0].detach(), "loss/disc": loss_d.detach(),
                        "loss/ent": entropy_loss(p_t[0].detach())}

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.segmenter(x)
        return out.features, out.logits
