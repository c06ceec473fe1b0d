"""AdaptSegNet: Tsai et al., "Learning to Adapt Structured Output Space for Semantic Segmentation",
CVPR 2018 — adversarial alignment of the segmenter's softmax OUTPUTS, single- or multi-level.

Per iteration, in the paper's (and official code's) order, one optimizer step at the end:
  1) D frozen: source segmentation loss CE(P2_s, y_s) + lambda_seg CE(P1_s, y_s);
  2) + target adversarial loss lambda_adv1 L_adv(D1(P1_t)) + lambda_adv2 L_adv(D2(P2_t)), target outputs
     labelled "source" (gradients reach the segmenter only); one backward of their sum;
  3) D unfrozen: L_D = 1/2 L(D_i(P_i_s), source) + 1/2 L(D_i(P_i_t), target) on detached outputs, backward;
  4) step the segmenter (SGD, heads with ``backbone.head_lr_mult``) and the discriminators (Adam).

P2 = softmax of the main (layer4 / last-block) classifier, P1 = the auxiliary (layer3) one, both
upsampled to the input size; source = 0, target = 1. Weights (paper): lambda_seg 0.1, lambda_adv 0.001
(main) and 0.0002 (aux). Evaluation uses the main output only (as the official evaluate script).

Reading: the official code runs the segmenter on the source batch, backpropagates, then runs it on the
target batch; its DeepLab has frozen batch norm, so that is the same as one pass over both batches,
which is what this does (``forward_pair``). With a segmenter whose batch norm trains (digits_seg), the
joint pass keeps training and evaluation statistics consistent; separate passes did not (see
``forward_pair``). Gradients equal the two-backward version because D is frozen in steps 1-2.

Ledger row (paper settings, departures, evidence): docs/fidelity.md#adaptsegnet.
"""
from __future__ import annotations

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


class GanLoss(str, Enum):
    bce = "bce"  # binary cross-entropy with logits (the paper's default)
    ls = "ls"  # least squares (the official code's LS-GAN option)


@dataclass
class AdaptSegNetConfig(MethodConfig):
    """Output-space discriminators on the segmenter's softmax outputs."""

    name: str = "adaptsegnet"
    TASKS = (SEGMENTATION,)
    multi_level: bool = True  # + the auxiliary (layer3) output and its own discriminator; false = single-level
    gan: GanLoss = GanLoss.bce
    seg_aux_weight: float = 0.1  # lambda_seg on the auxiliary source segmentation loss
    adv_weight: float = 0.001  # lambda_adv on the main output
    adv_aux_weight: float = 0.0002  # lambda_adv on the auxiliary output
    ndf: int = 64  # discriminator widths ndf, 2ndf, 4ndf, 8ndf, 1 (5 convs 4x4 stride 2)
    # D: Adam 1e-4, betas (0.9, 0.99), poly; the segmenter: the run's `optimizer`
    disc_optimizer: OptimizerConfig = field(default_factory=lambda: adam(1e-4, (0.9, 0.99), Schedule.poly,
                                                                         sched_power=0.9))
    # uda tune's search space (uda/schema/search.py): each range and where it comes from
    SEARCH = {
        "method.adv_weight": log(1e-4, 1e-2, "stated: a decade either side of the paper's 0.001"),
        "method.adv_aux_weight": log(2e-5, 2e-3, "stated: a decade either side of the paper's 0.0002"),
    }

    def search_space(self):
        """adv_aux_weight only where the auxiliary output is adapted (multi-level)."""
        return {k: v for k, v in self.SEARCH.items() if self.multi_level or k != "method.adv_aux_weight"}

    def check(self, cfg) -> None:
        for key in ("seg_aux_weight", "adv_weight", "adv_aux_weight"):
            nonneg(getattr(self, key), f"method.{key}")
        positive(self.ndf, "method.ndf")
        self.disc_optimizer.check("method.disc_optimizer")


class AdaptSegNet(Method):
    Config = AdaptSegNetConfig

    def __init__(self, *, cfg: AdaptSegNetConfig, segmenter: SegNet, disc: nn.Module, disc_aux: nn.Module | None,
                 head_optimizer: OptimizerConfig):
        super().__init__()
        self.cfg = cfg
        self.segmenter = segmenter
        self.disc = disc  # D2 on the main output
        self.disc_aux = disc_aux  # D1 on the auxiliary output (multi-level)
        self.head_optimizer = head_optimizer

    @classmethod
    def from_config(cls, cfg, info):
        m = cfg.method
        segmenter = build_segmenter(cfg.backbone, in_channels=info.channels, num_classes=info.num_classes,
                                    aux=m.multi_level)
        disc_aux = OutputDiscriminator(info.num_classes, m.ndf) if m.multi_level else None
        return cls(cfg=m, segmenter=segmenter, disc=OutputDiscriminator(info.num_classes, m.ndf), disc_aux=disc_aux,
                   head_optimizer=head_optimizer(cfg))

    def _discs(self) -> list[nn.Module]:
        return [self.disc] + ([self.disc_aux] if self.disc_aux is not None else [])

    def param_groups(self):
        return seg_groups(self.segmenter) | {"disc": [p for d in self._discs() for p in d.parameters()]}

    def optimizer_overrides(self):
        return {"head": self.head_optimizer, "disc": self.cfg.disc_optimizer}

    def update(self, src: Batch, tgt: Batch, step, opt):
        c, kind = self.cfg, self.cfg.gan.value
        discs = self._discs()
        seg_w = [1.0, c.seg_aux_weight]  # main, aux
        adv_w = [c.adv_weight, c.adv_aux_weight]
        opt.zero("seg", "head", "disc")
        # 1) D frozen: source segmentation loss
        set_requires_grad(discs, False)
        seg_s, seg_t = forward_pair(self.segmenter, src.x, tgt.x)
        out_s = output_levels(seg_s, tuple(src.x.shape[-2:]), c.multi_level)
        out_t = output_levels(seg_t, tuple(tgt.x.shape[-2:]), c.multi_level)
        losses_seg = [seg_ce(o, src.y) for o in out_s]
        loss_seg = sum(w * lv for w, lv in zip(seg_w, losses_seg))
        # 2) target outputs labelled "source" by the frozen D: gradients reach the segmenter only
        losses_adv = [gan_loss(d(F.softmax(o.float(), dim=1)), SOURCE, kind) for d, o in zip(discs, out_t)]
        loss_adv = sum(w * lv for w, lv in zip(adv_w, losses_adv))
        opt.backward(loss_seg + loss_adv)
        # 3) D unfrozen: real labels on detached outputs, half source half target
        set_requires_grad(discs, True)
        loss_d = output_disc_loss(discs, [F.softmax(o.detach().float(), dim=1) for o in out_s],
                                  [F.softmax(o.detach().float(), dim=1) for o in out_t], kind)
        opt.backward(loss_d)
        # 4) one step of the segmenter and the discriminators
        opt.apply("seg", "head", "disc")
        stats = {"loss/seg": losses_seg[0].detach(), "loss/adv": losses_adv[0].detach(), "loss/disc": loss_d.detach(),
                 "acc/source_pixels": pixel_accuracy(out_s[0], src.y)}
        if c.multi_level:
            stats |= {"loss/seg_aux": losses_seg[1].detach(), "loss/adv_aux": losses_adv[1].detach()}
        return stats

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.segmenter(x)
        return out.features, out.logits
