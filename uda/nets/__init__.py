"""Backbones, heads and discriminators. ``build_backbone`` maps a backbone config to networks."""
from __future__ import annotations

from torch import nn

from uda.errors import ConfigError
from uda.nets.digits import DANNDigitsFeatures, LeNetFeatures, mlp, xavier_
from uda.schema import BACKBONES, BackboneConfig, DANNDigitsConfig, LeNetConfig, ResNetConfig, TimmConfig

__all__ = ["build_backbone", "mlp", "xavier_", "DANNDigitsFeatures", "set_requires_grad"]


def set_requires_grad(modules: list[nn.Module], flag: bool) -> None:
    """Freeze (False) or unfreeze (True) every parameter of ``modules`` (a GAN's D during G's step)."""
    for m in modules:
        for p in m.parameters():
            p.requires_grad_(flag)


def build_backbone(
    cfg: BackboneConfig, *, in_channels: int, image_size: int, num_classes: int
) -> tuple[nn.Module, nn.Module, int]:
    """Return (feature extractor, classifier head, feature dimension)."""
    if isinstance(cfg, DANNDigitsConfig):
        features = DANNDigitsFeatures(in_channels=in_channels, image_size=image_size, channels=cfg.conv_channels)
        classifier = mlp(features.out_dim, cfg.cls_hidden, num_classes)
        return features, classifier, features.out_dim
    if isinstance(cfg, LeNetConfig):
        features = LeNetFeatures(in_channels=in_channels, image_size=image_size, channels=cfg.conv_channels,
                                 feat_dim=cfg.feat_dim, dropout=cfg.dropout)
        drop = [nn.Dropout(cfg.dropout)] if cfg.dropout > 0 else []  # the official LeNet: none
        classifier = nn.Sequential(*drop, nn.Linear(cfg.feat_dim, num_classes))
        return features, classifier, cfg.feat_dim
    if isinstance(cfg, ResNetConfig):
        from uda.nets.resnet import build_resnet

        return build_resnet(cfg, in_channels=in_channels, num_classes=num_classes)
    if isinstance(cfg, TimmConfig):
        from uda.nets.timm_body import build_timm

        return build_timm(cfg, in_channels=in_channels, image_size=image_size, num_classes=num_classes)
    raise ConfigError(f"unknown backbone {cfg.name!r}; valid backbones: {', '.join(BACKBONES)}")
