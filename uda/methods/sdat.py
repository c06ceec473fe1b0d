"""SDAT: Rangwani et al., "A Closer Look at Smoothness in Domain Adversarial Training", ICML 2022.

CDAN (or CDAN+MCC, ``mcc_weight`` > 0) whose feature and classifier step is sharpness-aware (SAM,
Foret et al. 2021); D is never perturbed. Per iteration, two forwards and two backwards of the SAME
batch of n source + n target images:
  1) pass 1 at w: the task loss L_1 = CE(C(F(x_s)), y_s) (+ mcc_weight L_MCC(C(F(x_t)))) gives g over F, C;
  2) w <- w + e, e = rho g / (||g|| + 1e-12), ||g|| over F and C together; their gradients zeroed;
  3) pass 2 at w + e: L_2 = CE + L_d(D(R(T(f, g)))) (+ mcc_weight L_MCC), CDAN's loss as in
     ``uda.methods.cdan`` (its part, ``method.cdan``), gives the gradients of F, C and D;
  4) w + e -> w; one step of F and C on pass 2's gradients, and one of D.

Readings (official val-iisc/SDAT examples/cdan_sdat.py:211-252, cdan_mcc_sdat.py:213-256, common/utils/
sam.py): adaptive=False; the norm is over the parameters with a gradient; MCC's T = 2 and, in pass 2,
MCC sits inside the trade-off with CDAN (trade-off 1 here); the weights return by subtracting e;
both passes run in train mode (BN statistics updated twice, the second time at w + e); D's rate decays
with the net's (``method.cdan.disc_constant_lr=false``); SGD with Nesterov momentum 0.9, weight decay
1e-3 (sdat.yaml). Ledger row: docs/fidelity.md#sdat.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from uda.methods.base import Batch, Method
from uda.methods.cdan import CDAN, CDANConfig, domain_accuracy
from uda.methods.mcc import class_confusion
from uda.methods.parts import source_ce
from uda.schema.base import nonneg, positive
from uda.schema.method import MethodConfig
from uda.schema.search import log


@dataclass
class SDATConfig(MethodConfig):
    name: str = "sdat"
    rho: float = 0.05  # SAM's radius (official argparse; its ViT scripts: 0.02, 0.005)
    # CDAN+MCC w/ SDAT when > 0 (official cdan_mcc_sdat.py: 1); 0 is CDAN w/ SDAT
    mcc_weight: float = 0.0
    temperature: float = 2.0  # MCC's T in SDAT's code
    # the CDAN part: CDAN's defaults, D's rate decaying with the net's as SDAT's code has it
    cdan: CDANConfig = field(default_factory=lambda: CDANConfig(disc_constant_lr=False))
    # uda tune's search space (uda/schema/search.py): each range and where it comes from
    SEARCH = {
        "method.rho": log(0.005, 0.1, "stated: over the official 0.005 (VisDA), 0.02 (Office-Home), 0.05 (argparse)"),
        "method.cdan.adv_weight": log(0.1, 10.0, "as cdan"),
    }

    def check(self, cfg, key: str = "method") -> None:
        """``key``: where this config sits (``method``; ``method.host`` inside MIC), for the messages."""
        nonneg(self.rho, f"{key}.rho")
        nonneg(self.mcc_weight, f"{key}.mcc_weight")
        positive(self.temperature, f"{key}.temperature")
        self.cdan.check(cfg, f"{key}.cdan")


class SDAT(Method):
    Config = SDATConfig

    def __init__(self, *, cfg: SDATConfig, cdan: CDAN):
        super().__init__()
        self.cfg = cfg
        self.cdan = cdan  # the host: its networks, its map T, its domain loss and its reversal schedule
        self.sam_groups = cdan.groups[:-1]  # F (its body, a neck) and C; "disc" last, never perturbed

    @classmethod
    def from_config(cls, cfg, info):
        return cls(cfg=cfg.method, cdan=CDAN.part(cfg.method.cdan, cfg, info))

    @property
    def features(self) -> nn.Module:
        return self.cdan.features

    @property
    def classifier(self) -> nn.Module:
        return self.cdan.classifier

    def param_groups(self):
        return self.cdan.param_groups()

    def optimizer_overrides(self):
        return self.cdan.optimizer_overrides()

    def confusion(self, logits_t: torch.Tensor) -> torch.Tensor:
        """mcc_weight L_MCC of the target logits (0 when mcc_weight is 0: CDAN w/ SDAT)."""
        if not self.cfg.mcc_weight:
            return torch.zeros((), device=logits_t.device)
        return self.cfg.mcc_weight * class_confusion(logits_t, self.cfg.temperature)

    def update(self, src: Batch, tgt: Batch, step, opt):
        c, n_s = self.cdan, src.x.shape[0]
        x = torch.cat([src.x, tgt.x])
        adversarial = step >= c.cfg.adv_start
        # 1) pass 1 at w: the task loss CE (+ MCC) -> g over F, C (D has no part in it)
        logits = c.classifier(c.features(x))
        opt.zero(*c.groups)
        opt.backward(source_ce(logits[:n_s], src.y)[0] + self.confusion(logits[n_s:]))
        # 2) w <- w + rho g / ||g|| over F, C; their gradients zeroed
        opt.perturb(self.cfg.rho, *self.sam_groups)
        # 3) pass 2 at w + e on the same batch: CE + CDAN's L_d (+ MCC) -> gradients of F, C, D
        f = c.features(x)
        logits = c.classifier(f)
        loss_cls, acc_s = source_ce(logits[:n_s], src.y)
        loss_mcc = self.confusion(logits[n_s:])
        lam = c.grl_lambda(step)
        out = {"loss/cls": loss_cls.detach(), "acc/source_batch": acc_s, "sched/grl_lambda": torch.tensor(lam)}
        loss = loss_cls + loss_mcc
        if adversarial:
            loss_dom, d = c.domain_loss(f, logits, n_s, lam)
            loss = loss + loss_dom
            out |= {"loss/domain": loss_dom.detach(), "acc/domain": domain_accuracy(d.detach(), n_s)}
        opt.backward(loss)
        # 4) back to w; F and C step on the gradients taken at w + e, and D on its own
        opt.restore()
        opt.apply(*(c.groups if adversarial else self.sam_groups))
        return out | ({"loss/mcc": loss_mcc.detach()} if self.cfg.mcc_weight else {})

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cdan.features_and_logits(x)
