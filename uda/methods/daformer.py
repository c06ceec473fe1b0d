"""DAFormer: Hoyer et al., "DAFormer: Improving Network Architectures and Training Strategies for
Domain-Adaptive Semantic Segmentation", CVPR 2022.

DACS self-training (a student and its EMA teacher) with three training strategies. Per iteration, in the
order of the official code (lhoyer/DAFormer mmseg/models/uda/dacs.py ``forward_train``):
  0) rare class sampling (RCS) picks the source images (the trainer's source stream, ``source_sampling``):
     a class c ~ softmax((1 - f_c) / T) (f_c: c's share of the source label pixels), then an image where c
     covers more than ``rcs_min_share`` of the label map; where the pair takes training crops (``data.seg_crop``)
     the crop is taken again, at most 10 times, until c covers more than ``rcs_min_crop_share`` of it (the
     official 1500 pixels of 512 x 512).
  1) teacher <- alpha_t teacher + (1 - alpha_t) student, alpha_t = min(1 - 1 / (t + 1), ema_max), before the
     student's step (the teacher starts as a copy of the student).
  2) source CE of the student on x_s (a mean over all pixels, ignored ones adding 0: mmseg's CrossEntropyLoss).
  3) ImageNet feature distance (FD) on x_s: fd_weight x the mean, over the cells of the deepest features where
     one thing class (``fd_classes``) covers >= fd_min_ratio of the average-pooled label map, of
     ||F_student(x_s) - F_imagenet(x_s)||_2, F_imagenet a frozen copy of the network as ``backbone.weights``
     loads it. Without ImageNet weights there is nothing to stay close to: FD is off (the offline pairs).
  4) pseudo-labels y^_t = argmax teacher(x_t) on the un-augmented target; q = the share of the batch's target
     pixels with max softmax >= confidence, ONE scalar weight; rows of the PL crop (``pl_ignore_top`` /
     ``pl_ignore_bottom``) weigh 0.
  5) ClassMix: masks of ceil(n / 2) of the n classes of the WHOLE BATCH's source labels, x_m = M x_s + (1 - M)
     x_t, labels and weights mixed (source pixels 1, target pixels q); colour jitter (strength 0.2, applied
     with p 0.8) and blur (p 0.5, sigma U(0.15, 1.15)), each decided once per batch.
  6) weighted CE of the student on x_m (255 pixels contribute 0 to the mean over all pixels).
  7) one step of the student on CE + FD + unsup_weight x mixed CE (the official code backpropagates the three
     separately and steps once: the same gradient).
  The learning-rate warm-up (linear from 1e-6 x the rate over 1500 of 40k iterations) is the optimizer's
  ``optimizer.warmup`` (0.0375 of the run), which method/daformer.yaml brings. Prediction: the student.

Where ours differs from the official code (ledger: docs/fidelity.md#daformer): an empty FD mask adds 0 (the
official mean over no pixels is NaN with no gradient; a NaN loss would skip our whole update); the offline
pairs take no training crops, so they have no RCS re-crop.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from uda.data.streams import step_generator
from uda.errors import ConfigError
from uda.methods.base import Batch, Method, RareClassSampling
from uda.methods.dacs import MIX_STREAM, check_self_training, class_mix_masks, mixed_loss
from uda.methods.parts import (
    common_size,
    crop_to,
    ema_update,
    head_optimizer,
    no_dropout,
    pixel_accuracy,
    seg_groups,
    strong_augment,
)
from uda.nets.segmentation import SegNet, build_segmenter, upsample
from uda.schema import SEGMENTATION, OptimizerConfig
from uda.schema.method import MethodConfig
from uda.schema.search import choice

CITYSCAPES_THINGS = [6, 7, 11, 12, 13, 14, 15, 16, 17, 18]  # traffic light, sign, person ... bicycle (train ids)
GTA5_RCS_MIN_SHARE = 3000 / (1914 * 1052)  # the official 3000 pixels of a full-size GTA5 label map
RCS_MIN_CROP_SHARE = 3000 * 0.5 / (512 * 512)  # rcs_min_pixels x rcs_min_crop_ratio of the official 512 x 512 crop


@dataclass
class DAFormerConfig(MethodConfig):
    name: str = "daformer"
    TASKS = (SEGMENTATION,)
    ema_max: float = 0.999  # alpha_t = min(1 - 1 / (t + 1), ema_max)
    confidence: float = 0.968  # the teacher confidence that counts a target pixel in q
    unsup_weight: float = 1.0
    jitter: float = 0.2  # colour-jitter strength s
    jitter_p: float = 0.8  # applied when U > color_jitter_probability 0.2 of the official config
    blur_p: float = 0.5
    blur_sigma: list[float] = field(default_factory=lambda: [0.15, 1.15])
    # PL crop: fractions of the target rows whose pseudo-labels weigh 0 (Cityscapes recipes: 15 and 120 of 512,
    # the rectification border and the ego car); 0 on pairs without such artefacts
    pl_ignore_top: float = 0.0
    pl_ignore_bottom: float = 0.0
    rcs: bool = True
    rcs_temperature: float = 0.01
    rcs_min_share: float = GTA5_RCS_MIN_SHARE
    rcs_min_crop_share: float = RCS_MIN_CROP_SHARE  # with data.seg_crop: the drawn class's share of the crop
    fd_weight: float = 0.005  # 0: no feature distance; it needs backbone.weights (ImageNet) in any case
    fd_classes: list[int] = field(default_factory=lambda: list(CITYSCAPES_THINGS))
    fd_min_ratio: float = 0.75
    # uda tune's search space (uda/schema/search.py): each range and where it comes from
    SEARCH = {
        "method.ema_max": choice(0.99, 0.999, source="DAFormer Table 5 (experiments.py:328-333)"),
        "method.rcs": choice(True, False, source="DAFormer Table 5: RCS at T 0.01 against none"),
    }

    def check(self, cfg, key: str = "method") -> None:
        check_self_training(self, key, unit=("pl_ignore_top", "pl_ignore_bottom", "rcs_min_share", "rcs_min_crop_share",
                                                  "fd_min_ratio"),
                            nonnegative=("fd_weight",))
        if self.pl_ignore_top + self.pl_ignore_bottom >= 1:
            raise ConfigError(f"{key}.pl_ignore_top + {key}.pl_ignore_bottom must leave rows, got "
                              f"{self.pl_ignore_top} + {self.pl_ignore_bottom}")
        if self.rcs_temperature <= 0:
            raise ConfigError(f"{key}.rcs_temperature must be > 0, got {self.rcs_temperature}")
        k = cfg.data.num_classes
        bad = [c for c in self.fd_classes if not 0 <= c < k]
        if fd_active(self, cfg) and bad:
            raise ConfigError(f"{key}.fd_classes {bad} are not classes of data={cfg.data.name}; valid: 0..{k - 1}")


def fd_active(c: DAFormerConfig, cfg) -> bool:
    """FD needs ImageNet weights to stay close to: a non-empty ``backbone.weights`` and fd_weight > 0."""
    return c.fd_weight > 0 and bool(getattr(cfg.backbone, "weights", ""))


def thing_cells(y: torch.Tensor, size: tuple[int, int], num_classes: int, things: list[int],
                min_ratio: float) -> torch.Tensor:
    """bool [N, h, w]: the cells of a feature grid of ``size`` where one class covers >= ``min_ratio`` of the
    label map y [N, H, W] average-pooled to it (the official downscale_label_ratio, which pools by H // h and
    needs it to divide; 255 counts as its own class) and that class is a thing class."""
    one_hot = F.one_hot(torch.where(y == 255, num_classes, y), num_classes + 1).permute(0, 3, 1, 2).float()
    ratio, cls = F.adaptive_avg_pool2d(one_hot, size).max(1)  # = avg_pool2d by H / h where it divides
    return (ratio >= min_ratio) & torch.isin(cls, torch.tensor(things, device=y.device))


def feature_distance(f_s: torch.Tensor, f_imnet: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """mean over the cells in ``mask`` [N, h, w] of ||f_s - f_imnet||_2 over channels; 0 where none is."""
    dist = torch.linalg.vector_norm(f_s.float() - f_imnet.float(), dim=1)
    return dist[mask].mean() if mask.any() else dist.sum() * 0


def pl_crop(weight: torch.Tensor, top: float, bottom: float) -> torch.Tensor:
    """The pseudo-label weights [N, H, W] with the top and bottom fractions of the rows set to 0."""
    h = weight.shape[-2]
    n_top, n_bottom = round(top * h), round(bottom * h)
    weight = weight.clone()
    weight[:, :n_top] = 0
    if n_bottom:
        weight[:, -n_bottom:] = 0
    return weight


class DAFormer(Method):
    Config = DAFormerConfig

    def __init__(self, *, cfg: DAFormerConfig, segmenter: SegNet, imnet: SegNet | None,
                 head_optimizer: OptimizerConfig, seed: int, num_classes: int, mean: tuple[float, ...],
                 std: tuple[float, ...]):
        super().__init__()
        self.cfg, self.seed, self.num_classes = cfg, seed, num_classes
        self.segmenter = segmenter  # the student
        self.teacher = copy.deepcopy(segmenter)  # parameters change only by ema_update
        self.teacher.requires_grad_(False)
        self.imnet = imnet  # the frozen ImageNet network of FD, or None (FD off)
        if imnet is not None:
            imnet.requires_grad_(False)
        self.head_optimizer = head_optimizer
        self.register_buffer("mean", torch.tensor(mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(-1, 1, 1), persistent=False)

    @classmethod
    def from_config(cls, cfg, info):
        build = lambda: build_segmenter(cfg.backbone, in_channels=info.channels, num_classes=info.num_classes)  # noqa: E731
        segmenter = build()
        if cfg.method.fd_weight > 0 and not fd_active(cfg.method, cfg):  # said, not silent: a recipe may lack weights
            logging.getLogger("uda").warning("daformer: the feature distance (method.fd_weight=%s) is off: "
                                             "backbone.weights is empty, so no ImageNet features to stay close to",
                                             cfg.method.fd_weight)
        return cls(cfg=cfg.method, segmenter=segmenter, imnet=build() if fd_active(cfg.method, cfg) else None,
                   head_optimizer=head_optimizer(cfg), seed=cfg.seed, num_classes=info.num_classes,
                   mean=info.mean, std=info.std)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.imnet is not None:
            self.imnet.eval()  # the ImageNet network extracts features in eval mode, as the official
        return self

    def param_groups(self):
        return seg_groups(self.segmenter)

    def optimizer_overrides(self):
        return {"head": self.head_optimizer}

    def source_sampling(self):
        c = self.cfg
        return RareClassSampling(c.rcs_temperature, c.rcs_min_share, c.rcs_min_crop_share) if c.rcs else None

    def update(self, src: Batch, tgt: Batch, step, opt):
        c = self.cfg
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        gen = step_generator(self.seed, step, stream=MIX_STREAM, rank=rank)
        # 1) teacher <- EMA of the student before its step (a copy at step 0)
        if step > 0:
            ema_update(self.teacher, self.segmenter, min(1 - 1 / (step + 1), c.ema_max))
        no_dropout(self.teacher)
        # 2) source CE, averaged over ALL pixels (255 adds 0), as mmseg's CrossEntropyLoss in the official code
        out_s = self.segmenter(src.x)
        loss_s = mixed_loss(out_s.logits, src.y, torch.ones(src.y.shape, device=src.y.device))
        # 3) FD: the student's deepest source features stay near the ImageNet network's on thing classes
        loss_fd = torch.zeros((), device=src.x.device)
        if self.imnet is not None:
            with torch.no_grad():
                f_imnet = self.imnet(src.x).features
            mask = thing_cells(src.y, tuple(out_s.features.shape[-2:]), self.num_classes, c.fd_classes,
                               c.fd_min_ratio)
            loss_fd = c.fd_weight * feature_distance(out_s.features, f_imnet, mask)
        with torch.no_grad():
            # 4) pseudo-labels and the one confident share q on the un-augmented target; the PL crop
            p_t = F.softmax(upsample(self.teacher(tgt.x).logits.float(), tuple(tgt.x.shape[-2:])), dim=1)
            conf, y_hat = p_t.max(1)
            q = (conf >= c.confidence).float().mean()
            w_t = pl_crop(q.expand_as(conf), c.pl_ignore_top, c.pl_ignore_bottom)
            self.pseudo = (y_hat, w_t)  # the target's labels and weights, for MIC on this host
            # 5) ClassMix with the batch's source classes (on one window of each where the domains' sizes
            # differ), then jitter and blur decided once per batch
            size = common_size(src.x, tgt.x)
            x_s, y_s = crop_to(size, gen, src.x, src.y)
            x_t, y_hat, w_t = crop_to(size, gen, tgt.x, y_hat, w_t)
            m = class_mix_masks(y_s, gen, batch_classes=True)
            x_m = torch.where(m.unsqueeze(1), x_s, x_t)
            y_m = torch.where(m, y_s, y_hat)
            w = torch.where(m, torch.ones_like(w_t), w_t)
            x_m = strong_augment(x_m, gen, mean=self.mean, std=self.std, jitter=c.jitter, jitter_p=c.jitter_p,
                                 blur_p=c.blur_p, blur_sigma=c.blur_sigma, per_batch=True)
        # 6) the weighted CE of the mixed images; 7) one step of the student
        loss_m = mixed_loss(self.segmenter(x_m).logits, y_m, w)
        opt.step(loss_s + loss_fd + c.unsup_weight * loss_m, "seg", "head")
        return {"loss/seg": loss_s.detach(), "loss/fd": loss_fd.detach(), "loss/mix": loss_m.detach(),
                "acc/confident_target": q,
                "acc/source_pixels": pixel_accuracy(upsample(out_s.logits.detach(), tuple(src.y.shape[-2:])), src.y)}

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.segmenter(x)
        return out.features, out.logits
