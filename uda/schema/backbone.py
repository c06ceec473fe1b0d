"""``backbone``: the network a method trains (``configs/backbone/``); each schema says which task it is for."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from omegaconf import MISSING

from uda.errors import ConfigError
from uda.schema.base import CLASSIFICATION, SEGMENTATION, nonneg, positive, unit_interval, widths


@dataclass
class BackboneConfig:
    name: str = MISSING
    TASK: ClassVar[str] = CLASSIFICATION
    # learning rate of the layers new on a pretrained body (classifier heads, bottleneck, the
    # methods' domain heads) relative to the body's; 1 = one learning rate (nets trained from
    # scratch)
    head_lr_mult: float = 1.0

    def check(self) -> None:
        """Checks the schema cannot express (ranges, files); ConfigError naming the key."""


def _check_weights(weights: str) -> None:
    if weights and not Path(weights).expanduser().is_file():
        raise ConfigError(f"backbone.weights: no file {weights} (a local ImageNet state_dict; nothing is downloaded)")


@dataclass
class DANNDigitsConfig(BackboneConfig):
    """DANN's MNIST net: conv5-32, pool2, conv5-48, pool2 | FC100, FC100, FC10."""

    name: str = "dann_mnist"
    conv_channels: list[int] = field(default_factory=lambda: [32, 48])
    cls_hidden: list[int] = field(default_factory=lambda: [100, 100])

    def check(self) -> None:
        widths(self.conv_channels, "backbone.conv_channels", 2)
        widths(self.cls_hidden, "backbone.cls_hidden")


@dataclass
class LeNetConfig(BackboneConfig):
    """ADDA's LeNet: conv5-20, pool2, conv5-50, pool2, FC500 (ReLU) | FC10, as the official code (no dropout)."""

    name: str = "lenet"
    conv_channels: list[int] = field(default_factory=lambda: [20, 50])
    feat_dim: int = 500
    dropout: float = 0.0  # > 0: Dropout2d after conv2 and dropout before FC10 (not the paper's net)

    def check(self) -> None:
        widths(self.conv_channels, "backbone.conv_channels", 2)
        positive(self.feat_dim, "backbone.feat_dim")
        unit_interval(self.dropout, "backbone.dropout")


@dataclass
class ResNetConfig(BackboneConfig):
    """torchvision ResNet (He et al. 2016) to global pooling | bottleneck FC + ReLU + dropout | FC.

    The domain discriminators of DANN-style methods sit on the bottleneck (Ganin et al.'s Office setup).
    """

    name: str = "resnet50"
    depth: int = 50  # 18 | 34 | 50 | 101
    # a local file with ImageNet weights (a torchvision state_dict, e.g.
    # resnet50-11ad3fa6.pth); "" = random initialisation. Nothing is ever downloaded.
    weights: str = ""
    bottleneck: int = 256  # 0 = the classifier reads the pooled features directly
    dropout: float = 0.5

    def check(self) -> None:
        if self.depth not in (18, 34, 50, 101):
            raise ConfigError(f"backbone.depth must be 18, 34, 50 or 101, got {self.depth}")
        nonneg(self.bottleneck, "backbone.bottleneck")
        unit_interval(self.dropout, "backbone.dropout")
        _check_weights(self.weights)


@dataclass
class TimmConfig(BackboneConfig):
    """Any timm model (Wightman, pytorch-image-models) to its pooled features | bottleneck FC + ReLU + dropout |
    FC: the ResNet backbone's head on another body (ViTs, ConvNeXts, ...). Weights only from a local file."""

    name: str = "timm"
    model: str = MISSING  # a timm model name, e.g. vit_small_patch16_224, convnext_tiny (timm.list_models())
    # a local file with the model's weights (a timm / torchvision-style state_dict or
    # .safetensors, its classifier dropped); "" = random initialisation. Nothing is ever
    # downloaded.
    weights: str = ""
    bottleneck: int = 256  # 0 = the classifier reads the pooled features directly
    dropout: float = 0.5

    def check(self) -> None:
        if not self.model:
            raise ConfigError("backbone.model is required for backbone=timm: a timm model name, e.g. "
                              "backbone.model=vit_small_patch16_224 (timm.list_models() lists them)")
        nonneg(self.bottleneck, "backbone.bottleneck")
        unit_interval(self.dropout, "backbone.dropout")
        _check_weights(self.weights)


