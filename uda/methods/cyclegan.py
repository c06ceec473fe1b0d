"""CycleGAN: Zhu et al., "Unpaired Image-to-Image Translation using Cycle-Consistent Adversarial
Networks", ICCV 2017 -- the pair's translator on its own, with a classifier that says how useful it is.

Per iteration:
  1) the translator's step (``uda.methods.translator``): generators, then discriminators;
  2) one step of a classifier (``backbone``, ``optimizer``) on CE(C(G_st(x_s)), y_s), the translation
     detached (no gradient reaches the translator); it is evaluated on real images.

Readings: so that a translation run reports a number, the classifier is CyCADA's stage 3 run alongside
the translator instead of after it; its accuracy on the real target says how much the translations help.

Ledger row (paper settings, departures, evidence): docs/fidelity.md#cyclegan.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from uda.methods.base import Batch, Method
from uda.methods.parts import classifier_nets, source_ce
from uda.methods.translator import Translator, TranslatorConfig
from uda.schema.search import log, uniform


@dataclass
class CycleGANConfig(TranslatorConfig):
    name: str = "cyclegan"
    # uda tune's search space (uda/schema/search.py): each range and where it comes from
    SEARCH = {
        "method.cycle_weight": log(1.0, 100.0, "stated: a decade either side of the paper's 10"),
        "method.identity_weight": uniform(0.0, 1.0, "stated: off to twice the paper's 0.5"),
    }


class CycleGAN(Method):
    Config = CycleGANConfig
    family = "translator"  # the ResNet generator's measured CPU setting, not the task network's

    def __init__(self, *, cfg: CycleGANConfig, translator: Translator, encoder: nn.Module, classifier: nn.Module):
        super().__init__()
        self.cfg = cfg
        self.translator = translator
        self.encoder, self.classifier = encoder, classifier

    @classmethod
    def from_config(cls, cfg, info):
        encoder, classifier, _ = classifier_nets(cfg, info)
        return cls(cfg=cfg.method, translator=Translator(cfg.method, info), encoder=encoder, classifier=classifier)

    def param_groups(self):
        return {**self.translator.groups(), "cls": [*self.encoder.parameters(), *self.classifier.parameters()]}

    def optimizer_overrides(self):
        return self.translator.optimizers()

    def update(self, src: Batch, tgt: Batch, step, opt):
        # 1) translator: generators, then discriminators
        out = self.translator.step(src, tgt, opt)
        # 2) classifier on the (detached) translated source
        loss, acc_s = source_ce(self.classifier(self.encoder(self.translator.translate(src.x))), src.y)
        opt.step(loss, "cls")
        return {**out, "loss/cls": loss.detach(), "acc/source_batch": acc_s}

    def images(self, x_s, x_t):
        return self.translator.images(x_s, x_t)

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.encoder(x)
        return f, self.classifier(f)
