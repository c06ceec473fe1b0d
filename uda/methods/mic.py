"""MIC: Hoyer et al., "MIC: Masked Image Consistency for Context-Enhanced Domain Adaptation", CVPR 2023.

A loss ADDED TO A HOST method (``method/host=sdat|cdan|mcc`` on classification pairs, ``dacs|daformer`` on
segmentation pairs; the host's own config under ``method.host``): the student (the host's network) predicts
on a colour-augmented, patch-masked target image; its targets are an EMA teacher's pseudo-labels on the full
target image. Per iteration (classification):
  1) x_tm = mask(aug(x_t)): aug = colour jitter and Gaussian blur, each switched on or off ONCE per run;
     mask = one U(0, 1) per block of b x b pixels, the block kept where U > r, zero (the mean colour in
     normalised space) elsewhere;
  2) teacher <- alpha_t teacher + (1 - alpha_t) student, alpha_t = min(1 - 1 / (t + 1), ema) (from t = 1;
     parameters only); y^ = argmax p, q = max p of p = softmax(teacher(x_t)), dropout off, BN in train mode;
  3) the host's update, each of its backward passes with MIC's term added at that pass's weights:
     L_m = mean_i q_i CE(student(x_tm)_i, y^_i) in the first (the only pass of cdan and mcc; SDAT's pass
     at w), the unweighted mean CE in SDAT's second pass at w + e; times ``mask_weight``.
  Prediction: the student (the official evaluation).
Per iteration (segmentation; official seg/mmseg/models/uda/dacs.py:315-438, masking_consistency_module.py):
  1) x_tm = mask(aug(x_t)): colour jitter (applied when U > jitter_switch) and blur (when U > 0.5), each
     decided ONCE PER ITERATION; the mask as above with b = 32 on 512-pixel crops (scaled to the run's side);
  2) the host's update (DACS / DAFormer: its EMA teacher, pseudo-labels y^ and weights w_t, PL crop included);
     its one backward gets L_m = mean over all pixels of w_t CE(student(x_tm), y^) (255 adds 0) times
     ``mask_weight``: the host's labels and weights are reused, no second teacher (mask_pseudo_threshold
     'same', mask_alpha 'same' of the official configs), so ``ema`` and ``pseudo_weight`` do not apply.

Readings (official lhoyer/MIC cls/examples/cdan_mcc_sdat_masking.py:219-289, cls/dalib/modules/masking.py,
teacher.py, cls/experiments.py:14-44,131-154): ema 0.9, q = the teacher's max probability (the ViT runs;
``pseudo_weight=none`` as the ResNet-101 run), b = 64 on 224-pixel images (scaled to the run's image side),
r = 0.7, jitter strength 0.2 switched on when U > 0.2 and blur when U > 0.5 (U drawn once per run), the
masked image through the student in its own forward; default host CDAN+MCC w/ SDAT. Every draw comes from
(seed, step, rank), so a resumed run repeats it. Ledger row: docs/fidelity.md#mic.
"""
from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from uda.data.streams import step_generator
from uda.errors import ConfigError
from uda.methods.base import Batch, Method, Optimizers
from uda.methods.cdan import CDAN
from uda.methods.dacs import DACS, mixed_loss
from uda.methods.daformer import DAFormer
from uda.methods.mcc import MCC
from uda.methods.parts import ema_update, no_dropout, strong_augment
from uda.methods.sdat import SDAT
from uda.schema.base import CLASSIFICATION, SEGMENTATION, nonneg, positive, unit_interval
from uda.schema.method import MethodConfig
from uda.schema.search import choice

# methods whose every backward reads the student on the target batch (method/host=<name>); the segmentation
# hosts keep their target pseudo-labels and weights of the step in ``pseudo``
HOSTS: dict[str, type[Method]] = {"sdat": SDAT, "cdan": CDAN, "mcc": MCC, "dacs": DACS, "daformer": DAFormer}
MASK_STREAM = 5  # after the index streams (1, 2), mean teacher's (3) and DACS's (4) draws; 6: the run's switches


class PseudoWeight(str, Enum):
    prob = "prob"  # q_i = the teacher's max probability for image i
    none = "none"  # q_i = 1


