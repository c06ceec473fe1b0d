"""CDAN: Long et al., "Conditional Adversarial Domain Adaptation", NeurIPS 2018.

Per iteration, one forward and ONE backward pass over a batch of n source + n target images:
  1) one step of F, C and D on
         L = CE(C(F(x_s)), y_s) + L_d(D(R(T(f, g))))
     with f = F(x), g = softmax(C(f)) detached, and T(f, g) = flatten(g f^T) (the multilinear map) or,
     with ``randomized``, (R_f f) * (R_g g) / sqrt(d) for fixed Gaussian R_f, R_g (d = ``random_dim``).
     D descends the domain loss, F (through R) ascends lambda L_d, C descends CE only (g is detached).
     CDAN+E (``entropy_weighting``): each example's domain loss is weighted by w = 1 + exp(-H(g)), the
     weights normalised to sum 1 within each domain, L_d = sum(w BCE) / sum(w); H reaches C through a
     reversal with the same lambda, as the official code's hook on the entropy does.

Readings (official thuml/CDAN pytorch code where the paper is silent): lambda = adv_weight (2 / (1 +
exp(-10 i / grl_horizon)) - 1) over the official 10000-iteration horizon, not the run's length, i
counted from ``adv_start`` (before it: CE alone, D still); D is the official ``AdversarialNetwork``,
in -> 500 -> 500 -> 1 with ReLU and dropout 0.5, xavier-normal weights and zero biases (1024-1024 on
images); SGD with weight decay 5e-4 on the net and D (cdan.yaml), D's rate constant while the net's
anneals (the digits scripts decay only the net's); source = 0, target = 1 (the official code labels
them the other way round; the loss is symmetric). Ledger row: docs/fidelity.md#cdan.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch
from torch import nn

from uda.losses import binary_accuracy, grad_reverse, grl_lambda
from uda.methods.base import Batch, Method
from uda.methods.parts import (
    classifier_nets,
    feature_groups,
    head_groups,
    head_optimizer,
    new_layer_overrides,
    source_ce,
)
from uda.nets import mlp, xavier_
from uda.schema.base import nonneg, positive, unit_interval, widths
from uda.schema.method import MethodConfig
from uda.schema.optimizer import OptimizerConfig, Schedule
from uda.schema.search import log


@dataclass
class CDANConfig(MethodConfig):
    name: str = "cdan"
    # lambda_i = adv_weight * (2 / (1 + exp(-grl_gamma * min(i, H) / H)) - 1), H = grl_horizon
    adv_weight: float = 1.0
    grl_gamma: float = 10.0
    grl_horizon: int = 10000  # the official code's max_iter for the ramp, whatever the run's length
    # CDAN+E: weight each example's domain loss by 1 + exp(-H(g)) (the paper's best variant)
    entropy_weighting: bool = False
    # the randomized multilinear map instead of the full outer product (for wide f x g)
    randomized: bool = False
    random_dim: int = 500  # the official digits scripts' d (1024 on images)
    # D on T(f, g): hidden widths, each Linear-ReLU-Dropout (official AdversarialNetwork(in, 500))
    disc_hidden: list[int] = field(default_factory=lambda: [500, 500])
    disc_dropout: float = 0.5
    # the official digits scripts anneal the net's rate only: D stays at optimizer.lr
    disc_constant_lr: bool = True
    # steps of CE alone before D and the reversal start (official USPS <-> MNIST: one epoch;
    # SVHN -> MNIST and the image script: 0); the ramp's i counts from here
    adv_start: int = 0
    # uda tune's search space (uda/schema/search.py): each range and where it comes from
    SEARCH = {
        "method.adv_weight": log(0.1, 10.0, "as dann: powerful-benchmarker's trade-off range"),
    }

    def check(self, cfg, key: str = "method") -> None:
        """``key``: where this config sits (``method``; ``method.cdan`` inside SDAT), for the messages."""
        nonneg(self.adv_weight, f"{key}.adv_weight")
        nonneg(self.grl_gamma, f"{key}.grl_gamma")
        positive(self.grl_horizon, f"{key}.grl_horizon")
        positive(self.random_dim, f"{key}.random_dim")
        widths(self.disc_hidden, f"{key}.disc_hidden")
        unit_interval(self.disc_dropout, f"{key}.disc_dropout")
        nonneg(self.adv_start, f"{key}.adv_start")


def multilinear(f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """T(f, g) = flatten(g f^T): [N, K * d_f], entry (k, j) = g_k f_j."""
    return torch.bmm(g.unsqueeze(2), f.unsqueeze(1)).flatten(1)


def randomized_multilinear(f: torch.Tensor, g: torch.Tensor, r_f: torch.Tensor, r_g: torch.Tensor) -> torch.Tensor:
    """T(f, g) = (f R_f) * (g R_g) / sqrt(d), R_f: [d_f, d], R_g: [K, d] fixed Gaussian (Long et al. 2018, Eq. 8)."""
    return (f @ r_f) * (g @ r_g) / math.sqrt(r_f.shape[1])


def domain_accuracy(d: torch.Tensor, n_s: int) -> torch.Tensor:
    """Mean of D's accuracy on the n_s source logits (source = 0) and on the rest (target = 1)."""
    return 0.5 * (binary_accuracy(d[:n_s], 0) + binary_accuracy(d[n_s:], 1))


