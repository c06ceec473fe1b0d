"""FCN-8s on VGG16 (Long, Shelhamer & Darrell, CVPR 2015), the segmenter of ROAD (Chen et al., CVPR 2018)
and LSD (Sankaranarayanan et al., CVPR 2018) on GTA5 -> Cityscapes.

VGG16's conv layers (torchvision's ``vgg16().features``, keys ``features.N``), then fc6 as a 7x7 conv
and fc7 as a 1x1 conv (4096 channels, ReLU + dropout 0.5), which *are* torchvision's ``classifier.0`` /
``classifier.3`` Linear layers viewed as convolutions (same storage: ImageNet weights reach them by the
reshape ``[4096, 512*7*7] -> [4096, 512, 7, 7]``). Class scores from fc7 (``score_fr``), pool4
(``score_pool4``) and pool3 (``score_pool3``) are fused coarse to fine: ``s = up(score_fr) + score_pool4;
logits = up(s) + score_pool3``. ``features`` is fc7's output after its ReLU, before the dropout that score_fr
reads through (the features ROAD distils and LSD decodes carry no dropout noise of their own).

Choices:
- Alignment instead of pad 100 and crops: torchvision's VGG pads every 3x3 conv by 1 and fc6 is padded
  by 3, so every map keeps its top-left corner on the input's; the original's conv1_1 pad 100 and the
  crop offsets are not needed. Inputs must be at least 32x32 (pool5 >= 1x1).
- "FCN-8s at-once" upsampling (Shelhamer et al., TPAMI 2017): the 2x, 2x steps are bilinear
  interpolations to the exact pool4 / pool3 sizes (so odd sizes need no crop), not learnable
  transposed convs; the reference Caffe nets keep those deconvolutions frozen at bilinear (lr_mult 0)
  anyway. The at-once net's skip scaling (pool4 x 0.01, pool3 x 1e-4) is not applied: it compensates
  Caffe's 0-255 inputs, while torchvision's VGG reads normalised ones.
- Logits are returned at 1/8 resolution (pool3's size, ``floor(H/8) x floor(W/8)``), not at input size;
  methods upsample them to the label size. The final 8x upsampling is theirs.
- Score layers are zero-initialised, as in the paper ("we zero-initialize the class scoring layer").
- ``in_channels != 3``: conv1_1 is replaced by a new conv (He init), kept in ``pretrained_parameters``;
  the file's RGB conv1_1 weight is not used.
- ImageNet weights only from a local torchvision ``vgg16`` file (``cfg.weights``); its 1000-way
  ``classifier.6`` is ignored. Nothing is downloaded.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from uda.nets.resnet import load_local_weights
from uda.nets.seg_base import SegNet, SegOut, upsample
from uda.schema import FCN8sConfig


def _conv_from_linear(linear: nn.Linear, in_channels: int, kernel: int, padding: int) -> nn.Conv2d:
    """A conv whose parameters are ``linear``'s, viewed as [out, in_channels, kernel, kernel] (shared storage)."""
    conv = nn.Conv2d(in_channels, linear.out_features, kernel, padding=padding, device="meta")
    conv.weight = nn.Parameter(linear.weight.detach().view(linear.out_features, in_channels, kernel, kernel))
    conv.bias = nn.Parameter(linear.bias.detach())
    return conv


class FCN8s(SegNet):
    def __init__(self, vgg: nn.Module, *, in_channels: int, num_classes: int):
        super().__init__()
        self.features = vgg.features  # conv1_1 ... pool5
        pools = [i for i, m in enumerate(self.features) if isinstance(m, nn.MaxPool2d)]
        self.pool3, self.pool4 = pools[2], pools[3]  # indices of pool3 (256 ch, 1/8) and pool4 (512 ch, 1/16)
        if in_channels != 3:  # a new conv1_1; the file's RGB one is not used
            self.features[0] = nn.Conv2d(in_channels, 64, 3, padding=1)
            nn.init.kaiming_normal_(self.features[0].weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(self.features[0].bias)
        self.fc6 = _conv_from_linear(vgg.classifier[0], 512, 7, padding=3)
        self.fc7 = _conv_from_linear(vgg.classifier[3], 4096, 1, padding=0)
        self.drop = nn.Dropout(0.5)
        self.score_fr = nn.Conv2d(4096, num_classes, 1)
        self.score_pool4 = nn.Conv2d(512, num_classes, 1)
        self.score_pool3 = nn.Conv2d(256, num_classes, 1)
        for conv in (self.score_fr, self.score_pool4, self.score_pool3):
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> SegOut:
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i == self.pool3:
                p3 = x
            elif i == self.pool4:
                p4 = x
        h = self.drop(F.relu(self.fc6(x), inplace=True))  # [N, 4096, H/32, W/32]
        h = F.relu(self.fc7(h), inplace=True)  # the features: before drop7
        s = upsample(self.score_fr(self.drop(h)), p4.shape[-2:]) + self.score_pool4(p4)  # fuse at 1/16
        logits = upsample(s, p3.shape[-2:]) + self.score_pool3(p3)  # fuse at 1/8
        return SegOut(h, logits, None)

    def pretrained_parameters(self) -> list[nn.Parameter]:
        return [*self.features.parameters(), *self.fc6.parameters(), *self.fc7.parameters()]

    def new_parameters(self) -> list[nn.Parameter]:
        return [p for m in (self.score_fr, self.score_pool4, self.score_pool3) for p in m.parameters()]

    def skip_modules(self) -> list[nn.Module]:
        return [self.features[self.pool3], self.features[self.pool4]]


def fcn8s(cfg: FCN8sConfig, *, in_channels: int, num_classes: int) -> FCN8s:
    from torchvision import models

    vgg = models.vgg16(weights=None)
    if cfg.weights:
        load_local_weights(vgg, cfg.weights, ignore=("classifier.6.",), hint="torchvision's vgg16 (no batch norm)")
    return FCN8s(vgg, in_channels=in_channels, num_classes=num_classes)
