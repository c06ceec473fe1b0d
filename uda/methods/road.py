"""ROAD: Chen et al., "ROAD: Reality Oriented Adaptation for Semantic Segmentation of Urban Scenes",
CVPR 2018 — target guided distillation + spatial-aware adaptation.

Per iteration:
  1) ``warmup`` stage (``warmup_steps``; none with ImageNet weights): one step of the segmenter on the
     source segmentation loss alone;
  2) first ``adapt`` step, once: the teacher F_R <- the segmenter (frozen from then on);
  3) ``adapt``: one backward and one step of the segmenter and the region classifiers on
         L = CE_seg(source) + dist_weight L_dist(target) + L_spatial
     the segmenter ascends spatial_weight x lambda_p x L_spatial through a gradient reversal, the region
     classifiers descend L_spatial itself.

No official code exists; this is implemented from the paper, with these readings where it is ambiguous:

* Distillation teacher ("real style" model): a frozen copy of the segmenter made ONCE, at the first
  step of the ``adapt`` stage. With ImageNet weights and ``warmup_steps: 0`` that copy is the pretrained
  network itself (the paper's setting). Without pretrained weights (digits_seg) a ``warmup`` stage
  trains the segmenter on source first, and the teacher is that source-trained network.
* The teacher's mode (``teacher_norm``): ``student`` (default) runs the frozen teacher exactly as the
  student runs, on the same source + target batch with the same random draws (batch norm on that batch's
  statistics, the same dropout masks), so L_dist is exactly 0 at the copy and afterwards measures only how
  far the student's weights moved, never its dropout noise (with the teacher in eval mode and the student
  in train mode, FCN-8s's dropout kept L_dist > 0 and pulled the features towards about half the
  teacher's). ``running`` is eval mode: running statistics as at the copy (after a source warm-up: the
  source-only net's features), no dropout; ``target`` normalises each target batch with its own
  statistics (AdaBN-style), no dropout. The weights stay frozen in every mode.
* L_dist = 1/2 x the mean over target positions of the Euclidean distance ||F(x_t)_i - F_R(x_t)_i||_2
  between the segmenter's and the teacher's deepest features (not squared, as in the paper's Eq. 1).
* Spatial-aware adaptation: the deepest feature map is split into ``grid`` = rows x columns regions
  (``torch.tensor_split``: equal up to one position); region m has its own domain classifier D_m
  (a ``disc_kernel`` x ``disc_kernel`` conv C -> hidden, ReLU, 1x1 conv -> 1, so it scores each position of
  its region; the default kernel 1 sees one feature vector, a larger one its neighbourhood zero-padded at the
  region's border) behind one gradient reversal layer.
  L_m = 1/2 (BCE(D_m(source region), 0) + BCE(D_m(target region), 1)), mean over positions
  (``region_output: position``, the default: the region's feature distributions are aligned), or on the
  mean of the region's scores per image (``region``: one source/target decision per region and image);
  L_spatial = sum_m w_m L_m. The classifiers descend L_spatial itself; ``spatial_weight`` scales only
  what reaches the segmenter, as the reversal layer's coefficient spatial_weight x lambda_p (lambda_p:
  Ganin et al.'s ramp over the adapt stage). Weighting the classifiers' own loss by spatial_weight too
  (0.1) slows them tenfold: on digits_seg they then stayed at chance (L_m ~ 0.67) and the segmenter
  received no useful adversarial signal.
* Source and target go through the segmenter as one batch (``forward_pair``): batch-norm statistics
  that train stay consistent between training and evaluation.

Ledger row (paper settings, departures, evidence): docs/fidelity.md#road.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from enum import Enum

import torch
from torch import nn

from uda.errors import ConfigError
from uda.losses import domain_bce, grad_reverse, grl_lambda, seg_ce
from uda.methods.base import Batch, Method
from uda.methods.parts import head_optimizer, seg_groups, warmup_stages
from uda.nets.segmentation import SegNet, build_segmenter, forward_pair
from uda.schema import SEGMENTATION, OptimizerConfig
from uda.schema.base import below_max_steps, nonneg, positive, widths
from uda.schema.method import MethodConfig
from uda.schema.search import log


class TeacherNorm(str, Enum):
    student = "student"  # the student's mode on the student's batch: the same statistics and dropout masks
    running = "running"  # eval mode: batch-norm running statistics as at the copy, no dropout
    target = "target"  # each target batch's own statistics, no dropout (running statistics never used)


class RegionOutput(str, Enum):
    position = "position"  # BCE on every position's score: the region's feature distributions are aligned
    region = "region"  # BCE on the mean of the region's scores: one decision per region and image


@dataclass
class ROADConfig(MethodConfig):
    """Target guided distillation + spatial-aware adaptation (region classifiers)."""

    name: str = "road"
    TASKS = (SEGMENTATION,)
    # stage 1: the segmenter on labelled source only; the distillation teacher is copied from
    # the segmenter once, at the first step after it (0: copied before any update, i.e. the
    # pretrained net itself). On digits_seg that source-trained teacher's distillation costs
    # target mIoU (docs/notes/road.md)
    warmup_steps: int = 1000
    dist_weight: float = 0.1  # target guided distillation
    spatial_weight: float = 0.1  # reversal coefficient: the segmenter ascends spatial_weight x the region losses
    grid: list[int] = field(default_factory=lambda: [2, 2])  # regions: rows, columns of the feature map
    region_weights: list[float] = field(default_factory=list)  # one per region, row-major; [] = 1 each
    disc_hidden: int = 64  # width of each region's domain classifier
    # kernel of the classifier's first conv: 1 scores each position from its own feature
    # vector; 3 (odd k) also sees its k x k neighbourhood, zero-padded at the region's border
    # (it never sees other regions)
    disc_kernel: int = 1
    # what each region classifier decides (RegionOutput)
    region_output: RegionOutput = RegionOutput.position
    # reversal weight: Ganin's ramp 2 / (1 + exp(-grl_gamma q)) - 1 over the adapt stage
    grl_gamma: float = 10.0
    # the teacher's mode (TeacherNorm): as the student, eval, or target statistics
    teacher_norm: TeacherNorm = TeacherNorm.student
    # uda tune's search space (uda/schema/search.py): each range and where it comes from
    SEARCH = {
        "method.dist_weight": log(0.01, 1.0, "stated: a decade either side of our 0.1"),
        "method.spatial_weight": log(0.01, 1.0, "stated: a decade either side of our 0.1"),
    }

    def check(self, cfg) -> None:
        below_max_steps(self.warmup_steps, "method.warmup_steps", cfg.trainer.max_steps)
        for key in ("dist_weight", "spatial_weight", "grl_gamma"):
            nonneg(getattr(self, key), f"method.{key}")
        widths(self.grid, "method.grid", 2)
        positive(self.disc_hidden, "method.disc_hidden")
        if self.disc_kernel < 1 or self.disc_kernel % 2 == 0:
            raise ConfigError(f"method.disc_kernel must be an odd size >= 1 (1, 3, 5, ...), got {self.disc_kernel}")
        n = self.grid[0] * self.grid[1]
        if self.region_weights and (len(self.region_weights) != n
                                    or any(not 0 <= w < math.inf for w in self.region_weights)):
            raise ConfigError(f"method.region_weights needs {n} values >= 0 (one per region of the "
                              f"{self.grid[0]}x{self.grid[1]} grid), got {list(self.region_weights)}")


def split_regions(f: torch.Tensor, rows: int, cols: int) -> list[torch.Tensor]:
    """[N, C, h, w] -> rows x cols regions (row-major), as views."""
    return [c for r in torch.tensor_split(f, rows, dim=2) for c in torch.tensor_split(r, cols, dim=3)]


def distillation(f: torch.Tensor, f_teacher: torch.Tensor) -> torch.Tensor:
    """ROAD's target guided distillation: 1/2 mean over positions of ||f_i - f_teacher_i||_2 (over channels)."""
    return 0.5 * (f.float() - f_teacher.float()).norm(dim=1).mean()


