"""SHOT: Liang et al., "Do We Really Need to Access the Source Data? Source Hypothesis Transfer for
Unsupervised Domain Adaptation", ICML 2020.

Two stages; the second never reads source data (source-free):
  1) source (``source_fraction`` of the steps): one step of F, B and C on CE with label smoothing 0.1,
         L = -sum_k ((1 - eps) onehot(y_s) + eps / K)_k log softmax(C(B(F(x_s))))_k;
  2) target, with the hypothesis C frozen:
     a) each target epoch (first at the stage's start): the trainer's ``refresh`` passes over the whole
        target training set in eval mode; f = [B(F(x)), 1] / ||[B(F(x)), 1]||, centroids
        c_k = sum_i p_ik f_i / sum_i p_ik (p = softmax(C(B(F(x))))), y^_i = argmin_k cos-distance(f_i, c_k),
        then one refinement with the hard labels (c_k from y^, y^ again);
     b) one step of F and B on
         L = beta CE(C(B(F(x_t))), y^[idx]) + im_weight (mean_i H(p_i) - H(mean_i p_i)),
        H(p) = -sum p log(p + 1e-5); a fresh SGD (its momentum reset at the stage's start, its
        learning rate decayed over the stage).
  Networks: the backbone's features F, SHOT's bottleneck B = Linear(d, 256) - BN - Dropout(0.5) (no ReLU),
  its weight-normalised head C = Linear(256, K).

Readings (official tim-learn/SHOT digit/uda_digit.py:144-223 (source), 280-409 (target, obtain_label),
digit/network.py): beta = 0.1, the official digits commands' value (digit/digit.sh; 0.3 is the argparse
default and the object scripts'); ``beta=0`` is SHOT-IM (no refresh); the two stages share the budget half
and half (30 + 30 epochs in the official digits runs); SGD lr 0.01 with Nesterov momentum 0.9, weight decay
1e-3, lr (1 + 10 p)^-0.75 over each stage (shot.yaml); the centroid pass uses the bottleneck's output.
Ledger row: docs/fidelity.md#shot.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from uda.errors import ConfigError
from uda.methods.base import Batch, Method, Stage
from uda.methods.parts import classifier_nets, feature_groups, head_optimizer, new_layer_overrides
from uda.nets import xavier_
from uda.schema.base import nonneg, positive, scaled_phase, unit_interval
from uda.schema.method import MethodConfig
from uda.schema.optimizer import OptimizerConfig
from uda.schema.search import uniform

SOURCE_SHARE = 0.5  # the official digits runs: 30 source epochs, then 30 target epochs


@dataclass
class SHOTConfig(MethodConfig):
    name: str = "shot"
    source_steps: int | None = None  # the source stage's steps; None = half the run (30 + 30 epochs officially)
    smoothing: float = 0.1  # label smoothing eps of the source stage
    beta: float = 0.1  # the pseudo-label CE weight (cls_par); 0 = SHOT-IM
    im_weight: float = 1.0  # the information-maximisation weight (ent_par)
    bottleneck: int = 256
    dropout: float = 0.5  # the bottleneck's dropout
    refinements: int = 1  # rounds of hard-label centroids after the soft ones
    # uda tune's search space (uda/schema/search.py): each range and where it comes from
    SEARCH = {
        "method.beta": uniform(0.0, 0.5, "stated: over the official 0.1 (digits) and 0.3 (objects)"),
    }
    OPTIMISES = ("entropy", "im")  # its target stage minimises mean H(p) - H(mean p), which is -IM

    def check(self, cfg) -> None:
        unit_interval(self.smoothing, "method.smoothing")
        nonneg(self.beta, "method.beta")
        nonneg(self.im_weight, "method.im_weight")
        positive(self.bottleneck, "method.bottleneck")
        unit_interval(self.dropout, "method.dropout")
        nonneg(self.refinements, "method.refinements")
        source = self.source(cfg.trainer.max_steps)
        if not 0 <= source < cfg.trainer.max_steps:
            raise ConfigError(f"method.source_steps ({source}) must be in [0, trainer.max_steps="
                              f"{cfg.trainer.max_steps}): the target stage needs at least one step")

    def source(self, max_steps: int) -> int:
        """The source stage's length in a run of ``max_steps``."""
        return scaled_phase(self.source_steps, max_steps, SOURCE_SHARE)


def information_maximisation(logits: torch.Tensor) -> torch.Tensor:
    """mean_i H(p_i) - H(mean_i p_i), p = softmax(logits), H(p) = -sum p log(p + 1e-5) (the official Entropy)."""
    p = torch.softmax(logits.float(), dim=1)
    h = -(p * torch.log(p + 1e-5)).sum(1).mean()
    p_mean = p.mean(0)
    return h + (p_mean * torch.log(p_mean + 1e-5)).sum()


def centroid_labels(feats: torch.Tensor, probs: torch.Tensor, refinements: int = 1) -> torch.Tensor:
    """SHOT's self-supervised pseudo-labels (obtain_label): f = [feats, 1] normalised; centroids from the soft
    predictions ``probs`` [N, K], each example to its nearest centroid by cosine distance; then ``refinements``
    rounds with centroids from the hard labels. A class left empty has a zero centroid, at cosine distance 1."""
    f = torch.cat([feats.double(), torch.ones(len(feats), 1, dtype=torch.float64, device=feats.device)], 1)
    f = f / f.norm(dim=1, keepdim=True)
    weights = probs.double()
    for _ in range(refinements + 1):
        c = weights.t() @ f / (1e-8 + weights.sum(0)[:, None])
        cos = (f @ c.t()) / (c.norm(dim=1)[None, :] + 1e-12)  # |f| = 1
        labels = (1 - cos).argmin(1)
        weights = F.one_hot(labels, probs.shape[1]).double()
    return labels


