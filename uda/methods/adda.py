"""ADDA: Tzeng et al., "Adversarial Discriminative Domain Adaptation", CVPR 2017.

Two stages of one run:
1. ``pretrain``: source encoder M_s and classifier C on labelled source (``optimizer``).
2. ``adapt``: M_t initialised from M_s once, at the first stage-2 step; M_s and C frozen. Per
   iteration, alternating (``method.adapt_optimizer``, Adam 2e-4 beta1 0.5):
   (a) D step:   CE(D(M_s(x_s)), source) + CE(D(M_t(x_t)), target), features detached;
   (b) M_t step: CE(D(M_t(x_t)), source) -- the inverted-label GAN loss (NOT gradient reversal).
   Prediction: C(M_t(x)) once adapted, C(M_s(x)) before.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from uda.config import ADDAConfig, DiscInput
from uda.methods.base import Batch, Method, Stage
from uda.nets import build_backbone, mlp
from uda.registry import register

SOURCE, TARGET = 0, 1  # the discriminator's two classes


@register("adda")
class ADDA(Method):
    def __init__(self, *, cfg: ADDAConfig, src_encoder: nn.Module, tgt_encoder: nn.Module, classifier: nn.Module,
                 discriminator: nn.Module):
        super().__init__()
        self.cfg = cfg
        self.src_encoder, self.tgt_encoder = src_encoder, tgt_encoder
        self.classifier, self.discriminator = classifier, discriminator
        # set by the one-time copy M_s -> M_t; part of the checkpoint, so a resume never repeats it
        self.register_buffer("adapted", torch.tensor(False))

    @classmethod
    def from_config(cls, cfg, info):
        m = cfg.method
        encoder, classifier, feat_dim = build_backbone(
            cfg.backbone, in_channels=info.channels, image_size=info.image_size, num_classes=info.num_classes)
        disc_in = feat_dim if m.disc_input == DiscInput.features else info.num_classes
        return cls(cfg=m, src_encoder=encoder, tgt_encoder=copy.deepcopy(encoder), classifier=classifier,
                   discriminator=mlp(disc_in, m.disc_hidden, 2))

    def param_groups(self):
        return {"src_enc": list(self.src_encoder.parameters()), "cls": list(self.classifier.parameters()),
                "tgt_enc": list(self.tgt_encoder.parameters()), "disc": list(self.discriminator.parameters())}

    def optimizer_overrides(self):
        return {"tgt_enc": self.cfg.adapt_optimizer, "disc": self.cfg.adapt_optimizer}

    def stages(self, max_steps):
        return [Stage("pretrain", self.cfg.pretrain_steps), Stage("adapt", max_steps - self.cfg.pretrain_steps)]

    def _disc(self, f: torch.Tensor) -> torch.Tensor:
        return self.discriminator(f if self.cfg.disc_input == DiscInput.features else self.classifier(f))

    def update(self, src: Batch, tgt: Batch, step, opt):
        if step < self.cfg.pretrain_steps:
            # stage 1: M_s + C on labelled source
            logits_s = self.classifier(self.src_encoder(src.x))
            loss_cls = F.cross_entropy(logits_s.float(), src.y)
            opt.step(loss_cls, "src_enc", "cls")
            return {"loss/cls": loss_cls.detach(), "acc/source_batch": (logits_s.argmax(1) == src.y).float().mean()}
        if not self.adapted:
            # stage boundary, once: M_t <- M_s
            self.tgt_encoder.load_state_dict(self.src_encoder.state_dict())
            self.adapted.fill_(True)
        self.src_encoder.eval()  # frozen: no dropout, no gradients
        self.classifier.eval()
        with torch.no_grad():
            f_s = self.src_encoder(src.x)
        f_t = self.tgt_encoder(tgt.x)
        # (a) D step on detached features: source -> SOURCE, target -> TARGET
        d_s, d_t = self._disc(f_s), self._disc(f_t.detach())
        ones = torch.ones(d_s.shape[0], dtype=torch.long, device=d_s.device)
        loss_d = F.cross_entropy(d_s.float(), ones * SOURCE) + F.cross_entropy(d_t.float(), ones[: d_t.shape[0]] * TARGET)
        opt.step(loss_d, "disc")
        # (b) M_t step with inverted labels against the updated D: target -> SOURCE
        d_t_adv = self._disc(f_t)
        loss_adv = F.cross_entropy(d_t_adv.float(), ones[: d_t.shape[0]] * SOURCE)
        opt.step(loss_adv, "tgt_enc")
        acc_d = 0.5 * ((d_s.argmax(1) == SOURCE).float().mean() + (d_t.argmax(1) == TARGET).float().mean())
        return {"loss/disc": loss_d.detach(), "loss/adv": loss_adv.detach(), "acc/domain": acc_d.detach()}

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        encoder = self.tgt_encoder if bool(self.adapted) else self.src_encoder
        f = encoder(x)
        return f, self.classifier(f)