class ROAD(Method):
    Config = ROADConfig

    def __init__(self, *, cfg: ROADConfig, segmenter: SegNet, region_classifiers: nn.ModuleList,
                 head_optimizer: OptimizerConfig, max_steps: int):
        super().__init__()
        self.cfg = cfg
        self.segmenter = segmenter
        self.teacher = copy.deepcopy(segmenter).requires_grad_(False).eval()
        self.regions = region_classifiers
        self.head_optimizer = head_optimizer
        self.max_steps = max_steps
        self.register_buffer("teacher_ready", torch.tensor(False))

    @classmethod
    def from_config(cls, cfg, info):
        m = cfg.method
        segmenter = build_segmenter(cfg.backbone, in_channels=info.channels, num_classes=info.num_classes)
        with torch.no_grad():  # the feature width, from a dry run
            was = segmenter.training
            width = segmenter.eval()(torch.zeros(1, info.channels, 64, 64)).features.shape[1]
            segmenter.train(was)
        regions = nn.ModuleList(
            nn.Sequential(nn.Conv2d(width, m.disc_hidden, m.disc_kernel, padding=m.disc_kernel // 2),
                          nn.ReLU(inplace=True), nn.Conv2d(m.disc_hidden, 1, 1))
            for _ in range(m.grid[0] * m.grid[1]))
        return cls(cfg=m, segmenter=segmenter, region_classifiers=regions, head_optimizer=head_optimizer(cfg),
                   max_steps=cfg.trainer.max_steps)

    def train(self, mode: bool = True):
        super().train(mode)
        norm = self.cfg.teacher_norm
        self.teacher.train(mode and norm == TeacherNorm.student)  # the student's dropout and statistics, or eval
        if norm != TeacherNorm.running:
            # batch statistics of the batch it sees; its running statistics neither used nor updated
            for bn in self.teacher.modules():
                if isinstance(bn, nn.modules.batchnorm._BatchNorm):
                    bn.track_running_stats = False
                    bn.train(norm == TeacherNorm.target or mode)
        return self

    @torch.no_grad()
    def teacher_features(self, x_s: torch.Tensor, x_t: torch.Tensor) -> torch.Tensor:
        """F_R(x_t). In ``student`` mode: on the student's batch with the random draws the student's forward
        makes next (the RNG is forked, so the student then draws the same dropout masks)."""
        if self.cfg.teacher_norm != TeacherNorm.student:
            return self.teacher(x_t).features
        with torch.random.fork_rng(devices=[x_t.device] if x_t.device.type == "cuda" else []):
            return forward_pair(self.teacher, x_s, x_t)[1].features

    def param_groups(self):
        return seg_groups(self.segmenter) | {"disc": list(self.regions.parameters())}

    def optimizer_overrides(self):
        return {"head": self.head_optimizer}

    def stages(self, max_steps):
        return warmup_stages(self.cfg.warmup_steps, max_steps)

    def grl_lambda(self, step: int) -> float:
        w = self.cfg.warmup_steps
        q = (step - w) / max(1, self.max_steps - w)
        return 1.0 if self.cfg.grl_gamma == 0 else grl_lambda(q, self.cfg.grl_gamma)

    def region_losses(self, f_s: torch.Tensor, f_t: torch.Tensor, lam: float) -> list[torch.Tensor]:
        """L_m for each region m: its classifier sees only region m of the reversed features."""
        rows, cols = self.cfg.grid
        r_s = split_regions(grad_reverse(f_s, lam), rows, cols)
        r_t = split_regions(grad_reverse(f_t, lam), rows, cols)
        pool = self.cfg.region_output == RegionOutput.region
        score = lambda d, r: d(r).mean((2, 3)) if pool else d(r)  # noqa: E731  [N, 1] or [N, 1, h, w]
        return [
            0.5 * (domain_bce(score(d, a), 0) + domain_bce(score(d, b), 1)) for d, a, b in zip(self.regions, r_s, r_t)
        ]

    def update(self, src: Batch, tgt: Batch, step, opt):
        c = self.cfg
        if step < c.warmup_steps:
            # 1) warm-up stage: the segmenter on labelled source only
            loss_seg = seg_ce(self.segmenter(src.x).logits, src.y)
            opt.step(loss_seg, "seg", "head")
            return {"loss/seg": loss_seg.detach()}
        if not bool(self.teacher_ready):  # 2) once, at the first adapt step (a resume never repeats it)
            self.teacher.load_state_dict(self.segmenter.state_dict())
            self.teacher_ready.fill_(True)
        lam = self.grl_lambda(step)
        f_teacher = self.teacher_features(src.x, tgt.x)  # first: it replays the draws the student makes next
        out_s, out_t = forward_pair(self.segmenter, src.x, tgt.x)
        loss_seg = seg_ce(out_s.logits, src.y)
        loss_dist = distillation(out_t.features, f_teacher)
        losses = self.region_losses(out_s.features, out_t.features, c.spatial_weight * lam)
        weights = c.region_weights or [1.0] * len(losses)
        loss_spatial = sum(w * lv for w, lv in zip(weights, losses))
        # 3) one step: segmenter descends CE + distillation and ascends spatial_weight x the
        # region losses (reversal); the region classifiers descend the region losses at full
        # weight
        opt.step(loss_seg + c.dist_weight * loss_dist + loss_spatial, "seg", "head", "disc")
        return {"loss/seg": loss_seg.detach(), "loss/dist": loss_dist.detach(),
                "loss/spatial": loss_spatial.detach(), "sched/grl_lambda": torch.tensor(lam)}

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.segmenter(x)
        return out.features, out.logits