class Bottleneck(nn.Sequential):
    """SHOT's feat_bootleneck of type "bn": Linear(d, width) - BatchNorm1d - Dropout (no activation), with
    the official init_weights: xavier-normal Linear, zero biases, BN scale N(1, 0.02)."""

    def __init__(self, in_dim: int, width: int, dropout: float):
        super().__init__(xavier_(nn.Linear(in_dim, width)), nn.BatchNorm1d(width), nn.Dropout(dropout))
        nn.init.normal_(self[1].weight, 1.0, 0.02)
        nn.init.zeros_(self[1].bias)


class SHOT(Method):
    Config = SHOTConfig

    def __init__(self, *, cfg: SHOTConfig, features: nn.Module, bottleneck: nn.Module, classifier: nn.Module,
                 head_optimizer: OptimizerConfig, source_steps: int):
        super().__init__()
        self.cfg, self.source_steps = cfg, source_steps
        self.features = features
        self.bottleneck = bottleneck
        self.classifier = classifier  # the source hypothesis: frozen in the target stage
        self.head_optimizer = head_optimizer
        self.target_groups = (*feature_groups(features), "bottleneck")
        self.groups = (*self.target_groups, "cls")
        # y^ of every target training image, from the latest refresh (sized by it; restored by a checkpoint)
        self.register_buffer("pseudo_labels", torch.zeros(0, dtype=torch.long))
        self._register_load_state_dict_pre_hook(self._size_pseudo_labels)

    def _size_pseudo_labels(self, state_dict, prefix, *args):
        if prefix + "pseudo_labels" in state_dict:
            loaded = state_dict[prefix + "pseudo_labels"]
            self.pseudo_labels = torch.zeros_like(loaded, device=self.pseudo_labels.device)

    @classmethod
    def from_config(cls, cfg, info):
        features, _, feat_dim = classifier_nets(cfg, info)  # the backbone's own classifier is not used
        m = cfg.method
        head = nn.utils.parametrizations.weight_norm(nn.Linear(m.bottleneck, info.num_classes))
        return cls(cfg=m, features=features, bottleneck=Bottleneck(feat_dim, m.bottleneck, m.dropout),
                   classifier=head, head_optimizer=head_optimizer(cfg), source_steps=m.source(cfg.trainer.max_steps))

    def stages(self, max_steps: int) -> list[Stage]:
        s = self.source_steps
        return ([Stage("source", s)] if s else []) + [Stage("target", max_steps - s)]

    def schedule_spans(self, max_steps: int):
        s = self.source_steps
        restart = [(0, max(s, 1)), (s, max_steps)]  # a new schedule for the target stage's SGD
        return {g: restart for g in self.target_groups} | {"cls": (0, max(s, 1))}

    def param_groups(self):
        return feature_groups(self.features) | {"bottleneck": list(self.bottleneck.parameters()),
                                                "cls": list(self.classifier.parameters())}

    def optimizer_overrides(self):
        return new_layer_overrides(self.groups, self.head_optimizer)

    def refresh_due(self, step: int, epoch_steps: int) -> bool:
        """Each target epoch from the stage's start, and whenever the labels are missing in the target stage
        (a run resumed from a checkpoint without them); never for SHOT-IM (beta = 0)."""
        s = self.source_steps
        return self.cfg.beta > 0 and step >= s and ((step - s) % epoch_steps == 0 or len(self.pseudo_labels) == 0)

    def refresh(self, target: Iterable[Batch]) -> None:
        # 2a) eval mode: y^ from the soft centroids, refined once with the hard ones
        was = self.training
        self.eval()
        feats, probs, order = [], [], []
        for b in target:
            f = self.bottleneck(self.features(b.x))
            feats.append(f.float())
            probs.append(torch.softmax(self.classifier(f).float(), dim=1))
            order.append(b.idx)
        labels = centroid_labels(torch.cat(feats), torch.cat(probs), self.cfg.refinements)
        self.pseudo_labels = torch.empty_like(labels).scatter_(0, torch.cat(order).to(labels.device), labels)
        self.train(was)

    def update(self, src: Batch, tgt: Batch, step, opt):
        c = self.cfg
        if step < self.source_steps:
            # 1) source stage: label-smoothed CE; F, B and C step
            logits = self.classifier(self.bottleneck(self.features(src.x)))
            loss = F.cross_entropy(logits.float(), src.y, label_smoothing=c.smoothing)
            opt.step(loss, *self.groups)
            return {"loss/source_smoothed": loss.detach(),
                    "acc/source_batch": (logits.argmax(1) == src.y).float().mean().detach()}
        # 2) target stage: src is never read; C frozen; a fresh optimizer for F and B at the stage's start
        if step == self.source_steps:
            opt.reset(*self.target_groups)
        self.classifier.requires_grad_(False)
        logits = self.classifier(self.bottleneck(self.features(tgt.x)))
        loss_im = information_maximisation(logits)
        out = {"loss/im": loss_im.detach()}
        loss = c.im_weight * loss_im
        if c.beta > 0:
            # 2b) beta CE on the refreshed pseudo-labels of this batch's images
            loss_pl = F.cross_entropy(logits.float(), self.pseudo_labels[tgt.idx])
            loss = loss + c.beta * loss_pl
            out["loss/pseudo"] = loss_pl.detach()
        opt.step(loss, *self.target_groups)
        return out

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.bottleneck(self.features(x))
        return f, self.classifier(f)
