"""Domain pairs: two in-memory uint8 datasets that meet the same network."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from uda.config import FILE_DOMAINS, SEG_DOMAINS, ConfigError, DataConfig, DomainConfig
from uda.data.common import DataError, data_root

log = logging.getLogger("uda")

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
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    # "classification" (labels per image, accuracy) | "segmentation" (labels per pixel, 255 = ignore, mIoU)
    task: str = "classification"
    class_names: tuple[str, ...] = ()

    @property
    def metric(self) -> str:
        """The evaluation metric's key suffix: source_acc / target_acc, or source_miou / target_miou."""
        return "miou" if self.task == "segmentation" else "acc"


def _mnist(root: Path, cache: dict, cfg: DataConfig) -> Splits:
    from uda.data.mnist import load_mnist

    if "mnist" not in cache:
        cache["mnist"] = load_mnist(root)
    return cache["mnist"]


def _mnistm(root: Path, cache: dict, cfg: DataConfig) -> Splits:
    from uda.data.mnistm import load_mnistm

    return load_mnistm(root, _mnist(root, cache, cfg))


def _usps(root: Path, cache: dict, cfg: DataConfig) -> Splits:
    from uda.data.digits import load_usps

    return load_usps(root, cfg.verify)


def _svhn(root: Path, cache: dict, cfg: DataConfig) -> Splits:
    from uda.data.digits import load_svhn

    return load_svhn(root, cfg.verify)


def _syndigits(root: Path, cache: dict, cfg: DataConfig) -> Splits:
    from uda.data.digits import load_syndigits

    return load_syndigits(root, cfg.verify)


def _office(domain: str):
    """Office-31 (Saenko et al. 2010) in its usual layout, <root>/office31/<domain>/images/<class>/*.jpg.

    The standard protocol has no split: train (labelled source / unlabelled target) and test are
    the whole domain. Images are stored at data.load_size (or image_size).
    """
    def load(root: Path, cache: dict, cfg: DataConfig) -> Splits:
        from uda.data.custom import read_folder

        folder = root / "office31" / domain / "images"
        if not folder.is_dir():
            raise DataError(f"office31/{domain}: missing {folder}/<class>/*.jpg (the Office-31 release, "
                            f"domain_adaptation_images.tar.gz, unpacked into {root / 'office31'})")
        x, y, _ = read_folder(folder, size=cfg.load_size or cfg.image_size)
        return {"train": (x, y), "test": (x, y)}

    return load


def _digits_seg(name: str):
    def load(root: Path, cache: dict, cfg: DataConfig) -> Splits:
        from uda.data.digits_seg import load_digits_seg

        return load_digits_seg(root, name, _mnist(root, cache, cfg))

    return load


# name -> loader(root, shared cache, data config) returning {"train": (x, y), "test": (x, y)}
DOMAINS: dict[str, Callable[[Path, dict, DataConfig], Splits]] = {
    "mnist": _mnist, "mnistm": _mnistm, "usps": _usps, "svhn": _svhn, "syndigits": _syndigits,
    "amazon": _office("amazon"), "dslr": _office("dslr"), "webcam": _office("webcam"),
    "mnist_seg": _digits_seg("mnist_seg"), "mnistm_seg": _digits_seg("mnistm_seg")}


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


def _raw(dom: DomainConfig, role: str, cfg: DataConfig, cache: dict) -> tuple[Splits, list[str] | None]:
    if dom.name == "custom":
        from uda.data.custom import load_custom

        return load_custom(dom.path, role=role, size=cfg.image_size or None)
    if dom.name not in DOMAINS:
        raise ConfigError(f"unknown domain data.{role}.name={dom.name!r}; valid domains: "
                          f"{', '.join(sorted(DOMAINS))}, custom")
    return DOMAINS[dom.name](data_root(cfg.root), cache, cfg), None