def entropy_weights(g_s: torch.Tensor, g_t: torch.Tensor, lam: float) -> torch.Tensor:
    """CDAN+E's weights: w = 1 + exp(-H(g)), H behind a reversal of ``lam``, each domain's weights
    normalised to sum 1; returns the 2n weights, source first."""
    out = []
    for g in (g_s, g_t):
        h = -(g * torch.log(g.clamp_min(1e-5))).sum(1)
        w = 1 + torch.exp(-grad_reverse(h, lam))
        out.append(w / w.sum().detach())  # the official code divides by the detached sum
    return torch.cat(out)


class CDAN(Method):
    Config = CDANConfig

    def __init__(self, *, cfg: CDANConfig, features: nn.Module, classifier: nn.Module, discriminator: nn.Module,
                 feat_dim: int, num_classes: int, head_optimizer: OptimizerConfig):
        super().__init__()
        self.cfg = cfg
        self.features = features
        self.classifier = classifier
        self.discriminator = discriminator
        self.head_optimizer = head_optimizer
        self.groups = (*feature_groups(features), "cls", "disc")
        # the randomized map's fixed projections: buffers, so they are in every checkpoint
        g = torch.Generator().manual_seed(0)
        self.register_buffer("r_f", torch.randn(feat_dim, cfg.random_dim, generator=g) if cfg.randomized
                             else torch.zeros(0))
        self.register_buffer("r_g", torch.randn(num_classes, cfg.random_dim, generator=g) if cfg.randomized
                             else torch.zeros(0))

    @staticmethod
    def disc_input_dim(cfg: CDANConfig, feat_dim: int, num_classes: int) -> int:
        return cfg.random_dim if cfg.randomized else feat_dim * num_classes

    @classmethod
    def from_config(cls, cfg, info):
        return cls.part(cfg.method, cfg, info)

    @classmethod
    def part(cls, m: CDANConfig, cfg, info) -> CDAN:
        """CDAN with the settings ``m`` on ``cfg``'s backbone: the method itself, or a part another method
        holds (SDAT's ``method.cdan``)."""
        features, classifier, feat_dim = classifier_nets(cfg, info)
        d_in = cls.disc_input_dim(m, feat_dim, info.num_classes)
        discriminator = xavier_(mlp(d_in, m.disc_hidden, 1, m.disc_dropout))
        return cls(cfg=m, features=features, classifier=classifier, discriminator=discriminator,
                   feat_dim=feat_dim, num_classes=info.num_classes, head_optimizer=head_optimizer(cfg))

    def param_groups(self):
        return head_groups(self.features, cls=self.classifier, disc=self.discriminator)

    def optimizer_overrides(self):
        over = new_layer_overrides(self.groups, self.head_optimizer)
        if self.cfg.disc_constant_lr:
            over["disc"] = dataclasses.replace(over["disc"], schedule=Schedule.constant)
        return over

    def grl_lambda(self, step: int) -> float:
        i = max(step - self.cfg.adv_start, 0)
        return grl_lambda(min(i / self.cfg.grl_horizon, 1.0), self.cfg.grl_gamma, self.cfg.adv_weight)

    def conditioning(self, f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return randomized_multilinear(f, g, self.r_f, self.r_g) if self.cfg.randomized else multilinear(f, g)

    def domain_loss(self, f: torch.Tensor, logits: torch.Tensor, n_s: int, lam: float):
        """(L_d, D's logits) on the 2n features f and logits, source first: BCE of D(R(T(f, g))), plain or
        entropy-weighted (CDAN+E), R the reversal of ``lam``; g detached in T (official): only F feels D."""
        g = torch.softmax(logits.float(), dim=1)
        d = self.discriminator(grad_reverse(self.conditioning(f.float(), g.detach()), lam)).reshape(-1)
        domain = torch.cat([torch.zeros(n_s, device=d.device), torch.ones(len(d) - n_s, device=d.device)])
        bce = nn.functional.binary_cross_entropy_with_logits(d, domain, reduction="none")
        if not self.cfg.entropy_weighting:
            return bce.mean(), d
        w = entropy_weights(g[:n_s], g[n_s:], lam)
        return (w * bce).sum() / w.sum().detach(), d

    def update(self, src: Batch, tgt: Batch, step, opt):
        lam = self.grl_lambda(step)
        n_s = src.x.shape[0]
        f = self.features(torch.cat([src.x, tgt.x]))
        logits = self.classifier(f)
        loss_cls, acc_s = source_ce(logits[:n_s], src.y)
        out = {"loss/cls": loss_cls.detach(), "acc/source_batch": acc_s, "sched/grl_lambda": torch.tensor(lam)}
        if step < self.cfg.adv_start:
            # 0) before adv_start: F and C on CE alone, D still (official USPS <-> MNIST: epoch 1)
            opt.step(loss_cls, *self.groups[:-1])
            return out
        loss_dom, d = self.domain_loss(f, logits, n_s, lam)
        # 1) one step of F, C, D: F gets dCE - lambda dL_d, C dCE (+ reversed entropy), D dL_d
        opt.step(loss_cls + loss_dom, *self.groups)
        return out | {"loss/domain": loss_dom.detach(), "acc/domain": domain_accuracy(d.detach(), n_s)}

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        return f, self.classifier(f)
