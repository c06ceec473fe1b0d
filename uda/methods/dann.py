"""DANN: Ganin et al., "Domain-Adversarial Training of Neural Networks", JMLR 2016.

Per iteration (the paper's Algorithm 1, written with the gradient reversal layer of Sec. 4.2),
one forward and ONE backward pass over a batch of n source + n target images:

    L = CE(C(F(x_s)), y_s) + L_d(D(R_lambda(F(x_s))), 0) + L_d(D(R_lambda(F(x_t))), 1)

F descends CE and ascends the domain loss (scaled by lambda_p through R), C descends CE,
D descends the domain loss. lambda_p = 2 / (1 + exp(-10 p)) - 1 with p = step / max_steps.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from uda.config import DANNConfig, DomainReduction
from uda.losses import binary_accuracy, domain_bce, grad_reverse, grl_lambda
from uda.methods.base import Batch, Method
from uda.nets import build_backbone, mlp
from uda.registry import register


@register("dann")
class DANN(Method):
    def __init__(self, *, cfg: DANNConfig, features: nn.Module, classifier: nn.Module,
                 discriminator: nn.Module, max_steps: int):
        super().__init__()
        self.cfg = cfg
        self.features = features
        self.classifier = classifier
        self.discriminator = discriminator
        self.max_steps = max_steps

    @classmethod
    def from_config(cls, cfg, info):
        features, classifier, feat_dim = build_backbone(
            cfg.backbone, in_channels=info.channels, image_size=info.image_size, num_classes=info.num_classes
        )
        discriminator = mlp(feat_dim, cfg.method.disc_hidden, 1)
        return cls(cfg=cfg.method, features=features, classifier=classifier,
                   discriminator=discriminator, max_steps=cfg.trainer.max_steps)

    def param_groups(self):
        return {
            "feat": list(self.features.parameters()),
            "cls": list(self.classifier.parameters()),
            "disc": list(self.discriminator.parameters()),
        }

    def grl_lambda(self, step: int) -> float:
        return grl_lambda(step / self.max_steps, self.cfg.grl_gamma, self.cfg.adv_weight)

    def update(self, src: Batch, tgt: Batch, step, opt):
        lam = self.grl_lambda(step)
        n_s = src.x.shape[0]
        # one forward through F for both domains (the net has no batch statistics)
        f = self.features(torch.cat([src.x, tgt.x]))
        f_s, f_t = f[:n_s], f[n_s:]
        logits_s = self.classifier(f_s)
        loss_cls = F.cross_entropy(logits_s.float(), src.y)
        # domain classifier behind the gradient reversal: source = 0, target = 1
        d_s = self.discriminator(grad_reverse(f_s, lam))
        d_t = self.discriminator(grad_reverse(f_t, lam))
        loss_dom = domain_bce(d_s, 0) + domain_bce(d_t, 1)
        if self.cfg.domain_reduction == DomainReduction.mean:
            loss_dom = 0.5 * loss_dom  # = the mean over all 2n predictions (equal batch sizes)
        # 1) single step of F, C, D: F gets dCE - lambda dL_d, C gets dCE, D gets dL_d
        opt.step(loss_cls + loss_dom, "feat", "cls", "disc")
        return {
            "loss/cls": loss_cls.detach(),
            "loss/domain": loss_dom.detach(),
            "acc/domain": 0.5 * (binary_accuracy(d_s.detach(), 0) + binary_accuracy(d_t.detach(), 1)),
            "acc/source_batch": (logits_s.argmax(1) == src.y).float().mean().detach(),
            "sched/grl_lambda": torch.tensor(lam),
        }

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        return f, self.classifier(f)