def _finish(name: str, splits: Splits, cfg: DataConfig, channels: int, size: int, n_classes: int) -> Domain:
    (xtr, ytr), (xte, yte) = splits["train"], splits["test"]
    if cfg.train_subset:
        xtr, ytr = xtr[: cfg.train_subset], ytr[: cfg.train_subset]
    if cfg.test_subset:
        xte, yte = xte[: cfg.test_subset], yte[: cfg.test_subset]
    if len(xtr) == 0 or len(xte) == 0:
        raise ConfigError(f"domain {name!r} has an empty train or test split")
    xtr, xte = (_harmonise(x, channels, size) for x in (xtr, xte))
    for split, y in (("train", ytr), ("test", yte)):
        if y.dim() == 3:  # per-pixel labels: 255 is the ignore index
            y = y[y != 255]
        if y.numel() and int(y.max()) >= n_classes:
            raise ConfigError(f"domain {name!r} ({split}) has label {int(y.max())} but the pair has {n_classes} classes "
                              f"(data.num_classes)")
    n_val = min(cfg.val_size, xtr.shape[0] // 5)  # the last images of train, never trained on
    n_tr = xtr.shape[0] - n_val
    return Domain(name, xtr[:n_tr], ytr[:n_tr], xte, yte, xtr[n_tr:], ytr[n_tr:])


def _class_names(cfg: DataConfig) -> tuple[str, ...]:
    if cfg.source.name in ("mnist_seg", "mnistm_seg"):
        from uda.data.digits_seg import CLASS_NAMES

        return CLASS_NAMES
    from uda.data.segmentation import class_names

    return tuple(class_names(cfg.source.name, cfg.num_classes))


def _build_file_pair(cfg: DataConfig):
    """Segmentation pairs read lazily from files (GTA5, SYNTHIA, Cityscapes)."""
    from uda.data.segmentation import load_seg_domain

    root = data_root(cfg.root)
    doms = []
    for role in ("source", "target"):
        dom, size = getattr(cfg, role), tuple(getattr(cfg, f"{role}_size"))
        if dom.name not in FILE_DOMAINS:
            raise ConfigError(f"data.{role}.name={dom.name}: a file-backed pair needs file-backed domains on both "
                              f"sides ({', '.join(FILE_DOMAINS)})")
        doms.append(load_seg_domain(dom.name, root, num_classes=cfg.num_classes, train_size=size,
                                    test_size=size, role=role))
    # image_size 0: the domains keep their own [height, width] (no square crop)
    info = PairInfo(cfg.name, cfg.source.name, cfg.target.name, 3, 0, cfg.num_classes, tuple(cfg.mean or [0.5] * 3),
                    tuple(cfg.std or [0.5] * 3), task="segmentation", class_names=_class_names(cfg))
    return doms[0], doms[1], info


def build_pair(cfg: DataConfig) -> tuple[Domain, Domain, PairInfo]:
    """Both domains, harmonised to one image size and channel count; 0 in the config = the source's."""
    if cfg.source.name in FILE_DOMAINS or cfg.target.name in FILE_DOMAINS:
        return _build_file_pair(cfg)
    cache: dict = {}
    s_splits, s_classes = _raw(cfg.source, "source", cfg, cache)
    t_splits, t_classes = _raw(cfg.target, "target", cfg, cache)
    x0 = s_splits["train"][0]
    if not cfg.image_size and x0.shape[-1] != x0.shape[-2]:
        raise ConfigError(f"the source images are {x0.shape[-2]}x{x0.shape[-1]}: set data.image_size to resize "
                          f"both domains to a square size")
    channels = cfg.channels or int(x0.shape[1])
    size = cfg.image_size or int(x0.shape[-1])
    stored = max(cfg.load_size, size)  # crops of `size` are taken from images stored at this size
    if cfg.num_classes:
        n_classes = cfg.num_classes
    else:
        from uda.data.custom import num_classes

        n_classes = num_classes(s_splits, s_classes)
        n_t = num_classes(t_splits, t_classes)
        if (t_classes is not None and s_classes is not None and n_t != n_classes) or n_t > n_classes:
            raise ConfigError(f"class counts differ: source {cfg.source.path or cfg.source.name} has {n_classes} "
                              f"classes, target {cfg.target.path or cfg.target.name} has {n_t}")
    if s_classes is not None and t_classes is not None and s_classes != t_classes and len(s_classes) == len(t_classes):
        log.warning("source and target class folders are named differently; matched by sorted order: %s vs %s",
                    s_classes, t_classes)
    mean = list(cfg.mean) or [0.5] * channels
    std = list(cfg.std) or [0.5] * channels
    if len(mean) != channels or len(std) != channels:
        raise ConfigError(f"data.mean / data.std need one value per channel ({channels}), got {mean} / {std}")
    source = _finish(cfg.source.name, s_splits, cfg, channels, stored, n_classes)
    target = _finish(cfg.target.name, t_splits, cfg, channels, stored, n_classes)
    seg = cfg.source.name in SEG_DOMAINS
    info = PairInfo(cfg.name, cfg.source.name, cfg.target.name, channels, size, n_classes, tuple(mean), tuple(std),
                    task="segmentation" if seg else "classification",
                    class_names=_class_names(cfg) if seg else ())
    return source, target, info


class Normalize:
    """uint8 [N, C, H, W] -> float (x / 255 - mean) / std; one normalisation for both domains."""

    def __init__(self, mean: list[float], std: list[float], device: torch.device, channels_last: bool = False,
                 crop: int | None = None):
        self.scale = (1.0 / (255.0 * torch.tensor(std, device=device))).view(1, -1, 1, 1)
        self.shift = (torch.tensor(mean, device=device) / torch.tensor(std, device=device)).view(1, -1, 1, 1)
        self.channels_last = channels_last
        self.crop = crop  # images stored larger than this are centre-cropped to it

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.crop and x.shape[-1] > self.crop:
            x = center_crop(x, self.crop)
        x = x.float().mul_(self.scale).sub_(self.shift)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
    return x[..., top : top + size, left : left + size]


def random_crop_flip(x: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """A random ``size`` crop and a coin-flip horizontal mirror per image (uint8 kept)."""
    n, _, h, w = x.shape
    tops = torch.randint(0, h - size + 1, (n,), generator=generator).tolist()
    lefts = torch.randint(0, w - size + 1, (n,), generator=generator).tolist()
    flips = (torch.rand(n, generator=generator) < 0.5).tolist()
    out = [x[k, :, t : t + size, l : l + size] for k, (t, l) in enumerate(zip(tops, lefts))]
    return torch.stack([o.flip(-1) if f else o for o, f in zip(out, flips)])
