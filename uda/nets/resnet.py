"""torchvision ResNets as feature extractors, ImageNet weights only from a local file."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from uda.config import ConfigError, ResNetConfig

WIDTH = {18: 512, 34: 512, 50: 2048, 101: 2048}


def load_weights(net: nn.Module, path: str) -> None:
    """Load a torchvision ImageNet state_dict (its ``fc`` is dropped); a clear error for anything else."""
    file = Path(path).expanduser()
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 -- unreadable or unsafe file
        raise ConfigError(f"backbone.weights: cannot load {file} as a state_dict ({str(e).splitlines()[0][:200]})") from e
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ConfigError(f"backbone.weights: {file} holds a {type(state).__name__}, not a state_dict")
    state = {k.removeprefix("module."): v for k, v in state.items() if not k.removeprefix("module.").startswith("fc.")}
    own = {k: v for k, v in net.state_dict().items() if not k.startswith("fc.")}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in state if k in own and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        raise ConfigError(f"backbone.weights: {file} does not fit this ResNet (missing {missing[:3]}, unexpected "
                          f"{unexpected[:3]}, wrong shapes {wrong[:3]}); check backbone.depth")
    net.load_state_dict(state, strict=False)


def build_resnet(cfg: ResNetConfig, *, in_channels: int, num_classes: int) -> tuple[nn.Module, nn.Module, int]:
    """(ResNet to pooled features [+ bottleneck], linear classifier, feature width)."""
    from torchvision import models

    if in_channels != 3:
        raise ConfigError(f"the ResNet backbones take RGB images; set data.channels=3 (got {in_channels})")
    net = getattr(models, f"resnet{cfg.depth}")(weights=None)
    if cfg.weights:
        load_weights(net, cfg.weights)
    net.fc = nn.Identity()
    width = WIDTH[cfg.depth]
    if cfg.bottleneck:
        features = nn.Sequential(net, nn.Linear(width, cfg.bottleneck), nn.ReLU(inplace=True), nn.Dropout(cfg.dropout))
        width = cfg.bottleneck
    else:
        features = net
    return features, nn.Linear(width, num_classes), width
