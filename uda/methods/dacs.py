"""DACS: Tranheden et al., "DACS: Domain Adaptation via Cross-domain Mixed Sampling", WACV 2021.

A student segmenter and a teacher whose parameters are an EMA of the student's. Per iteration, ONE backward:
  1) pseudo-labels: y^_t = argmax teacher(x_t), on the un-augmented target (no gradient), confidence
     c = max softmax; q = the share of the batch's target pixels with c >= ``confidence`` (one number).
  2) ClassMix, per image pair i: M_i = the pixels of ceil(n_i / 2) classes drawn from the n_i classes of the
     SOURCE label map y_s,i (255 counts as a class, as in the official code); x_m = M x_s + (1 - M) x_t,
     y_m = M y_s + (1 - M) y^_t, weights w = 1 on pasted source pixels and q on target pixels; then colour
     jitter (p 0.8, strength 0.25) and Gaussian blur (p 0.5, sigma U(0.15, 1.15)) of x_m.
  3) one step of the student on CE(student(x_s), y_s) + unsup_weight * mean_pixels(w CE(student(x_m), y_m))
     (255 pixels contribute 0 to the mean, as the official pixel-wise weighted CE).
  4) teacher <- alpha_t teacher + (1 - alpha_t) student, alpha_t = min(1 - 1 / (t + 1), ema_max): parameters only.
  Prediction: the student (the official evaluation).

Readings (official vikolss/DACS code where the paper is silent): the teacher runs in train mode; the student
runs on source and mixed images in separate passes; every random draw comes from (seed, step, rank), so a
resumed run repeats it. The jitter is torchvision's (brightness, contrast, saturation, hue in that order,
factors U(1 - s, 1 + s), hue U(-s, s)) where the official code calls kornia's ColorJitter; the blur kernel
is floor(ceil(0.1 size) - 0.5 + ceil(0.1 size) mod 2) per axis, as the official code. Ledger row:
docs/fidelity.md#dacs.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from uda.data.streams import step_generator
from uda.errors import ConfigError
from uda.losses import seg_ce
from uda.methods.base import Batch, Method
from uda.methods.parts import (
    common_size,
    crop_to,
    ema_update,
    head_optimizer,
    pixel_accuracy,
    seg_groups,
    strong_augment,
)
from uda.nets.segmentation import SegNet, build_segmenter, upsample
from uda.schema import SEGMENTATION, OptimizerConfig
from uda.schema.base import nonneg, unit_interval
from uda.schema.method import MethodConfig
from uda.schema.search import log, uniform

MIX_STREAM = 4  # after the index streams (1, 2) and mean teacher's augmentations (3)


@dataclass
class DACSConfig(MethodConfig):
    name: str = "dacs"
    TASKS = (SEGMENTATION,)
    ema_max: float = 0.99  # alpha_t = min(1 - 1 / (t + 1), ema_max)
    confidence: float = 0.968  # the teacher confidence that counts a target pixel in q
    unsup_weight: float = 1.0
    jitter: float = 0.25  # colour-jitter strength s
    jitter_p: float = 0.8
    blur_p: float = 0.5
    blur_sigma: list[float] = field(default_factory=lambda: [0.15, 1.15])
    # uda tune's search space (uda/schema/search.py): each range and where it comes from
    SEARCH = {
        "method.unsup_weight": log(0.1, 10.0, "stated: a decade either side of the official 1"),
        "method.confidence": uniform(0.8, 0.99, "stated: around the official 0.968"),
    }

    def check(self, cfg, key: str = "method") -> None:
        check_self_training(self, key)


def check_self_training(c, key: str, unit: tuple[str, ...] = (), nonnegative: tuple[str, ...] = ()) -> None:
    """The checks DACS and DAFormer share (and ``unit`` / ``nonnegative``: more of ``c``'s fields): ema_max in
    [0, 1), the confidence and the augmentations' probabilities in [0, 1], the weights >= 0, blur_sigma a range."""
    unit_interval(c.ema_max, f"{key}.ema_max")
    for field_ in ("confidence", "jitter_p", "blur_p", *unit):
        if not 0 <= getattr(c, field_) <= 1:
            raise ConfigError(f"{key}.{field_} must be in [0, 1], got {getattr(c, field_)}")
    for field_ in ("unsup_weight", "jitter", *nonnegative):
        nonneg(getattr(c, field_), f"{key}.{field_}")
    if len(c.blur_sigma) != 2 or not 0 < c.blur_sigma[0] <= c.blur_sigma[1]:
        raise ConfigError(f"{key}.blur_sigma must be [low, high] with 0 < low <= high, got {c.blur_sigma}")


def class_mix_masks(y_s: torch.Tensor, gen: torch.Generator, *, batch_classes: bool = False) -> torch.Tensor:
    """ClassMix masks [N, H, W] (bool): per image, the pixels of ceil(n / 2) of the n classes present in its
    source label map y_s [N, H, W] (255 included), drawn without replacement. ``batch_classes``: the n classes
    are those of the whole batch (DAFormer's get_class_masks calls torch.unique on the batch), so a draw
    may name classes absent from the image."""
    masks = []
    for y in y_s:
        classes = torch.unique(y_s if batch_classes else y)
        n = len(classes)
        chosen = classes[torch.randperm(n, generator=gen)[: (n + n % 2) // 2].to(classes.device)]
        masks.append(torch.isin(y, chosen))
    return torch.stack(masks)


def mixed_loss(logits_m: torch.Tensor, y_m: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """mean over all N x H x W pixels of weight x CE(logits_m, y_m), CE = 0 where y_m = 255 (the official
    CrossEntropyLoss2dPixelWiseWeighted). ``logits_m`` [N, K, h, w] upsampled to y_m's [N, H, W]."""
    ce = F.cross_entropy(upsample(logits_m.float(), tuple(y_m.shape[-2:])), y_m, ignore_index=255, reduction="none")
    return (weight * ce).mean()


class DACS(Method):
    Config = DACSConfig

    def __init__(self, *, cfg: DACSConfig, segmenter: SegNet, head_optimizer: OptimizerConfig, seed: int,
                 mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.cfg, self.seed = cfg, seed
        self.segmenter = segmenter  # the student
        self.teacher = copy.deepcopy(segmenter)  # parameters change only by ema_update
        self.teacher.requires_grad_(False)
        self.head_optimizer = head_optimizer
        self.register_buffer("mean", torch.tensor(mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(-1, 1, 1), persistent=False)

    @classmethod
    def from_config(cls, cfg, info):
        segmenter = build_segmenter(cfg.backbone, in_channels=info.channels, num_classes=info.num_classes)
        return cls(cfg=cfg.method, segmenter=segmenter, head_optimizer=head_optimizer(cfg), seed=cfg.seed,
                   mean=info.mean, std=info.std)

    def param_groups(self):
        return seg_groups(self.segmenter)

    def optimizer_overrides(self):
        return {"head": self.head_optimizer}

    def update(self, src: Batch, tgt: Batch, step, opt):
        c = self.cfg
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        gen = step_generator(self.seed, step, stream=MIX_STREAM, rank=rank)
        # 1) the teacher's pseudo-labels on the un-augmented target and the confident share q
        with torch.no_grad():
            p_t = F.softmax(upsample(self.teacher(tgt.x).logits.float(), tuple(tgt.x.shape[-2:])), dim=1)
            conf, y_hat = p_t.max(1)
            q = (conf >= c.confidence).float().mean()
            self.pseudo = (y_hat, q.expand_as(conf))  # the target's labels and weights, for MIC on this host
            # 2) ClassMix: source classes pasted on target, labels and weights following the mask (on one
            # window of each where the domains' sizes differ, GTA5 -> Cityscapes)
            size = common_size(src.x, tgt.x)
            x_s, y_s = crop_to(size, gen, src.x, src.y)
            x_t, y_hat, conf = crop_to(size, gen, tgt.x, y_hat, conf)
            m = class_mix_masks(y_s, gen)
            x_m = torch.where(m.unsqueeze(1), x_s, x_t)
            y_m = torch.where(m, y_s, y_hat)
            w = torch.where(m, torch.ones_like(conf), q.expand_as(conf))
            x_m = strong_augment(x_m, gen, mean=self.mean, std=self.std, jitter=c.jitter, jitter_p=c.jitter_p,
                                 blur_p=c.blur_p, blur_sigma=c.blur_sigma)
        # 3) one step of the student: source CE + the weighted CE on the mixed images
        logits_s = self.segmenter(src.x).logits
        loss_s = seg_ce(logits_s, src.y)
        loss_m = mixed_loss(self.segmenter(x_m).logits, y_m, w)
        opt.step(loss_s + c.unsup_weight * loss_m, "seg", "head")
        # 4) teacher <- EMA of the student, alpha_t = min(1 - 1 / (t + 1), ema_max)
        ema_update(self.teacher, self.segmenter, min(1 - 1 / (step + 1), c.ema_max))
        return {"loss/seg": loss_s.detach(), "loss/mix": loss_m.detach(), "acc/confident_target": q,
                "acc/source_pixels": pixel_accuracy(upsample(logits_s.detach(), tuple(src.y.shape[-2:])), src.y)}

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.segmenter(x)
        return out.features, out.logits
