"""Any timm model (Wightman, pytorch-image-models) as a classification backbone: the model to its pooled
features, then the ResNet backbone's head (bottleneck FC + ReLU + dropout, linear classifier), with the body
and the new layers in two learning-rate groups (``backbone.head_lr_mult``). Weights come only from a local file;
timm never downloads anything here (``pretrained=False``)."""
from __future__ import annotations

import difflib

from torch import nn

from uda.errors import ConfigError
from uda.nets.resnet import load_local_weights, with_head
from uda.schema import TimmConfig


def _create(name: str, *, in_channels: int, image_size: int) -> nn.Module:
    """The timm model without its classifier (``num_classes=0``: pooled features). Models with a fixed input
    size (ViTs) are built for ``image_size``; the others take any size and refuse the argument."""
    import timm

    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        raise ConfigError(f"backbone.model={name!r} is not a timm model" + (f"; did you mean {', '.join(close)}?"
                                                                             if close else "; see timm.list_models()"))
    kwargs = dict(pretrained=False, num_classes=0, in_chans=in_channels)
    default = timm.get_pretrained_cfg(name)
    default_size = getattr(default, "input_size", None) if default is not None else None
    if image_size and default_size and default_size[-1] != image_size:
        try:
            return timm.create_model(name, img_size=image_size, **kwargs)
        except TypeError as e:  # a convolutional model: its constructor has no img_size (any size works)
            if "img_size" not in str(e):
                raise
    return timm.create_model(name, **kwargs)


def build_timm(
    cfg: TimmConfig, *, in_channels: int, image_size: int, num_classes: int
) -> tuple[nn.Module, nn.Module, int]:
    """(timm body [+ bottleneck], linear classifier, feature width)."""
    body = _create(cfg.model, in_channels=in_channels, image_size=image_size)
    if cfg.weights:
        heads = body.pretrained_cfg.get("classifier") or ()
        heads = (heads,) if isinstance(heads, str) else tuple(heads)
        load_local_weights(body, cfg.weights, ignore=tuple(f"{h}." for h in heads),
                           hint=f"timm's {cfg.model}; check backbone.model")
    return with_head(body, body.num_features, bottleneck=cfg.bottleneck, dropout=cfg.dropout, num_classes=num_classes)
