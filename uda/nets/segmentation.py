"""The segmenters (``build_segmenter``: digits_seg's small net, DeepLab-v2, FCN-8s), the segmentation
methods' discriminators and LSD's generator. The contract they share is in ``uda.nets.seg_base``."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from uda.errors import ConfigError
from uda.nets.deeplab import deeplab_v2
from uda.nets.fcn import fcn8s
from uda.nets.seg_base import SegNet, SegOut, forward_pair, upsample
from uda.schema import BackboneConfig, DAFormerNetConfig, DeepLabV2Config, FCN8sConfig, SegSmallConfig

__all__ = ["SegNet", "SegOut", "build_segmenter", "forward_pair", "upsample", "FeatureDecoder", "OutputDiscriminator",
           "PixelDiscriminator", "palette"]


def _block(c_in: int, c_out: int, dilation: int = 1) -> nn.Sequential:
    conv = lambda a, b: nn.Conv2d(a, b, 3, padding=dilation, dilation=dilation, bias=False)  # noqa: E731
    return nn.Sequential(conv(c_in, c_out), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
                         conv(c_out, c_out), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class SmallSegNet(SegNet):
    """digits_seg's segmenter, a miniature DeepLab: blocks of two 3x3 convs + BN + ReLU with a 2x2
    max-pool before each block but the first and the last; the last block keeps the resolution and
    uses dilation 2 instead (4 blocks: output stride 4, receptive field 61 px, enough to see a whole
    28 px digit). A 1x1 classifier on the last block; the auxiliary one on the block before it."""

    def __init__(self, *, in_channels: int, num_classes: int, channels: list[int], aux: bool):
        super().__init__()
        blocks, c, last = [], in_channels, len(channels) - 1
        for i, w in enumerate(channels):
            pool = nn.MaxPool2d(2) if 0 < i < last else nn.Identity()
            blocks.append(nn.Sequential(pool, _block(c, w, dilation=2 if i == last and i else 1)))
            c = w
        self.blocks = nn.ModuleList(blocks)
        self.classifier = nn.Conv2d(c, num_classes, 1)
        self.aux_classifier = nn.Conv2d(channels[-2], num_classes, 1) if aux and len(channels) > 1 else None

    def forward(self, x: torch.Tensor) -> SegOut:
        h_prev = None
        for block in self.blocks:
            h_prev, x = x, block(x)
        aux = self.aux_classifier(h_prev) if self.aux_classifier is not None else None
        return SegOut(x, self.classifier(x), aux)

    def pretrained_parameters(self) -> list[nn.Parameter]:
        return list(self.blocks.parameters())

    def new_parameters(self) -> list[nn.Parameter]:
        heads = [self.classifier] + ([self.aux_classifier] if self.aux_classifier is not None else [])
        return [p for h in heads for p in h.parameters()]

    def skip_modules(self) -> list[nn.Module]:
        return list(self.blocks[-3:-1])  # the two blocks before the last (digits_seg: strides 2 and 4)


SEGMENTERS = ("seg_small", "deeplabv2", "fcn8s", "daformer")


def build_segmenter(cfg: BackboneConfig, *, in_channels: int, num_classes: int, aux: bool = False) -> SegNet:
    if isinstance(cfg, SegSmallConfig):
        return SmallSegNet(in_channels=in_channels, num_classes=num_classes, channels=list(cfg.channels), aux=aux)
    if isinstance(cfg, DeepLabV2Config):
        return deeplab_v2(cfg, in_channels=in_channels, num_classes=num_classes, aux=aux)
    if isinstance(cfg, DAFormerNetConfig):
        if aux:
            raise ConfigError("backbone=daformer has no auxiliary (multi-level) head; use backbone=deeplabv2 "
                              "or a single-level method setting")
        from uda.nets.daformer import daformer_net

        return daformer_net(cfg, in_channels=in_channels, num_classes=num_classes)
    if isinstance(cfg, FCN8sConfig):
        if aux:
            raise ConfigError("backbone=fcn8s has no auxiliary (multi-level) head; use backbone=deeplabv2 "
                              "or a single-level method setting")
        return fcn8s(cfg, in_channels=in_channels, num_classes=num_classes)
    raise ConfigError(f"backbone {cfg.name!r} is not a segmentation network; valid for segmentation pairs: "
                      f"{', '.join(SEGMENTERS)}")


def palette(num_classes: int) -> list[tuple[int, int, int]]:
    """Display colours by class index: the official Cityscapes colours of train ids 0..18
    (``cityscapesscripts``), so GTA5/SYNTHIA/Cityscapes predictions look as in the papers."""
    from cityscapesscripts.helpers.labels import labels

    colours = [lab.color for lab in sorted(labels, key=lambda lab: lab.trainId) if 0 <= lab.trainId < 255]
    if num_classes > len(colours):
        raise ConfigError(f"no display palette for {num_classes} classes (at most {len(colours)})")
    return colours[:num_classes]


class OutputDiscriminator(nn.Sequential):
    """AdaptSegNet's fully convolutional discriminator on softmax outputs (Tsai et al. 2018, Sec. 3.3):
    five 4x4 convolutions with stride 2 and padding 1, widths ndf, 2ndf, 4ndf, 8ndf, 1, each but the
    last followed by LeakyReLU(0.2). Input [N, K, H, W] probabilities; output [N, 1, H/32, W/32] scores."""

    def __init__(self, num_classes: int, ndf: int = 64):
        widths = [num_classes, ndf, 2 * ndf, 4 * ndf, 8 * ndf]
        layers: list[nn.Module] = []
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True)]
        layers.append(nn.Conv2d(widths[-1], 1, 4, stride=2, padding=1))
        super().__init__(*layers)


class FeatureDecoder(nn.Module):
    """LSD's generator G: the segmenter's embedding [N, C, h, w] back to an image [N, ch, H, W].

    ``n_up`` x (2x bilinear upsampling, 3x3 conv, BN, ReLU, dropout: the noise source, as in the
    paper), halving the width from ``ngf * 2^(n_up-1)``; a 3x3 conv to image channels, then resized to
    the input's exact size. Linear output: images live in the pair's normalised space.
    ``skips``: (channels, level) of intermediate feature maps it also reads, each resized (bilinear) to and
    concatenated with its level's input: level 0 the embedding, level i the output of the i-th upsampling."""

    def __init__(self, in_channels: int, out_channels: int, *, ngf: int, n_up: int, dropout: float,
                 skips: Sequence[tuple[int, int]] = ()):
        super().__init__()
        self.levels = [level for _, level in skips]
        if any(not 0 <= lv <= n_up for lv in self.levels):
            raise ValueError(f"skip levels must be in [0, {n_up}], got {self.levels}")
        extra = [sum(ch for ch, lv in skips if lv == i) for i in range(n_up + 1)]
        layers: list[nn.Module] = []
        c = in_channels + extra[0]
        for i in range(n_up):
            w = ngf * 2 ** (n_up - 1 - i)
            layers += [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                       nn.Conv2d(c + extra[i + 1], w, 3, padding=1, bias=False), nn.BatchNorm2d(w),
                       nn.ReLU(inplace=True), nn.Dropout2d(dropout)]
            c = w
        layers.append(nn.Conv2d(c, out_channels, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def _join(self, h: torch.Tensor, skips: Sequence[torch.Tensor], level: int) -> torch.Tensor:
        extra = [upsample(s, tuple(h.shape[-2:])) for s, lv in zip(skips, self.levels) if lv == level]
        return torch.cat([h, *extra], 1) if extra else h

    def forward(self, f: torch.Tensor, size: tuple[int, int], skips: Sequence[torch.Tensor] = ()) -> torch.Tensor:
        if len(skips) != len(self.levels):
            raise ValueError(f"this decoder reads {len(self.levels)} skip feature maps, got {len(skips)}")
        h, level = self._join(f, skips, 0), 0
        for layer in self.net:
            h = layer(h)
            if isinstance(layer, nn.Upsample):
                level += 1
                h = self._join(h, skips, level)
        return upsample(h, size)


class PixelDiscriminator(nn.Module):
    """LSD's D: fully convolutional on images; per position a 4-way domain head (source-real,
    source-fake, target-real, target-fake) and an auxiliary K-way segmentation head (ACGAN style).
    Two stride-2 4x4 convs and a 3x3 conv (LeakyReLU 0.2; ``norm``: BatchNorm or InstanceNorm after the
    last two), output stride 4; heads are 1x1 convs."""

    def __init__(self, in_channels: int, num_classes: int, ndf: int = 64, norm: str = "batch"):
        super().__init__()
        # batch: BatchNorm; instance: affine InstanceNorm (per image: the batch cannot inform D)
        Norm = {"batch": nn.BatchNorm2d, "instance": lambda c: nn.InstanceNorm2d(c, affine=True)}[norm]  # noqa: N806
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, 2 * ndf, 4, stride=2, padding=1), Norm(2 * ndf), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(2 * ndf, 4 * ndf, 3, padding=1), Norm(4 * ndf), nn.LeakyReLU(0.2, inplace=True))
        self.domain = nn.Conv2d(4 * ndf, 4, 1)
        self.seg = nn.Conv2d(4 * ndf, num_classes, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return self.domain(h), self.seg(h)
