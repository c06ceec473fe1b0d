"""CyCADA: Hoffman et al., "CyCADA: Cycle-Consistent Adversarial Domain Adaptation", ICML 2018.

Three stages of one run:
  1) ``source``: one step of f_S (``backbone``, ``optimizer``) on CE(f_S(x_s), y_s); frozen afterwards.
  2) ``translate``: the translator's step (``uda.methods.translator``) with semantic consistency through
     the frozen f_S added to the generators' loss:
         semantic_weight [CE(f_S(G_st(x_s)), y_s | argmax f_S(x_s)) + CE(f_S(G_ts(x_t)), argmax f_S(x_t))]
  3) ``task``: the task network, f_T <- f_S once at the stage's first step, trained on G_st(x_s) with
     source labels; with ``feature_adapt``:
     3a) a feature discriminator step: real target vs translated source features, detached;
     3b) f_T's step adds the inverted-label GAN loss on target features (ADDA-style, ``feature_weight``).
  Prediction: f_S during stages 1-2, f_T from stage 3 on.

Defaults are the paper's full method (ledger row: docs/fidelity.md#cycada): pixel + feature adaptation,
semantic weight 1 (the objective sums the terms unweighted), ``semantic_source: predictions`` (argmax
f_S(x_s), the paper's Eq. 4; ``labels`` uses y_s, as many reimplementations do); ``feature_adapt=false``
is the paper's pixel-only ablation. Each learning rate decays over the stage its parameters train in
(``schedule_spans``). Stage lengths are ours (the paper trains each part to convergence).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import torch
import torch.nn.functional as F
from torch import nn

from uda.errors import ConfigError
from uda.methods.base import Batch, Method, Stage
from uda.methods.parts import SOURCE, TARGET, classifier_nets, domain_accuracy, domain_ce, source_ce
from uda.methods.translator import Translator, TranslatorConfig
from uda.nets import mlp, set_requires_grad
from uda.schema.base import nonneg, positive, widths
from uda.schema.optimizer import OptimizerConfig, adam
from uda.schema.search import log


class SemanticSource(str, Enum):
    labels = "labels"  # CE(f_S(G_st(x_s)), y_s): the issue's / many reimplementations' choice
    predictions = "predictions"  # CE(f_S(G_st(x_s)), argmax f_S(x_s)): the CyCADA paper's equation


@dataclass
class CyCADAConfig(TranslatorConfig):
    name: str = "cycada"
    source_steps: int = 2000  # stage 1: f_S on labelled source (``optimizer``)
    translate_steps: int = 6000  # stage 2: the translator; stage 3 (task net) = the remaining steps
    semantic_weight: float = 1.0
    semantic_source: SemanticSource = SemanticSource.predictions
    feature_adapt: bool = True  # stage 3: + feature-level adversarial alignment to the real target
    feature_weight: float = 0.1
    disc_hidden: list[int] = field(default_factory=lambda: [500, 500])
    feature_optimizer: OptimizerConfig = field(default_factory=lambda: adam(2e-4, (0.5, 0.999)))
    # uda tune's search space (uda/schema/search.py): each range and where it comes from
    SEARCH = {
        "method.semantic_weight": log(0.1, 10.0, "stated: a decade either side of the official 1"),
        "method.feature_weight": log(0.01, 1.0, "stated: a decade either side of the official 0.1"),
    }

    def check(self, cfg) -> None:
        super().check(cfg)
        positive(self.source_steps, "method.source_steps")
        positive(self.translate_steps, "method.translate_steps")
        if self.source_steps + self.translate_steps >= cfg.trainer.max_steps:
            raise ConfigError(f"method.source_steps ({self.source_steps}) + method.translate_steps "
                              f"({self.translate_steps}) must be < trainer.max_steps ({cfg.trainer.max_steps}): the "
                              f"task stage needs at least one step")
        nonneg(self.semantic_weight, "method.semantic_weight")
        nonneg(self.feature_weight, "method.feature_weight")
        widths(self.disc_hidden, "method.disc_hidden")
        self.feature_optimizer.check("method.feature_optimizer")


class CyCADA(Method):
    Config = CyCADAConfig
    family = "translator"  # the ResNet generator's measured CPU setting, not the task network's

    def __init__(self, *, cfg: CyCADAConfig, translator: Translator, src_encoder: nn.Module,
                 src_classifier: nn.Module, task_encoder: nn.Module, task_classifier: nn.Module, feat_disc: nn.Module):
        super().__init__()
        self.cfg = cfg
        self.translator = translator
        self.src_encoder, self.src_classifier = src_encoder, src_classifier
        self.task_encoder, self.task_classifier = task_encoder, task_classifier
        self.feat_disc = feat_disc
        # set by the one-time copy f_S -> task network; checkpointed, never repeated
        self.register_buffer("task_started", torch.tensor(False))

    @classmethod
    def from_config(cls, cfg, info):
        def backbone():
            return classifier_nets(cfg, info)

        src_enc, src_cls, feat_dim = backbone()
        task_enc, task_cls, _ = backbone()
        feat_disc = mlp(feat_dim, cfg.method.disc_hidden, 2)
        return cls(cfg=cfg.method, translator=Translator(cfg.method, info), src_encoder=src_enc,
                   src_classifier=src_cls, task_encoder=task_enc, task_classifier=task_cls, feat_disc=feat_disc)

    def param_groups(self):
        return {"src_enc": list(self.src_encoder.parameters()), "src_cls": list(self.src_classifier.parameters()),
                **self.translator.groups(),
                "task_enc": list(self.task_encoder.parameters()), "task_cls": list(self.task_classifier.parameters()),
                "feat_disc": list(self.feat_disc.parameters())}

    def optimizer_overrides(self):
        return {**self.translator.optimizers(), "feat_disc": self.cfg.feature_optimizer}

    def _bounds(self) -> tuple[int, int]:
        return self.cfg.source_steps, self.cfg.source_steps + self.cfg.translate_steps

    def stages(self, max_steps):
        a, b = self._bounds()
        return [Stage("source", a), Stage("translate", b - a), Stage("task", max_steps - b)]

    def schedule_spans(self, max_steps):
        a, b = self._bounds()
        return {"src_enc": (0, a), "src_cls": (0, a), "gen": (a, b), "disc": (a, b),
                "task_enc": (b, max_steps), "task_cls": (b, max_steps), "feat_disc": (b, max_steps)}

    def f_s(self, x: torch.Tensor) -> torch.Tensor:
        return self.src_classifier(self.src_encoder(x))

    def semantic_loss(self, fake_t, fake_s, src: Batch, tgt: Batch) -> dict[str, tuple[float, torch.Tensor]]:
        """Stage 2's extra generator term: f_S's labels for the translations of both domains ([-1, 1] fakes)."""
        tr = self.translator
        with torch.no_grad():
            p_t = self.f_s(tgt.x).argmax(1)
            y_s = src.y if self.cfg.semantic_source == SemanticSource.labels else self.f_s(src.x).argmax(1)
        sem = (F.cross_entropy(self.f_s(tr.from_pm1(fake_t)).float(), y_s)
               + F.cross_entropy(self.f_s(tr.from_pm1(fake_s)).float(), p_t))
        return {"loss/semantic": (self.cfg.semantic_weight, sem)}

    def update(self, src: Batch, tgt: Batch, step, opt):
        a, b = self._bounds()
        if step < a:  # 1) f_S on labelled source
            loss, acc_s = source_ce(self.f_s(src.x), src.y)
            opt.step(loss, "src_enc", "src_cls")
            return {"loss/cls": loss.detach(), "acc/source_batch": acc_s}
        # f_S frozen from here on: eval mode (no dropout), no gradients into its parameters
        self.src_encoder.eval()
        self.src_classifier.eval()
        set_requires_grad([self.src_encoder, self.src_classifier], False)
        if step < b:  # 2) the translator, with semantic consistency through f_S
            return self.translator.step(src, tgt, opt, extra=self.semantic_loss)
        if not self.task_started:  # 3) stage boundary, once: task network <- f_S
            self.task_encoder.load_state_dict(self.src_encoder.state_dict())
            self.task_classifier.load_state_dict(self.src_classifier.state_dict())
            self.task_started.fill_(True)
        self.translator.g_st.eval()  # instance norm keeps no running statistics; eval only for clarity
        f_st = self.task_encoder(self.translator.translate(src.x))
        loss, acc_s = source_ce(self.task_classifier(f_st), src.y)
        out = {"loss/task": loss.detach(), "acc/source_batch": acc_s}
        if self.cfg.feature_adapt:
            f_t = self.task_encoder(tgt.x)
            # 3a) feature discriminator: translated source vs real target, features detached
            d_s, d_t = self.feat_disc(f_st.detach()), self.feat_disc(f_t.detach())
            loss_d = domain_ce(d_s, SOURCE) + domain_ce(d_t, TARGET)
            opt.step(loss_d, "feat_disc")
            # 3b) inverted labels on target features (D frozen), added to the task loss
            set_requires_grad([self.feat_disc], False)
            loss_adv = domain_ce(self.feat_disc(f_t), SOURCE)
            set_requires_grad([self.feat_disc], True)
            loss = loss + self.cfg.feature_weight * loss_adv
            out |= {
                "loss/disc": loss_d.detach(),
                "loss/adv": loss_adv.detach(),
                "acc/domain": domain_accuracy(d_s, d_t),
            }
        opt.step(loss, "task_enc", "task_cls")
        return out

    def images(self, x_s, x_t):
        return self.translator.images(x_s, x_t)

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if bool(self.task_started):
            f = self.task_encoder(x)
            return f, self.task_classifier(f)
        f = self.src_encoder(x)
        return f, self.src_classifier(f)
