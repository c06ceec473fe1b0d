"""ADDA: Tzeng et al., "Adversarial Discriminative Domain Adaptation", CVPR 2017.

Two stages of one run:
  1) ``pretrain``: one step of M_s and C on CE(C(M_s(x_s)), y_s) (``optimizer``).
  2) ``adapt``: M_t <- M_s once, at the first stage-2 step; M_s and C frozen. Per iteration
     (``method.adapt_optimizer``, Adam 2e-4 beta1 0.5):
     2a) D step: CE(D(M_s(x_s)), source) + CE(D(M_t(x_t)), target), features detached;
     2b) M_t step: CE(D(M_t(x_t)), source) against the updated D -- the inverted-label GAN loss.
  Prediction: C(M_t(x)) once adapted, C(M_s(x)) before.

Defaults are the paper's (ledger row: docs/fidelity.md#adda): LeNet without dropout (the official net),
stage 1 Adam 1e-3, stage 2 Adam 2e-4 beta1 0.5; the stage-1 weight decay 2.5e-5 is the official LeNet's L2
regulariser (``configs/method/adda.yaml``). The paper's 10k + 10k steps scale with the budget: stage 1 is
half the run unless ``pretrain_steps`` is set. Readings: the inverted-label loss (the paper's Eq. 9), NOT
gradient reversal; D reads the encoder output M(x), the post-ReLU FC500 (the paper's text: D on the encoder's
representation); ``disc_input: logits`` reads C's logits, as the official train_adda.py does (it feeds D
the net's last layer, fc4).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from enum import Enum

import torch
from torch import nn

from uda.errors import ConfigError
from uda.methods.base import Batch, Method, Stage
from uda.methods.parts import SOURCE, TARGET, classifier_nets, domain_accuracy, domain_ce, source_ce
from uda.nets import mlp
from uda.schema.base import positive, scaled_phase, widths
from uda.schema.method import MethodConfig, one_learning_rate
from uda.schema.optimizer import OptimizerConfig, adam
from uda.schema.search import log


class DiscInput(str, Enum):
    features = "features"  # the encoder output M(x), post-ReLU FC500 (ADDA paper text)
    logits = "logits"  # the classifier's logits (ADDA official code)


PRETRAIN_SHARE = 0.5  # the paper: 10k source steps, then 10k adversarial steps


@dataclass
class ADDAConfig(MethodConfig):
    """Stage 1 source pretraining (``optimizer``), stage 2 adversarial adaptation (``adapt_optimizer``)."""

    name: str = "adda"
    # stage 1 length; unset = PRETRAIN_SHARE of trainer.max_steps; stage 2 = the rest
    pretrain_steps: int | None = None
    disc_input: DiscInput = DiscInput.features
    disc_hidden: list[int] = field(default_factory=lambda: [500, 500])
    # stage 2 optimizer for the target encoder and the discriminator: Adam 2e-4, beta1 0.5
    adapt_optimizer: OptimizerConfig = field(default_factory=lambda: adam(2e-4, (0.5, 0.999)))
    # uda tune's search space (uda/schema/search.py): each range and where it comes from
    SEARCH = {
        "method.adapt_optimizer.lr": log(2e-5, 2e-3, "stated: a decade either side of the official 2e-4"),
    }

    def pretrain(self, max_steps: int) -> int:
        """Stage 1's length in a run of ``max_steps``."""
        return scaled_phase(self.pretrain_steps, max_steps, PRETRAIN_SHARE)

    def check(self, cfg) -> None:
        one_learning_rate(cfg, "adda")
        pretrain = self.pretrain(cfg.trainer.max_steps)
        positive(pretrain, "method.pretrain_steps")
        if pretrain >= cfg.trainer.max_steps:
            raise ConfigError(f"method.pretrain_steps ({pretrain}) must be < trainer.max_steps "
                              f"({cfg.trainer.max_steps}): stage 2 needs at least one step")
        self.adapt_optimizer.check("method.adapt_optimizer")
        widths(self.disc_hidden, "method.disc_hidden")


class ADDA(Method):
    Config = ADDAConfig

    def __init__(self, *, cfg: ADDAConfig, src_encoder: nn.Module, tgt_encoder: nn.Module, classifier: nn.Module,
                 discriminator: nn.Module, pretrain_steps: int):
        super().__init__()
        self.cfg, self.pretrain_steps = cfg, pretrain_steps
        self.src_encoder, self.tgt_encoder = src_encoder, tgt_encoder
        self.classifier, self.discriminator = classifier, discriminator
        # set by the one-time copy M_s -> M_t; checkpointed, so a resume never repeats it
        self.register_buffer("adapted", torch.tensor(False))

    @classmethod
    def from_config(cls, cfg, info):
        m = cfg.method
        encoder, classifier, feat_dim = classifier_nets(cfg, info)
        disc_in = feat_dim if m.disc_input == DiscInput.features else info.num_classes
        return cls(cfg=m, src_encoder=encoder, tgt_encoder=copy.deepcopy(encoder), classifier=classifier,
                   discriminator=mlp(disc_in, m.disc_hidden, 2), pretrain_steps=m.pretrain(cfg.trainer.max_steps))

    def param_groups(self):
        return {"src_enc": list(self.src_encoder.parameters()), "cls": list(self.classifier.parameters()),
                "tgt_enc": list(self.tgt_encoder.parameters()), "disc": list(self.discriminator.parameters())}

    def optimizer_overrides(self):
        return {"tgt_enc": self.cfg.adapt_optimizer, "disc": self.cfg.adapt_optimizer}

    def stages(self, max_steps):
        return [Stage("pretrain", self.pretrain_steps), Stage("adapt", max_steps - self.pretrain_steps)]

    def _disc(self, f: torch.Tensor) -> torch.Tensor:
        return self.discriminator(f if self.cfg.disc_input == DiscInput.features else self.classifier(f))

    def update(self, src: Batch, tgt: Batch, step, opt):
        if step < self.pretrain_steps:
            # 1) M_s + C on labelled source
            loss_cls, acc_s = source_ce(self.classifier(self.src_encoder(src.x)), src.y)
            opt.step(loss_cls, "src_enc", "cls")
            return {"loss/cls": loss_cls.detach(), "acc/source_batch": acc_s}
        if not self.adapted:
            # 2) stage boundary, once: M_t <- M_s
            self.tgt_encoder.load_state_dict(self.src_encoder.state_dict())
            self.adapted.fill_(True)
        # M_s is frozen (no gradients, no optimizer step) but stays in M_t's mode, so D reads the
        # same kind of features from both domains (with backbone.dropout > 0 both carry dropout
        # noise, or neither)
        self.classifier.eval()
        with torch.no_grad():
            f_s = self.src_encoder(src.x)
        f_t = self.tgt_encoder(tgt.x)
        # 2a) D step on detached features: source -> SOURCE, target -> TARGET
        d_s, d_t = self._disc(f_s), self._disc(f_t.detach())
        loss_d = domain_ce(d_s, SOURCE) + domain_ce(d_t, TARGET)
        opt.step(loss_d, "disc")
        # 2b) M_t step with inverted labels against the updated D: target -> SOURCE
        loss_adv = domain_ce(self._disc(f_t), SOURCE)
        opt.step(loss_adv, "tgt_enc")
        return {"loss/disc": loss_d.detach(), "loss/adv": loss_adv.detach(), "acc/domain": domain_accuracy(d_s, d_t)}

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        encoder = self.tgt_encoder if bool(self.adapted) else self.src_encoder
        f = encoder(x)
        return f, self.classifier(f)
