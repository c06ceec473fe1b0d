"""DeepLab-v2 (Chen et al., TPAMI 2017) as used by AdaptSegNet (Tsai et al., CVPR 2018).

Body: torchvision ResNet-50/101 with the strides of layer3 and layer4 replaced by dilation (output
stride 8: logits are ``ceil(H/8) x ceil(W/8)``) and every BatchNorm frozen at its ImageNet statistics
(``FrozenBatchNorm2d``: scale, shift, mean and variance are buffers, never trained, identical in train
and eval mode; AdaptSegNet likewise sets ``requires_grad=False`` on BN and keeps the batch size at 1).
Head: the ASPP classifier (DeepLab-v2's ``Classifier_Module``) on layer4; the multi-level variant adds
the same classifier on layer3 (``aux``). ``features`` is layer4's output (2048 channels).

Choices, where this differs from AdaptSegNet's Caffe-converted ResNet-101:
- torchvision's bottleneck (stride in the 3x3 conv, "ResNet v1.5") rather than Caffe's (stride in the
  first 1x1 conv), so that torchvision's ImageNet files load; torchvision also gives the first block of
  a dilated stage the previous stage's dilation (1 in layer3, 2 in layer4), Caffe's gives it the new one.
- ASPP weights ~ N(0, 0.01), biases 0 (the DeepLab-v2 prototxt's fillers).
- ``in_channels != 3``: conv1 is replaced by a new, randomly initialised conv (He init); it stays in
  ``pretrained_parameters`` (it is part of the body, trained at the body's lr), and the file's 3-channel
  conv1 weights are not used.
- ImageNet weights only from a local torchvision file (``cfg.weights``); nothing is downloaded.
"""
from __future__ import annotations

import torch
from torch import nn

from uda.errors import ConfigError
from uda.nets.resnet import load_local_weights
from uda.nets.seg_base import SegNet, SegOut
from uda.schema import DeepLabV2Config

DEPTHS = (50, 101)


class ASPP(nn.Module):
    """DeepLab-v2's atrous spatial pyramid pooling classifier (``Classifier_Module`` in AdaptSegNet):
    parallel 3x3 convs, dilation = padding = r for r in ``rates``, each straight from the input features
    to class scores, and the branch scores summed: ``logits = sum_r conv_r(x)``. [N, C, h, w] -> [N, K, h, w]."""

    def __init__(self, in_channels: int, num_classes: int, rates: list[int]):
        super().__init__()
        self.branches = nn.ModuleList(nn.Conv2d(in_channels, num_classes, 3, padding=r, dilation=r) for r in rates)
        for conv in self.branches:
            nn.init.normal_(conv.weight, 0.0, 0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branches[0](x)
        for conv in self.branches[1:]:
            out = out + conv(x)
        return out


class DeepLabV2(SegNet):
    """Dilated, BN-frozen ResNet body (torchvision names: ``body.conv1``, ``body.layer4``...) + ASPP heads."""

    def __init__(self, body: nn.Module, *, num_classes: int, rates: list[int], aux: bool):
        super().__init__()
        self.body = body
        self.classifier = ASPP(2048, num_classes, rates)  # on layer4
        self.aux_classifier = ASPP(1024, num_classes, rates) if aux else None  # on layer3 (multi-level)

    def forward(self, x: torch.Tensor) -> SegOut:
        b = self.body
        x = b.maxpool(b.relu(b.bn1(b.conv1(x))))  # stride 4
        x = b.layer2(b.layer1(x))  # stride 8
        f3 = b.layer3(x)  # stride 8 (dilation 2), 1024 ch
        f4 = b.layer4(f3)  # stride 8 (dilation 4), 2048 ch
        aux = self.aux_classifier(f3) if self.aux_classifier is not None else None
        return SegOut(f4, self.classifier(f4), aux)

    def pretrained_parameters(self) -> list[nn.Parameter]:
        return list(self.body.parameters())  # convs only: frozen BN holds buffers, not parameters

    def new_parameters(self) -> list[nn.Parameter]:
        heads = [self.classifier] + ([self.aux_classifier] if self.aux_classifier is not None else [])
        return [p for h in heads for p in h.parameters()]

    def skip_modules(self) -> list[nn.Module]:
        return [self.body.layer2, self.body.layer3]  # strides 8 and 8 (dilated), 512 and 1024 channels


def deeplab_v2(cfg: DeepLabV2Config, *, in_channels: int, num_classes: int, aux: bool) -> DeepLabV2:
    from torchvision import models
    from torchvision.ops.misc import FrozenBatchNorm2d

    if cfg.depth not in DEPTHS:
        raise ConfigError(f"backbone.depth for deeplabv2 must be one of {DEPTHS}, got {cfg.depth}")
    rates = list(cfg.aspp_rates)
    if not rates or any(not isinstance(r, int) or r < 1 for r in rates):
        raise ConfigError(f"backbone.aspp_rates must be a non-empty list of positive integers, got {rates}")
    body = getattr(models, f"resnet{cfg.depth}")(weights=None, replace_stride_with_dilation=[False, True, True],
                                                 norm_layer=FrozenBatchNorm2d)
    if cfg.weights:
        hint = f"torchvision's resnet{cfg.depth}; check backbone.depth"
        load_local_weights(body, cfg.weights, ignore=("fc.",), hint=hint)
    del body.avgpool, body.fc
    if in_channels != 3:  # a new stem conv; the file's RGB conv1 is not used
        body.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(body.conv1.weight, mode="fan_out", nonlinearity="relu")
    return DeepLabV2(body, num_classes=num_classes, rates=rates, aux=aux)