@dataclass
class SegSmallConfig(BackboneConfig):
    """A small fully convolutional segmenter for digits_seg (a miniature DeepLab): conv blocks (two 3x3
    convs + BN + ReLU), 2x2 max-pool before each block but the first and the last, the last block dilated;
    1x1 classifiers on the last block and (``aux``) on the block before it."""

    name: str = "seg_small"
    TASK: ClassVar[str] = SEGMENTATION
    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 64])

    def check(self) -> None:
        if len(self.channels) < 2 or any(c <= 0 for c in self.channels):
            raise ConfigError(f"backbone.channels needs at least two positive widths, got {list(self.channels)}")


@dataclass
class DeepLabV2Config(BackboneConfig):
    """DeepLab-v2 (Chen et al. 2017): dilated ResNet (output stride 8, frozen BatchNorm) + ASPP with
    four 3x3 branches (dilations ``aspp_rates``) whose class scores are summed. Multi-level methods add
    the same ASPP classifier on layer3."""

    name: str = "deeplabv2"
    TASK: ClassVar[str] = SEGMENTATION
    depth: int = 101  # 50 | 101
    # a local file of ImageNet weights (torchvision's resnet state_dict); "" = random init
    weights: str = ""
    aspp_rates: list[int] = field(default_factory=lambda: [6, 12, 18, 24])
    head_lr_mult: float = 10.0  # the ASPP heads train with 10x the body's learning rate (DeepLab, AdaptSegNet)

    def check(self) -> None:
        if self.depth not in (50, 101):
            raise ConfigError(f"backbone.depth must be 50 or 101 for deeplabv2, got {self.depth}")


@dataclass
class FCN8sConfig(BackboneConfig):
    """FCN-8s (Long et al. 2015) on VGG16: conv fc6/fc7, score layers at pool3 / pool4 / fc7, fused."""

    name: str = "fcn8s"
    TASK: ClassVar[str] = SEGMENTATION
    # a local file of ImageNet weights (torchvision's vgg16 state_dict); "" = random init
    weights: str = ""

    def check(self) -> None:
        _check_weights(self.weights)


MIT_TWINS = ("pvt_v2_b0", "pvt_v2_b1", "pvt_v2_b2", "pvt_v2_b3", "pvt_v2_b4", "pvt_v2_b5")


@dataclass
class DAFormerNetConfig(BackboneConfig):
    """DAFormer's network (Hoyer et al. 2022): a Mix Transformer encoder (MiT-B5; timm's ``pvt_v2_b5`` is the same
    network and loads SegFormer's ``mit_b5.pth``) and the context-aware fusion decoder (each stage embedded to
    ``embed_dim``, resized to 1/4, concatenated; a depthwise-separable ASPP without image pooling; 3x3 conv)."""

    name: str = "daformer"
    TASK: ClassVar[str] = SEGMENTATION
    encoder: str = "pvt_v2_b5"  # MiT-B5; pvt_v2_b0 .. b4 are MiT-B0 .. B4 with MiT's MLP ratio 4
    # a local file of the encoder's ImageNet weights: SegFormer's mit_b5.pth (as DAFormer's pretrained/) or a
    # timm pvt_v2 state_dict; "" = random init
    weights: str = ""
    embed_dim: int = 256  # the decoder's width (DAFormer: 256)
    dilations: list[int] = field(default_factory=lambda: [1, 6, 12, 18])
    dropout: float = 0.1  # before the classifier
    drop_path: float = 0.1  # the encoder's stochastic depth, rising linearly over its blocks (mit_b5)
    head_lr_mult: float = 10.0  # the decoder at 10x the encoder's rate (DAFormer's "head" lr_mult)

    def check(self) -> None:
        if self.encoder not in MIT_TWINS:
            raise ConfigError(f"backbone.encoder={self.encoder!r} is not a Mix Transformer; valid: "
                              f"{', '.join(MIT_TWINS)} (MiT-B0 .. B5)")
        positive(self.embed_dim, "backbone.embed_dim")
        if not self.dilations or any(d < 1 for d in self.dilations):
            raise ConfigError(f"backbone.dilations must be positive, got {list(self.dilations)}")
        unit_interval(self.dropout, "backbone.dropout")
        unit_interval(self.drop_path, "backbone.drop_path")
        _check_weights(self.weights)


# name (configs/backbone/<name>.yaml) -> schema
BACKBONES: dict[str, type[BackboneConfig]] = {c.name: c for c in (
    DANNDigitsConfig, LeNetConfig, ResNetConfig, TimmConfig, SegSmallConfig, DeepLabV2Config, FCN8sConfig,
    DAFormerNetConfig)}


def backbones_for(task: str) -> list[str]:
    return [name for name, c in BACKBONES.items() if c.TASK == task]