@dataclass
class MICConfig(MethodConfig):
    name: str = "mic"
    TASKS = (CLASSIFICATION, SEGMENTATION)
    host: Any = None  # the host's config, from method/host=<name> (method/host/*.yaml)
    ema: float = 0.9  # teacher alpha_t = min(1 - 1 / (t + 1), ema)
    pseudo_weight: PseudoWeight = PseudoWeight.prob  # prob | none
    mask_block: int = 64  # the block side in pixels on an image of mask_side pixels, scaled to the run's side
    mask_side: int = 224  # classification: 64 on 224; segmentation hosts bring 32 on 512-pixel crops
    mask_ratio: float = 0.7  # r: the share of blocks masked
    jitter: float = 0.2  # colour-jitter strength s
    jitter_switch: float = 0.2  # jitter is on for the run when U > this (U drawn once per run)
    blur: bool = True  # blur is on for the run when U > 0.5 (U drawn once per run)
    mask_weight: float = 1.0  # the trade-off on L_m
    # uda tune's search space (uda/schema/search.py): each range and where it comes from
    SEARCH = {
        "method.mask_ratio": choice(0.3, 0.5, 0.7, 0.9, source="MIC Table 8 (seg/experiments.py:514-515)"),
        "method.mask_block": choice(16, 32, 64, 128,
                                    source="MIC Table 8 (seg/experiments.py:514-515), on mask_side pixels"),
    }

    def check(self, cfg) -> None:
        if getattr(self.host, "name", None) not in HOSTS:
            raise ConfigError(f"method=mic needs a host method: method/host={getattr(self.host, 'name', None)} is not "
                              f"one; valid hosts: {', '.join(HOSTS)}")
        task = cfg.data.task
        if task not in HOSTS[self.host.name].Config.TASKS:
            raise ConfigError(f"method/host={self.host.name} is not a host for the {task} pair data={cfg.data.name}; "
                              f"valid hosts: {', '.join(h for h, m in HOSTS.items() if task in m.Config.TASKS)}")
        self.host.check(cfg, "method.host")
        positive(self.mask_side, "method.mask_side")
        unit_interval(self.ema, "method.ema")
        positive(self.mask_block, "method.mask_block")
        unit_interval(self.mask_ratio, "method.mask_ratio")
        nonneg(self.jitter, "method.jitter")
        unit_interval(self.jitter_switch, "method.jitter_switch")
        nonneg(self.mask_weight, "method.mask_weight")


def block_mask(n: int, size: tuple[int, int], block: int, ratio: float, gen: torch.Generator) -> torch.Tensor:
    """MIC's mask [n, 1, H, W] of 0/1: U(0, 1) per cell of a round(H / block) x round(W / block) grid, 1 where
    U > ``ratio``, upsampled nearest to (H, W)."""
    h, w = size
    cells = torch.rand(n, 1, max(round(h / block), 1), max(round(w / block), 1), generator=gen)
    return F.interpolate((cells > ratio).float(), size=size, mode="nearest")


class AddedTerms:
    """The ``Optimizers`` a host sees inside MIC: its k-th backward adds ``terms[k]()`` (the last term for
    any later pass), computed at that moment's weights; every other call goes to ``opt`` unchanged."""

    def __init__(self, opt: Optimizers, terms: list[Callable[[], torch.Tensor]]):
        self.opt, self.terms, self.added = opt, terms, []

    def backward(self, loss: torch.Tensor) -> None:
        term = self.terms[min(len(self.added), len(self.terms) - 1)]()
        self.added.append(term.detach())
        self.opt.backward(loss + term)

    def step(self, loss: torch.Tensor, *groups: str) -> None:
        self.zero(*groups)
        self.backward(loss)
        self.apply(*groups)

    def __getattr__(self, name: str):  # zero, apply, perturb, restore, new_round
        return getattr(self.opt, name)


