"""torchvision ResNets as feature extractors, ImageNet weights only from a local file."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from uda.errors import ConfigError
from uda.io import load_failure
from uda.schema import ResNetConfig

WIDTH = {18: 512, 34: 512, 50: 2048, 101: 2048}


def _torch_load(file: Path):
    try:  # memory-mapped: no second copy of a 0.5 GB VGG file in memory
        return torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as e:  # files in the pre-1.6 (non-zip) format cannot be memory-mapped
        if "mmap" not in str(e):
            raise
        return torch.load(file, map_location="cpu", weights_only=True)


def load_local_weights(net: nn.Module, path: str, *, ignore: tuple[str, ...], hint: str,
                       convert: Callable[[dict], dict] | None = None) -> None:
    """Load a local ImageNet state_dict (torch file or .safetensors) into ``net`` (a torchvision or timm model).

    Keys starting with ``ignore`` (the 1000-way ImageNet classifier) are skipped on both sides, as are
    BatchNorm's ``num_batches_tracked`` counters (``FrozenBatchNorm2d`` has none; old files lack them).
    Anything else missing, unexpected or of the wrong shape is a ``ConfigError`` naming the keys. ``convert``
    maps another layout's keys to ``net``'s (SegFormer's MiT files to timm's pvt_v2).
    """
    file = Path(path).expanduser()
    try:
        if file.suffix == ".safetensors":  # timm's format (safetensors ships with timm)
            from safetensors.torch import load_file

            state = load_file(str(file))
        else:
            state = _torch_load(file)
    except Exception as e:  # noqa: BLE001 -- missing, unreadable or unsafe file
        why = "missing" if isinstance(e, FileNotFoundError) else load_failure(e)
        raise ConfigError(f"backbone.weights: cannot load {file} as a state_dict: {why}") from e
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ConfigError(f"backbone.weights: {file} holds a {type(state).__name__}, not a state_dict")

    def keep(key: str) -> bool:
        return not key.startswith(ignore) and not key.endswith("num_batches_tracked")

    state = {k.removeprefix("module."): v for k, v in state.items()}
    if convert is not None:
        state = convert(state)
    state = {k: v for k, v in state.items() if keep(k)}
    own = {k: v for k, v in net.state_dict().items() if keep(k)}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in state if k in own and getattr(state[k], "shape", None) != own[k].shape]
    if missing or unexpected or wrong:
        raise ConfigError(f"backbone.weights: {file} does not fit {hint} (missing {missing[:3]}, unexpected "
                          f"{unexpected[:3]}, wrong shapes {wrong[:3]})")
    net.load_state_dict(state, strict=False)


def load_weights(net: nn.Module, path: str) -> None:
    """Load a torchvision ImageNet ResNet state_dict (its ``fc`` is dropped); a clear error for anything else."""
    load_local_weights(net, path, ignore=("fc.",), hint="this ResNet; check backbone.depth")


class ResNetFeatures(nn.Sequential):
    """The ResNet body (item 0, pretrained) and the layers new on it (the bottleneck): two learning rates."""

    def pretrained_parameters(self) -> list[nn.Parameter]:
        return list(self[0].parameters())

    def new_parameters(self) -> list[nn.Parameter]:
        return [p for layer in list(self)[1:] for p in layer.parameters()]


def build_resnet(cfg: ResNetConfig, *, in_channels: int, num_classes: int) -> tuple[nn.Module, nn.Module, int]:
    """(ResNet to pooled features [+ bottleneck], linear classifier, feature width)."""
    from torchvision import models

    if in_channels != 3:
        raise ConfigError(f"the ResNet backbones take RGB images; set data.channels=3 (got {in_channels})")
    net = getattr(models, f"resnet{cfg.depth}")(weights=None)
    if cfg.weights:
        load_weights(net, cfg.weights)
    net.fc = nn.Identity()
    return with_head(net, WIDTH[cfg.depth], bottleneck=cfg.bottleneck, dropout=cfg.dropout, num_classes=num_classes)


def with_head(body: nn.Module, width: int, *, bottleneck: int, dropout: float,
              num_classes: int) -> tuple[nn.Module, nn.Module, int]:
    """(body [+ bottleneck FC + ReLU + dropout], linear classifier, feature width): the head every pretrained
    classification body gets (torchvision ResNets, timm models); ``bottleneck`` 0 = none."""
    if bottleneck:
        features = ResNetFeatures(body, nn.Linear(width, bottleneck), nn.ReLU(inplace=True), nn.Dropout(dropout))
        width = bottleneck
    else:
        features = ResNetFeatures(body)
    return features, nn.Linear(width, num_classes), width
