"""DANN: Ganin et al., "Domain-Adversarial Training of Neural Networks", JMLR 2016.

Per iteration, one forward and ONE backward pass over a batch of n source + n target images:
  1) one step of F, C and D on
         L = CE(C(F(x_s)), y_s) + L_d(D(R(F(x_s))), source) + L_d(D(R(F(x_t))), target)
     C descends CE, D descends the domain loss L_d, F descends CE and ascends lambda_p L_d (through R).

Readings: Algorithm 1 of the paper written with its gradient reversal layer R (Sec. 4.2), so the three
updates are one step; lambda_p = adv_weight (2 / (1 + exp(-grl_gamma p)) - 1) with p = step / max_steps
(Sec. 5.2.2); L_d is binary cross-entropy, source = 0, target = 1, reduced as the paper's objective
(Eq. 18-19: the mean over the n source predictions plus the mean over the n' target predictions,
``domain_reduction: sum``; ``mean`` halves it, the mean over all 2n). Ledger row: docs/fidelity.md#dann.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import torch
from torch import nn

from uda.losses import binary_accuracy, domain_bce, grad_reverse, grl_lambda
from uda.methods.base import Batch, Method
from uda.methods.parts import (
    classifier_nets,
    feature_groups,
    head_groups,
    head_optimizer,
    new_layer_overrides,
    source_ce,
)
from uda.nets import mlp
from uda.schema.base import nonneg, widths
from uda.schema.method import MethodConfig
from uda.schema.optimizer import OptimizerConfig
from uda.schema.search import log


class DomainReduction(str, Enum):
    mean = "mean"  # mean over all 2n domain predictions (source and target together)
    sum = "sum"  # mean over source + mean over target (twice the above for equal batches)


@dataclass
class DANNConfig(MethodConfig):
    name: str = "dann"
    # lambda_p = adv_weight * (2 / (1 + exp(-grl_gamma * p)) - 1), p = step / max_steps
    adv_weight: float = 1.0
    grl_gamma: float = 10.0
    # how the domain loss reduces over the batch of n source + n target predictions
    domain_reduction: DomainReduction = DomainReduction.sum  # the paper's Eq. 18
    # hidden widths of the domain classifier (paper, MNIST: one FC100)
    disc_hidden: list[int] = field(default_factory=lambda: [100])
    # uda tune's search space (uda/schema/search.py): each range and where it comes from
    SEARCH = {
        "method.adv_weight": log(0.1, 10.0, "powerful-benchmarker dann_config.py:49 (grl_weight log[0.1, 10])"),
    }

    def check(self, cfg) -> None:
        nonneg(self.adv_weight, "method.adv_weight")
        nonneg(self.grl_gamma, "method.grl_gamma")
        widths(self.disc_hidden, "method.disc_hidden")


class DANN(Method):
    Config = DANNConfig

    def __init__(self, *, cfg: DANNConfig, features: nn.Module, classifier: nn.Module,
                 discriminator: nn.Module, max_steps: int, head_optimizer: OptimizerConfig):
        super().__init__()
        self.cfg = cfg
        self.features = features
        self.classifier = classifier
        self.discriminator = discriminator
        self.max_steps = max_steps
        self.head_optimizer = head_optimizer
        # the group names, fixed by the nets ("neck" only where a pretrained body has new layers)
        self.groups = (*feature_groups(features), "cls", "disc")

    @classmethod
    def from_config(cls, cfg, info):
        features, classifier, feat_dim = classifier_nets(cfg, info)
        discriminator = mlp(feat_dim, cfg.method.disc_hidden, 1)
        return cls(cfg=cfg.method, features=features, classifier=classifier, discriminator=discriminator,
                   max_steps=cfg.trainer.max_steps, head_optimizer=head_optimizer(cfg))

    def param_groups(self):
        return head_groups(self.features, cls=self.classifier, disc=self.discriminator)

    def optimizer_overrides(self):
        return new_layer_overrides(self.groups, self.head_optimizer)

    def grl_lambda(self, step: int) -> float:
        return grl_lambda(step / self.max_steps, self.cfg.grl_gamma, self.cfg.adv_weight)

    def update(self, src: Batch, tgt: Batch, step, opt):
        lam = self.grl_lambda(step)
        n_s = src.x.shape[0]
        # one forward through F for both domains (batch statistics over both: TLlib's DANN)
        f = self.features(torch.cat([src.x, tgt.x]))
        f_s, f_t = f[:n_s], f[n_s:]
        logits_s = self.classifier(f_s)
        loss_cls, acc_s = source_ce(logits_s, src.y)
        # domain classifier behind the gradient reversal: source = 0, target = 1
        d_s = self.discriminator(grad_reverse(f_s, lam))
        d_t = self.discriminator(grad_reverse(f_t, lam))
        loss_dom = domain_bce(d_s, 0) + domain_bce(d_t, 1)
        if self.cfg.domain_reduction == DomainReduction.mean:
            loss_dom = 0.5 * loss_dom  # = the mean over all 2n predictions (equal batch sizes)
        # 1) one step of F, C, D: F gets dCE - lambda dL_d, C dCE, D dL_d (F: "feat" [+ "neck"])
        opt.step(loss_cls + loss_dom, *self.groups)
        return {
            "loss/cls": loss_cls.detach(),
            "loss/domain": loss_dom.detach(),
            "acc/domain": 0.5 * (binary_accuracy(d_s.detach(), 0) + binary_accuracy(d_t.detach(), 1)),
            "acc/source_batch": acc_s,
            "sched/grl_lambda": torch.tensor(lam),
        }

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        return f, self.classifier(f)
