"""Self-ensembling (mean teacher): French et al., "Self-ensembling for Visual Domain Adaptation", ICLR 2018.

A student (F, C) and a teacher of the same architecture whose parameters are an exponential moving
average of the student's. Per iteration, every image standardised (zero mean, unit variance per image)
and then augmented (random affine + translation + Gaussian noise), two independent draws for each target
image; the student runs on source and target in separate passes (per-domain batch statistics):
  1) one step of the student on
         L = CE(student(aug(x_s)), y_s) + unsup_weight (L_con + cls_balance L_bal)
     with p = softmax(student(aug_1(x_t))), q = softmax(teacher(aug_2(x_t))) (no gradient),
     m_i = [max_k q_ik > confidence_thresh];  L_con = mean_i m_i mean_k (p_ik - q_ik)^2;
     L_bal = sum_k BCE(mean_i p_ik, 1/K) x mean_i m_i (the class-balance loss).
  2) teacher <- teacher_alpha teacher + (1 - teacher_alpha) student, parameters only (buffers stay the
     teacher's own, as its batch statistics are computed on its own passes in train mode).
  Prediction: the teacher (``predict``), on standardised images.

Readings (official Britefury/self-ensemble-visual-domain-adapt code where the paper is silent): the
paper's "confidence thresholding" runs (threshold 0.96837722, no ramp-up), unsupervised weight 3, EMA
0.99, affine std 0.1, translation +-2 px, noise std 0.1 on source and target, Adam 1e-3, batch 256
(``configs/method/mean_teacher.yaml``); the class balance at the code's default 0.005 (its scripts use it
on MNIST -> SVHN, the grey-to-colour pair, and switch it off elsewhere); the BCE adds 1e-6 inside its logs.
The teacher starts as a copy of the student. Augmentations are drawn from (seed, step, rank), so a
resumed run repeats them. Ledger row: docs/fidelity.md#mean_teacher.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from enum import Enum

import torch
import torch.nn.functional as F
from torch import nn

from uda.data.streams import step_generator
from uda.errors import ConfigError
from uda.methods.base import Batch, Method
from uda.methods.parts import (
    classifier_nets,
    ema_update,
    feature_groups,
    head_groups,
    head_optimizer,
    new_layer_overrides,
    source_ce,
)
from uda.schema.base import nonneg, unit_interval
from uda.schema.method import MethodConfig
from uda.schema.optimizer import OptimizerConfig
from uda.schema.search import log, uniform

AUGMENT_STREAM = 3  # after the source (1) and target (2) index streams


class Predict(str, Enum):
    teacher = "teacher"
    student = "student"


@dataclass
class MeanTeacherConfig(MethodConfig):
    name: str = "mean_teacher"
    teacher_alpha: float = 0.99
    unsup_weight: float = 3.0
    confidence_thresh: float = 0.96837722
    cls_balance: float = 0.005
    standardise: bool = True  # per-image zero mean, unit variance (the official --standardise_samples)
    affine_std: float = 0.1  # std of the Gaussian added to the 2 x 2 identity
    translate: float = 2.0  # pixels, uniform in [-translate, translate] on each axis
    noise_std: float = 0.1
    hflip: bool = False  # the official runs flip only CIFAR / STL
    predict: Predict = Predict.teacher
    # uda tune's search space (uda/schema/search.py): each range and where it comes from
    SEARCH = {
        "method.unsup_weight": log(0.3, 30.0, "stated: a decade either side of the official 3"),
        "method.confidence_thresh": uniform(0.8, 0.99, "stated: around the official 0.968"),
    }

    def check(self, cfg) -> None:
        unit_interval(self.teacher_alpha, "method.teacher_alpha")
        if not 0 <= self.confidence_thresh <= 1:
            raise ConfigError(f"method.confidence_thresh must be in [0, 1], got {self.confidence_thresh}")
        for key in ("unsup_weight", "cls_balance", "affine_std", "translate", "noise_std"):
            nonneg(getattr(self, key), f"method.{key}")


def standardise(x: torch.Tensor) -> torch.Tensor:
    """Each image to zero mean and unit variance over its channels and pixels (population std). [N, C, H, W]."""
    flat = x.flatten(1)
    mean, std = flat.mean(1), flat.std(1, unbiased=False).clamp_min(1e-8)
    return (x - mean.view(-1, 1, 1, 1)) / std.view(-1, 1, 1, 1)


def random_affine(x: torch.Tensor, gen: torch.Generator, *, affine_std: float, translate: float, noise_std: float,
                  hflip: bool) -> torch.Tensor:
    """French et al.'s augmentation of a batch [N, C, H, W]: each image moved by x' = A (x - c) + c + t about
    its centre c, A = I (first entry -1 on a coin flip when ``hflip``) + N(0, affine_std^2) per entry,
    t ~ U(-translate, translate)^2 pixels, zeros outside the image, then N(0, noise_std^2) noise per pixel.
    The draws come from ``gen`` (CPU); the warp samples the image at the inverse map, bilinearly."""
    n, _, h, w = x.shape
    a = torch.eye(2).repeat(n, 1, 1)
    if hflip:
        a[:, 0, 0] = torch.randint(0, 2, (n,), generator=gen).float() * 2 - 1
    a = a + affine_std * torch.randn(n, 2, 2, generator=gen)
    t = (torch.rand(n, 2, generator=gen) * 2 - 1) * translate
    noise = noise_std * torch.randn(x.shape, generator=gen) if noise_std > 0 else None
    out = warp(x, a, t)
    return out if noise is None else out + noise.to(x.device, x.dtype)


def warp(x: torch.Tensor, a: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Images [N, C, H, W] moved by x' = A (x - c) + c + t about their centres (A [N, 2, 2], t [N, 2] in
    pixels, (x, y) order), zeros outside, bilinear. grid_sample reads the source at theta (u', 1) in
    normalised coordinates u = S x, S = diag(2/W, 2/H), so theta = [S A^-1 S^-1 | -S A^-1 t]."""
    h, w = x.shape[-2:]
    s = torch.tensor([2.0 / w, 2.0 / h])
    a_inv = torch.linalg.inv(a)
    lin = s.view(1, 2, 1) * a_inv / s.view(1, 1, 2)
    shift = -(s.view(1, 2) * (a_inv @ t.unsqueeze(2)).squeeze(2))
    theta = torch.cat([lin, shift.unsqueeze(2)], 2).to(x.device, x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def self_ensembling_loss(p_stu: torch.Tensor, p_tea: torch.Tensor, *, threshold: float,
                         cls_balance: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_con + cls_balance L_bal, the confident fraction) for student / teacher probabilities [N, K]:
    L_con = mean_i m_i mean_k (p_ik - q_ik)^2 with m_i = [max_k q_ik > threshold];
    L_bal = sum_k BCE(mean_i p_ik, 1 / K) x mean_i m_i (1e-6 inside the logs, as the official code)."""
    k = p_stu.shape[1]
    mask = (p_tea.max(1).values > threshold).float()
    loss = (((p_stu - p_tea) ** 2).mean(1) * mask).mean()
    if cls_balance > 0:
        avg = p_stu.mean(0)
        bce = -(torch.log(avg + 1e-6) / k + (1 - 1 / k) * torch.log(1 - avg + 1e-6))
        loss = loss + cls_balance * bce.sum() * mask.mean()
    return loss, mask.mean()


class MeanTeacher(Method):
    Config = MeanTeacherConfig

    def __init__(self, *, cfg: MeanTeacherConfig, features: nn.Module, classifier: nn.Module,
                 head_optimizer: OptimizerConfig, seed: int):
        super().__init__()
        self.cfg, self.seed = cfg, seed
        self.features, self.classifier = features, classifier  # the student
        # the teacher starts as the student; its parameters change only by ema_update
        self.teacher = nn.Sequential(copy.deepcopy(features), copy.deepcopy(classifier))
        self.teacher.requires_grad_(False)
        self.head_optimizer = head_optimizer
        self.groups = (*feature_groups(features), "cls")

    @classmethod
    def from_config(cls, cfg, info):
        features, classifier, _ = classifier_nets(cfg, info)
        return cls(cfg=cfg.method, features=features, classifier=classifier, head_optimizer=head_optimizer(cfg),
                   seed=cfg.seed)

    def param_groups(self):
        return head_groups(self.features, cls=self.classifier)

    def optimizer_overrides(self):
        return new_layer_overrides(self.groups, self.head_optimizer)

    def _standardise(self, x: torch.Tensor) -> torch.Tensor:
        return standardise(x) if self.cfg.standardise else x

    def _augment(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        c = self.cfg
        return random_affine(x, gen, affine_std=c.affine_std, translate=c.translate, noise_std=c.noise_std,
                             hflip=c.hflip)

    def update(self, src: Batch, tgt: Batch, step, opt):
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        gen = step_generator(self.seed, step, stream=AUGMENT_STREAM, rank=rank)
        x_s, x_t = self._standardise(src.x), self._standardise(tgt.x)
        x_s, x_t_stu, x_t_tea = self._augment(x_s, gen), self._augment(x_t, gen), self._augment(x_t, gen)
        loss_cls, acc_s = source_ce(self.classifier(self.features(x_s)), src.y)
        p_stu = torch.softmax(self.classifier(self.features(x_t_stu)).float(), 1)
        with torch.no_grad():
            p_tea = torch.softmax(self.teacher(x_t_tea).float(), 1)
        loss_unsup, confident = self_ensembling_loss(p_stu, p_tea, threshold=self.cfg.confidence_thresh,
                                                     cls_balance=self.cfg.cls_balance)
        # 1) student step: source CE + the weighted consistency and class balance on target
        opt.step(loss_cls + self.cfg.unsup_weight * loss_unsup, *self.groups)
        # 2) teacher <- EMA of the student's parameters
        ema_update(self.teacher, nn.Sequential(self.features, self.classifier), self.cfg.teacher_alpha)
        return {"loss/cls": loss_cls.detach(), "loss/unsup": loss_unsup.detach(), "acc/source_batch": acc_s,
                # the official code's label-free model choice: the share of confident teacher predictions
                "acc/confident_target": confident.detach()}

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self._standardise(x)
        if self.cfg.predict == Predict.student:
            f = self.features(x)
            return f, self.classifier(f)
        f = self.teacher[0](x)
        return f, self.teacher[1](f)
