"""MCC: Jin et al., "Minimum Class Confusion for Versatile Domain Adaptation", ECCV 2020.

Per iteration, one forward and ONE backward pass over a batch of n source + n target images, no
discriminator:
  1) one step of F and C on
         L = CE(C(F(x_s)), y_s) + mcc_weight * L_MCC(C(F(x_t)))
     with L_MCC the class confusion of the target batch (``class_confusion``): Y = softmax(z_t / T),
     per-example weights w = 1 + exp(-H(Y)) (detached, rescaled to sum to n), C = Y^T diag(w) Y,
     each column of C divided by its sum, L_MCC = (sum(C~) - trace(C~)) / K.

Readings (official thuml/Versatile-Domain-Adaptation code where the paper is silent): T = 2.5 scales the
probabilities that give both the weights and C; H adds 1e-5 inside the log; the weights are detached.
Ledger row: docs/fidelity.md#mcc.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

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


@dataclass
class MCCConfig(MethodConfig):
    name: str = "mcc"
    temperature: float = 2.5  # T of the paper (its VisDA script: 3.0)
    mcc_weight: float = 1.0  # the trade-off on L_MCC
    # uda tune's search space (uda/schema/search.py): each range and where it comes from
    SEARCH = {
        "method.temperature": uniform(0.2, 5.0, "powerful-benchmarker mcc_config.py:131 (T U(0.2, 5))"),
        "method.mcc_weight": log(0.1, 10.0, "stated: a decade either side of the paper's 1"),
    }

    def check(self, cfg, key: str = "method") -> None:
        """``key``: where this config sits (``method``; ``method.host`` inside MIC), for the messages."""
        positive(self.temperature, f"{key}.temperature")
        nonneg(self.mcc_weight, f"{key}.mcc_weight")


def class_confusion(logits_t: torch.Tensor, temperature: float) -> torch.Tensor:
    """L_MCC of a target batch (Jin et al. 2020, Eq. 1-7). ``logits_t`` [n, K] -> a scalar in [0, K - 1] / K.

    Y = softmax(logits_t / T); w_i = n (1 + exp(-H(Y_i))) / sum_j (1 + exp(-H(Y_j))), detached;
    C = Y^T diag(w) Y [K, K]; C~_jk = C_jk / sum_j' C_j'k; L = (sum_jk C~_jk - sum_j C~_jj) / K.
    """
    n, k = logits_t.shape
    y = torch.softmax(logits_t.float() / temperature, dim=1)
    h = -(y * torch.log(y + 1e-5)).sum(1)
    w = (1 + torch.exp(-h)).detach()
    w = n * w / w.sum()  # the official code: the weights sum to the batch size
    confusion = (y * w.unsqueeze(1)).t() @ y  # Y^T diag(w) Y
    confusion = confusion / confusion.sum(dim=0, keepdim=True)  # category normalisation (columns)
    return (confusion.sum() - confusion.trace()) / k


class MCC(Method):
    Config = MCCConfig

    def __init__(self, *, cfg: MCCConfig, features: nn.Module, classifier: nn.Module, head_optimizer: OptimizerConfig):
        super().__init__()
        self.cfg = cfg
        self.features = features
        self.classifier = classifier
        self.head_optimizer = head_optimizer
        self.groups = (*feature_groups(features), "cls")

    @classmethod
    def from_config(cls, cfg, info):
        features, classifier, _ = classifier_nets(cfg, info)
        return cls(cfg=cfg.method, features=features, classifier=classifier, head_optimizer=head_optimizer(cfg))

    def param_groups(self):
        return head_groups(self.features, cls=self.classifier)

    def optimizer_overrides(self):
        return new_layer_overrides(self.groups, self.head_optimizer)

    def update(self, src: Batch, tgt: Batch, step, opt):
        n_s = src.x.shape[0]
        logits = self.classifier(self.features(torch.cat([src.x, tgt.x])))
        loss_cls, acc_s = source_ce(logits[:n_s], src.y)
        loss_mcc = class_confusion(logits[n_s:], self.cfg.temperature)
        # 1) single step of F and C: CE on source + the weighted class confusion on target
        opt.step(loss_cls + self.cfg.mcc_weight * loss_mcc, *self.groups)
        return {"loss/cls": loss_cls.detach(), "loss/mcc": loss_mcc.detach(), "acc/source_batch": acc_s}

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        return f, self.classifier(f)