class MIC(Method):
    Config = MICConfig

    def __init__(self, *, cfg: MICConfig, host: Method, seed: int, image_size: int, mean: tuple[float, ...],
                 std: tuple[float, ...]):
        super().__init__()
        self.cfg, self.seed = cfg, seed
        self.host = host  # its networks, its update and its optimizer groups
        self.segmentation = hasattr(host, "segmenter")  # a DACS / DAFormer host: its teacher's labels are reused
        if not self.segmentation:
            self.student = nn.Sequential(host.features, host.classifier)  # (the host's modules, not copies)
            self.teacher = copy.deepcopy(self.student)  # its parameters change only by ema_update
            self.teacher.requires_grad_(False)
        # the block scales with the image side; pairs of varying sizes (GTA5, Cityscapes: image_size 0) take it as is
        self.block = max(round(cfg.mask_block * image_size / cfg.mask_side), 1) if image_size else cfg.mask_block
        self.register_buffer("mean", torch.tensor(mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(-1, 1, 1), persistent=False)
        # the run's colour-augmentation switches, drawn once from the seed (official: at Masking.__init__)
        u = torch.rand(2, generator=step_generator(seed, 0, stream=MASK_STREAM + 1)).tolist()
        self.jitter_on, self.blur_on = cfg.jitter > 0 and u[0] > cfg.jitter_switch, cfg.blur and u[1] > 0.5

    @classmethod
    def from_config(cls, cfg, info):
        host = HOSTS[cfg.method.host.name].from_config(dataclasses.replace(cfg, method=cfg.method.host), info)
        return cls(cfg=cfg.method, host=host, seed=cfg.seed, image_size=info.image_size, mean=info.mean,
                   std=info.std)

    def param_groups(self):
        return self.host.param_groups()

    def optimizer_overrides(self):
        return self.host.optimizer_overrides()

    def stages(self, max_steps: int):
        return self.host.stages(max_steps)

    def source_sampling(self):
        return self.host.source_sampling()  # DAFormer's rare class sampling

    def masked(self, x_t: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """x_tm: the target batch colour-augmented (where this run's switches are on), then block-masked."""
        x = x_t
        if self.jitter_on or self.blur_on:
            x = strong_augment(x, gen, mean=self.mean, std=self.std, jitter=self.cfg.jitter,
                               jitter_p=float(self.jitter_on), blur_p=float(self.blur_on), blur_sigma=[0.15, 1.15])
        mask = block_mask(len(x), tuple(x.shape[-2:]), self.block, self.cfg.mask_ratio, gen).to(x.device, x.dtype)
        return x * mask

    def update(self, src: Batch, tgt: Batch, step, opt):
        c = self.cfg
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        gen = step_generator(self.seed, step, stream=MASK_STREAM, rank=rank)
        if self.segmentation:
            return self.update_segmentation(src, tgt, step, opt, gen)
        with torch.no_grad():
            # 1) the masked target image
            x_tm = self.masked(tgt.x, gen)
            # 2) teacher <- EMA of the student (from t = 1); its pseudo-labels on the full target image
            if step > 0:
                ema_update(self.teacher, self.student, min(1 - 1 / (step + 1), c.ema))
            no_dropout(self.teacher)  # dropout and DropPath off, BN in train mode (official EMATeacher)
            q, y_hat = torch.softmax(self.teacher(tgt.x).float(), dim=1).max(1)
            w = q if c.pseudo_weight == PseudoWeight.prob else torch.ones_like(q)

        def weighted() -> torch.Tensor:
            return c.mask_weight * (w * F.cross_entropy(self.student(x_tm).float(), y_hat, reduction="none")).mean()

        def plain() -> torch.Tensor:
            return c.mask_weight * F.cross_entropy(self.student(x_tm).float(), y_hat)

        # 3) the host's update; MIC's term joins each of its backward passes (weighted, then plain)
        terms = AddedTerms(opt, [weighted, plain])
        out = self.host.update(src, tgt, step, terms)
        return out | {"loss/mask": terms.added[0], "acc/pseudo_confidence": q.mean()}

    def update_segmentation(self, src: Batch, tgt: Batch, step, opt, gen: torch.Generator):
        c = self.cfg
        # 1) the masked target: jitter and blur decided once per iteration, then the block mask
        with torch.no_grad():
            u = torch.rand(2, generator=gen).tolist()
            jitter_on, blur_on = c.jitter > 0 and u[0] > c.jitter_switch, c.blur and u[1] > 0.5
            x_tm = tgt.x
            if jitter_on or blur_on:
                x_tm = strong_augment(x_tm, gen, mean=self.mean, std=self.std, jitter=c.jitter,
                                      jitter_p=float(jitter_on), blur_p=float(blur_on), blur_sigma=[0.15, 1.15])
            mask = block_mask(len(x_tm), tuple(x_tm.shape[-2:]), self.block, c.mask_ratio, gen)
            x_tm = x_tm * mask.to(x_tm.device, x_tm.dtype)

        def masked_term() -> torch.Tensor:  # at the host's backward, after its pseudo-labels exist
            y_hat, w_t = self.host.pseudo
            return c.mask_weight * mixed_loss(self.host.segmenter(x_tm).logits, y_hat, w_t)

        # 2) the host's update; MIC's term joins its backward
        terms = AddedTerms(opt, [masked_term])
        out = self.host.update(src, tgt, step, terms)
        return out | {"loss/mask": terms.added[0]}

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.host.features_and_logits(x)
