"""MDD: Zhang et al., "Bridging Theory and Algorithm for Domain Adaptation", ICML 2019.

Per iteration, one forward and ONE backward pass over a batch of n source + n target images:
  1) one step of F, the main head f and the adversarial head f' on
         L = CE(f(F(x_s)), y_s) + gamma CE(f'(R(F(x_s))), y^_s) - mean log(1 - softmax(f'(R(F(x_t))))[y^_t])
     with y^ = argmax f(F(x)) (no gradient) the pseudo-targets on both domains, gamma the margin
     (``margin``) and R the gradient reversal of weight eta. f descends CE only; f' descends the bracket
     (the margin disparity, in its log-loss form, with the sign that makes f' an adversary: agree with f on
     source, disagree on target); F descends CE and ascends eta x the bracket.

Readings (official thuml/MDD code where the paper is silent): eta = trade_off (2 / (1 + exp(-grl_alpha i /
grl_horizon)) - 1), 0 -> 0.1 with alpha 1 over 1000 iterations, never capped; log(1 - p) is computed exactly
as logsumexp over the other classes minus logsumexp (the official log(1 - softmax) can reach -inf, TLlib
clamps it). Ledger row: docs/fidelity.md#mdd.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from uda.losses import grad_reverse, grl_lambda
from uda.methods.base import Batch, Method
from uda.methods.parts import (
    classifier_nets,
    feature_groups,
    fresh_copy,
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
class MDDConfig(MethodConfig):
    name: str = "mdd"
    margin: float = 4.0  # gamma: the official Office-31 value (Office-Home: 2)
    # eta_i = trade_off * (2 / (1 + exp(-grl_alpha * i / grl_horizon)) - 1) (official: 0 -> 0.1)
    trade_off: float = 0.1
    grl_alpha: float = 1.0
    grl_horizon: int = 1000
    # uda tune's search space (uda/schema/search.py): each range and where it comes from
    SEARCH = {
        "method.margin": uniform(1.0, 6.0, "stated: around the official 2 (Office-Home) and 4 (Office-31)"),
        "method.trade_off": log(0.01, 1.0, "stated: a decade either side of the official 0.1"),
    }

    def check(self, cfg) -> None:
        positive(self.margin, "method.margin")
        nonneg(self.trade_off, "method.trade_off")
        nonneg(self.grl_alpha, "method.grl_alpha")
        positive(self.grl_horizon, "method.grl_horizon")


def log_one_minus_softmax(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """log(1 - softmax(logits)[y]) per row, exactly: logsumexp_{k != y} z_k - logsumexp_k z_k. [N, K], [N] -> [N]."""
    others = logits.scatter(1, y.unsqueeze(1), float("-inf"))
    return torch.logsumexp(others, 1) - torch.logsumexp(logits, 1)


def margin_disparity(adv_s: torch.Tensor, adv_t: torch.Tensor, y_hat_s: torch.Tensor, y_hat_t: torch.Tensor,
                     margin: float) -> torch.Tensor:
    """The bracket f' minimises (Zhang et al. 2019, Eq. 29 in log-loss form):
    gamma CE(adv_s, y^_s) - mean log(1 - softmax(adv_t)[y^_t]). Logits [N, K], pseudo-targets [N]."""
    return margin * F.cross_entropy(adv_s.float(), y_hat_s) - log_one_minus_softmax(adv_t.float(), y_hat_t).mean()


class MDD(Method):
    Config = MDDConfig

    def __init__(self, *, cfg: MDDConfig, features: nn.Module, classifier: nn.Module, adv_classifier: nn.Module,
                 head_optimizer: OptimizerConfig):
        super().__init__()
        self.cfg = cfg
        self.features = features
        self.classifier = classifier
        self.adv_classifier = adv_classifier
        self.head_optimizer = head_optimizer
        self.groups = (*feature_groups(features), "cls", "adv")

    @classmethod
    def from_config(cls, cfg, info):
        features, classifier, _ = classifier_nets(cfg, info)
        # f' has f's architecture, initialised on its own
        return cls(cfg=cfg.method, features=features, classifier=classifier, adv_classifier=fresh_copy(classifier),
                   head_optimizer=head_optimizer(cfg))

    def param_groups(self):
        return head_groups(self.features, cls=self.classifier, adv=self.adv_classifier)

    def optimizer_overrides(self):
        return new_layer_overrides(self.groups, self.head_optimizer)

    def grl_lambda(self, step: int) -> float:
        return grl_lambda(step / self.cfg.grl_horizon, self.cfg.grl_alpha, self.cfg.trade_off)

    def update(self, src: Batch, tgt: Batch, step, opt):
        eta = self.grl_lambda(step)
        n_s = src.x.shape[0]
        f = self.features(torch.cat([src.x, tgt.x]))
        logits = self.classifier(f)
        loss_cls, acc_s = source_ce(logits[:n_s], src.y)
        y_hat = logits.detach().argmax(1)  # f's pseudo-targets on both domains
        adv = self.adv_classifier(grad_reverse(f, eta))
        loss_mdd = margin_disparity(adv[:n_s], adv[n_s:], y_hat[:n_s], y_hat[n_s:], self.cfg.margin)
        # 1) single step of F, f, f': f gets dCE, f' d(bracket), F dCE - eta d(bracket)
        opt.step(loss_cls + loss_mdd, *self.groups)
        return {
            "loss/cls": loss_cls.detach(),
            "loss/mdd": loss_mdd.detach(),
            # how often f' agrees with f: high on source, low on target once f' discriminates
            "acc/adv_agree_source": (adv[:n_s].detach().argmax(1) == y_hat[:n_s]).float().mean(),
            "acc/adv_agree_target": (adv[n_s:].detach().argmax(1) == y_hat[n_s:]).float().mean(),
            "acc/source_batch": acc_s,
            "sched/grl_lambda": torch.tensor(eta),
        }

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        return f, self.classifier(f)
