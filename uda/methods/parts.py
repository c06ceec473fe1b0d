"""What several methods share, as plain functions (never base-class hooks): losses with their batch
statistics, the segmenters' parameter groups and head optimizer, the warm-up stage plan, and DACS's colour
jitter and blur (DACS, MIC)."""
from __future__ import annotations

import copy
import dataclasses
import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torch import nn

from uda.losses import gan_loss
from uda.methods.base import Stage
from uda.nets import build_backbone
from uda.nets.segmentation import SegOut, upsample

if TYPE_CHECKING:
    from uda.data.pairs import PairInfo
    from uda.schema import OptimizerConfig, TrainConfig

SOURCE, TARGET = 0, 1  # the domain labels of every domain discriminator


def source_ce(logits_s: torch.Tensor, y_s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(CE(logits_s, y_s) in fp32, the batch's accuracy): the task loss on labelled source and what
    methods log as ``acc/source_batch``. ``logits_s`` [N, K], ``y_s`` [N]."""
    loss = F.cross_entropy(logits_s.float(), y_s)
    return loss, (logits_s.argmax(1) == y_s).float().mean().detach()


def domain_ce(logits: torch.Tensor, domain: int) -> torch.Tensor:
    """Two-way domain cross-entropy of a discriminator's logits [N, 2] against one label for the whole
    batch (``SOURCE`` or ``TARGET``), mean over N: ADDA's and CyCADA's feature discriminator, and their
    inverted-label GAN loss (target features labelled ``SOURCE``)."""
    label = torch.full((logits.shape[0],), domain, dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits.float(), label)


def domain_accuracy(d_s: torch.Tensor, d_t: torch.Tensor) -> torch.Tensor:
    """Mean of the two-way discriminator's accuracy on a source batch and on a target batch (detached)."""
    return (0.5 * ((d_s.argmax(1) == SOURCE).float().mean() + (d_t.argmax(1) == TARGET).float().mean())).detach()


def output_levels(out: SegOut, size: tuple[int, int], multi_level: bool) -> list[torch.Tensor]:
    """[main, aux] class scores of a segmenter's output (aux only when ``multi_level``), upsampled to ``size``
    (AdaptSegNet, ADVENT)."""
    return [upsample(lv, size) for lv in [out.logits] + ([out.aux] if multi_level else [])]


def output_disc_loss(discs: list[nn.Module], maps_s: list[torch.Tensor], maps_t: list[torch.Tensor],
                     kind: str = "bce") -> torch.Tensor:
    """The output-space discriminators' loss, summed over levels: 1/2 L(D_i(m_s), source) + 1/2 L(D_i(m_t),
    target) on detached maps (AdaptSegNet's softmax outputs, ADVENT's self-information maps)."""
    loss = torch.zeros((), device=maps_s[0].device)
    for d, m_s, m_t in zip(discs, maps_s, maps_t):
        loss = loss + 0.5 * (gan_loss(d(m_s.detach()), SOURCE, kind) + gan_loss(d(m_t.detach()), TARGET, kind))
    return loss


def pixel_accuracy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The share of labelled pixels (y != 255) whose argmax class is right, detached: ``acc/source_pixels``."""
    pixels = y != 255
    return (((logits.argmax(1) == y) & pixels).sum() / pixels.sum().clamp(min=1)).detach()


def seg_groups(segmenter: nn.Module) -> dict[str, list[nn.Parameter]]:
    """A segmenter's parameter groups: "seg" (the body) and "head" (the new classifier heads)."""
    return {"seg": segmenter.pretrained_parameters(), "head": segmenter.new_parameters()}


def feature_groups(features: nn.Module) -> dict[str, list[nn.Parameter]]:
    """A classifier's feature extractor as parameter groups: "feat" (its pretrained body) and, where layers
    are new on that body (ResNet's bottleneck, ``new_parameters``), "neck"."""
    if not hasattr(features, "new_parameters"):
        return {"feat": list(features.parameters())}
    new = features.new_parameters()
    return {"feat": features.pretrained_parameters()} | ({"neck": new} if new else {})


def head_groups(features: nn.Module, **heads: nn.Module) -> dict[str, list[nn.Parameter]]:
    """A feature extractor's groups (``feature_groups``) plus one group per head, by keyword:
    ``head_groups(f, cls=c, disc=d)`` (DANN, CDAN), ``head_groups(f, cls=c1, cls2=c2)`` (MCD)."""
    return feature_groups(features) | {name: list(head.parameters()) for name, head in heads.items()}


def new_layer_overrides(groups: tuple[str, ...], head: OptimizerConfig) -> dict[str, OptimizerConfig]:
    """Every group but the pretrained body "feat" (a bottleneck "neck", classifiers, discriminators,
    adversarial heads) at ``head`` (backbone.head_lr_mult x the lr; 1x for the digit nets)."""
    return {g: head for g in groups if g != "feat"}


def classifier_nets(cfg: TrainConfig, info: PairInfo) -> tuple[nn.Module, nn.Module, int]:
    """(features, classifier, feature width) of ``cfg.backbone`` for the pair ``info``: how every method
    builds its backbone (``uda.nets.build_backbone`` with the pair's channels, size and classes)."""
    return build_backbone(cfg.backbone, in_channels=info.channels, image_size=info.image_size,
                          num_classes=info.num_classes)


def fresh_copy(module: nn.Module) -> nn.Module:
    """A module of ``module``'s architecture with its own initialisation (MDD's adversarial head f',
    MCD's second classifier): a deep copy whose layers are reset from the global RNG."""
    twin = copy.deepcopy(module)
    for layer in twin.modules():
        if hasattr(layer, "reset_parameters"):
            layer.reset_parameters()
    return twin


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, alpha: float) -> None:
    """teacher <- alpha teacher + (1 - alpha) student, parameter by parameter; buffers untouched (the teacher's
    batch statistics are its own). Mean teacher (French et al. 2018), DACS (Tranheden et al. 2021)."""
    for p_t, p_s in zip(teacher.parameters(), student.parameters()):
        p_t.mul_(alpha).add_(p_s.detach(), alpha=1 - alpha)


def no_dropout(net: nn.Module) -> None:
    """An EMA teacher as the official DAFormer / MIC code runs it: train mode (batch statistics) with dropout
    and drop-path off."""
    for m in net.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd) or type(m).__name__ == "DropPath":
            m.eval()


