"""Domain pairs: two in-memory uint8 datasets that meet the same network."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from uda.config import ConfigError, DataConfig
from uda.data.common import data_root

Splits = dict[str, tuple[torch.Tensor, torch.Tensor]]


@dataclass
class Domain:
    """A dataset held in memory: uint8 images [N, C, H, W] and int64 labels, per split."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    # held out from train for label-free model selection (a target's labels here are never read)
    val_x: torch.Tensor | None = None
    val_y: torch.Tensor | None = None

    def to(self, device: torch.device) -> "Domain":
        return Domain(self.name, *(None if t is None else t.to(device) for t in
                                   (self.train_x, self.train_y, self.test_x, self.test_y, self.val_x, self.val_y)))


@dataclass(frozen=True)
class PairInfo:
    name: str
    source: str
    target: str
    channels: int
    image_size: int
    num_classes: int


def _mnist(root: Path, cache: dict) -> Splits:
    from uda.data.mnist import load_mnist

    if "mnist" not in cache:
        cache["mnist"] = load_mnist(root)
    return cache["mnist"]


def _mnistm(root: Path, cache: dict) -> Splits:
    from uda.data.mnistm import load_mnistm

    return load_mnistm(root, _mnist(root, cache))


# name -> loader(root, shared cache) returning {"train": (x, y), "test": (x, y)}
DOMAINS: dict[str, Callable[[Path, dict], Splits]] = {"mnist": _mnist, "mnistm": _mnistm}


def _harmonise(x: torch.Tensor, channels: int, size: int) -> torch.Tensor:
    """Resize to size x size and repeat grayscale to RGB where the pair asks for it (uint8 kept)."""
    if x.shape[-1] != size or x.shape[-2] != size:
        from torchvision.transforms.v2 import functional as TF

        x = TF.resize(x, [size, size], antialias=True)
    if x.shape[1] == channels:
        return x
    if x.shape[1] == 1 and channels == 3:
        return x.expand(-1, 3, -1, -1).contiguous()
    if x.shape[1] == 3 and channels == 1:
        from torchvision.transforms.v2 import functional as TF

        return TF.rgb_to_grayscale(x)
    raise ConfigError(f"cannot turn {x.shape[1]}-channel images into {channels} channels")


def load_domain(name: str, cfg: DataConfig, cache: dict | None = None) -> Domain:
    if name not in DOMAINS:
        raise ConfigError(f"unknown domain {name!r}; valid domains: {', '.join(sorted(DOMAINS))}")
    splits = DOMAINS[name](data_root(cfg.root), {} if cache is None else cache)
    (xtr, ytr), (xte, yte) = splits["train"], splits["test"]
    if cfg.train_subset:
        xtr, ytr = xtr[: cfg.train_subset], ytr[: cfg.train_subset]
    if cfg.test_subset:
        xte, yte = xte[: cfg.test_subset], yte[: cfg.test_subset]
    xtr, xte = (_harmonise(x, cfg.channels, cfg.image_size) for x in (xtr, xte))
    for split, y in (("train", ytr), ("test", yte)):
        if y.numel() and int(y.max()) >= cfg.num_classes:
            raise ConfigError(f"domain {name!r} ({split}) has label {int(y.max())} but data.num_classes={cfg.num_classes}")
    n_val = min(cfg.val_size, xtr.shape[0] // 5)  # the last images of train, never trained on
    n_tr = xtr.shape[0] - n_val
    return Domain(name, xtr[:n_tr], ytr[:n_tr], xte, yte, xtr[n_tr:], ytr[n_tr:])


def build_pair(cfg: DataConfig) -> tuple[Domain, Domain, PairInfo]:
    cache: dict = {}
    source = load_domain(cfg.source, cfg, cache)
    target = load_domain(cfg.target, cfg, cache)
    info = PairInfo(cfg.name, cfg.source, cfg.target, cfg.channels, cfg.image_size, cfg.num_classes)
    return source, target, info


class Normalize:
    """uint8 [N, C, H, W] -> float (x / 255 - mean) / std; one normalisation for both domains."""

    def __init__(self, mean: list[float], std: list[float], device: torch.device, channels_last: bool = False):
        self.scale = (1.0 / (255.0 * torch.tensor(std, device=device))).view(1, -1, 1, 1)
        self.shift = (torch.tensor(mean, device=device) / torch.tensor(std, device=device)).view(1, -1, 1, 1)
        self.channels_last = channels_last

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float().mul_(self.scale).sub_(self.shift)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