def head_optimizer(cfg: TrainConfig) -> OptimizerConfig:
    """The optimizer of layers new on a pretrained body (heads, a bottleneck, domain classifiers): the run's,
    at ``backbone.head_lr_mult`` x its learning rate (DeepLab: 10; Office-31's ResNet recipe: 10)."""
    return dataclasses.replace(cfg.optimizer, lr=cfg.optimizer.lr * cfg.backbone.head_lr_mult)


def warmup_stages(warmup_steps: int, max_steps: int) -> list[Stage]:
    """A ``warmup`` stage of ``warmup_steps`` (none when 0), then ``adapt`` for the rest (ROAD, LSD)."""
    return ([Stage("warmup", warmup_steps)] if warmup_steps else []) + [Stage("adapt", max_steps - warmup_steps)]


def blur_kernel(size: int) -> int:
    """The official DACS kernel width for an image side of ``size`` pixels (odd)."""
    c = math.ceil(0.1 * size)
    return int(math.floor(c - 0.5 + c % 2))


def strong_augment(x: torch.Tensor, gen: torch.Generator, *, mean: torch.Tensor, std: torch.Tensor, jitter: float,
                   jitter_p: float, blur_p: float, blur_sigma: list[float], per_batch: bool = False) -> torch.Tensor:
    """DACS's colour jitter and Gaussian blur of normalised images [N, C, H, W], per image, in pixel space
    (x std + mean, clamped to [0, 1]); draws from ``gen``. ``per_batch``: whether to jitter and whether to blur
    is decided once for the batch (DAFormer's code draws them once per iteration), the factors per image."""
    raw = (x.float() * std + mean).clamp(0, 1)
    out = []
    kernel = [blur_kernel(x.shape[-1]), blur_kernel(x.shape[-2])]
    decided = torch.rand(2, generator=gen).tolist() if per_batch else None
    for img in raw:
        u = torch.rand(6, generator=gen).tolist()
        if decided is not None:
            u[0], u[5] = decided
        if u[0] < jitter_p:
            f = [1 + jitter * (2 * v - 1) for v in u[1:4]]
            img = TF.adjust_brightness(img, max(f[0], 0.0))
            img = TF.adjust_contrast(img, max(f[1], 0.0))
            if img.shape[0] == 3:  # saturation and hue need colour
                img = TF.adjust_saturation(img, max(f[2], 0.0))
                img = TF.adjust_hue(img, min(jitter, 0.5) * (2 * u[4] - 1))
        if u[5] < blur_p:
            s = blur_sigma[0] + (blur_sigma[1] - blur_sigma[0]) * torch.rand(1, generator=gen).item()
            img = TF.gaussian_blur(img, kernel_size=kernel, sigma=[s, s])
        out.append(img)
    return ((torch.stack(out) - mean) / std).to(x.dtype)


def crop_to(size: tuple[int, int], gen: torch.Generator, *maps: torch.Tensor) -> list[torch.Tensor]:
    """``maps`` (images [N, C, H, W] and label / weight maps [N, H, W] of one batch) cropped to ``size`` at one
    window drawn from ``gen``; unchanged, and nothing drawn, when they already are that size. ClassMix pastes
    source pixels onto target images, so the two must agree in size (the official code crops both domains to
    512 x 512; here GTA5 is 720 x 1280 and Cityscapes 512 x 1024)."""
    h, w = maps[0].shape[-2:]
    if (h, w) == tuple(size):
        return list(maps)
    top = int(torch.randint(h - size[0] + 1, (1,), generator=gen))
    left = int(torch.randint(w - size[1] + 1, (1,), generator=gen))
    return [m[..., top:top + size[0], left:left + size[1]] for m in maps]


def common_size(a: torch.Tensor, b: torch.Tensor) -> tuple[int, int]:
    """The largest size both image batches [N, C, H, W] can be cropped to."""
    return min(a.shape[-2], b.shape[-2]), min(a.shape[-1], b.shape[-1])
