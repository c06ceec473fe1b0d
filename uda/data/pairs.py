"""Domain pairs: two domains that meet the same network, harmonised to one size, channel count and
normalisation (``build_pair``), and the transforms the trainer applies to their uint8 batches."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from uda.data.catalog import DOMAINS, Family, spec
from uda.data.domain import Domain, TensorDomain
from uda.data.files import checked_root, data_root
from uda.data.image_files import FileSplits, file_domain
from uda.errors import ConfigError
from uda.schema.base import CLASSIFICATION, SEGMENTATION

if TYPE_CHECKING:
    from uda.schema.data import DataConfig

log = logging.getLogger("uda")

Splits = dict[str, tuple[torch.Tensor, torch.Tensor]]


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
    # CLASSIFICATION (a label per image, accuracy) | SEGMENTATION (per pixel, 255 ignored, mIoU)
    task: str = CLASSIFICATION
    class_names: tuple[str, ...] = ()

    @property
    def metric(self) -> str:
        """The evaluation metric's key suffix: source_acc / target_acc, or source_miou / target_miou."""
        return "miou" if self.task == SEGMENTATION else "acc"


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


def _root(cfg: DataConfig, doms: dict[str, Family]) -> Path:
    """The pair's data root, checked (it must exist when chosen) where a domain reads from it."""
    needing = [dom.name for dom in doms.values() if dom.needs_root]
    return checked_root(cfg.root, needing[0]) if needing else data_root(cfg.root)


def _finish(name: str, splits: Splits, cfg: DataConfig, channels: int, size: int, n_classes: int) -> TensorDomain:
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
            raise ConfigError(
                f"domain {name!r} ({split}) has label {int(y.max())} but the pair has {n_classes} classes "
                f"(data.num_classes)"
            )
    n_val = min(cfg.val_size, xtr.shape[0] // 5)  # the last images of train, never trained on
    n_tr = xtr.shape[0] - n_val
    return TensorDomain(name, xtr[:n_tr], ytr[:n_tr], xte, yte, xtr[n_tr:], ytr[n_tr:])


def _build_file_pair(cfg: DataConfig, doms: dict[str, Family]) -> tuple[Domain, Domain, PairInfo]:
    """Segmentation pairs read lazily from files (GTA5, SYNTHIA, Cityscapes)."""
    root = _root(cfg, doms)
    for role, dom in doms.items():
        if not dom.files:
            raise ConfigError(f"data.{role}.name={dom.name}: a file-backed pair needs file-backed domains on both "
                              f"sides ({', '.join(n for n, d in DOMAINS.items() if d.files)})")
    source, target = (dom.load(root, cfg, role, {}) for role, dom in doms.items())
    # image_size 0: the domains keep their own [height, width] (no square crop)
    info = PairInfo(cfg.name, cfg.source.name, cfg.target.name, 3, 0, cfg.num_classes, tuple(cfg.mean or [0.5] * 3),
                    tuple(cfg.std or [0.5] * 3), task=SEGMENTATION,
                    class_names=doms["source"].classes(cfg.num_classes))
    return source, target, info


def _channels(raw) -> int:
    """A domain's own channel count: its images' (memory), 3 for files (decoded as RGB)."""
    return 3 if isinstance(raw, FileSplits) else int(raw[0]["train"][0].shape[1])


def _classes_of(raw) -> list[str] | None:
    return list(raw.train.classes) if isinstance(raw, FileSplits) else raw[1]


def _count_classes(raw) -> int:
    if isinstance(raw, FileSplits):
        return max(len(raw.train.classes), max(raw.test.labels) + 1)
    from uda.data.custom import num_classes

    return num_classes(*raw)


def build_pair(cfg: DataConfig) -> tuple[Domain, Domain, PairInfo]:
    """Both domains, harmonised to one image size and channel count; 0 in the config = the source's size and
    the richer channel count of the two (RGB if either is RGB, so that an RGB domain is never turned grey)."""
    doms = {role: spec(getattr(cfg, role).name, f"data.{role}.name") for role in ("source", "target")}
    task = doms["source"].task
    if task == SEGMENTATION and any(dom.files for dom in doms.values()):
        return _build_file_pair(cfg, doms)
    root, cache = _root(cfg, doms), {}
    raw = {role: dom.load(root, cfg, role, cache) for role, dom in doms.items()}  # (splits, names) or FileSplits
    if cfg.image_size:
        size = cfg.image_size
    elif isinstance(raw["source"], FileSplits):
        raise ConfigError(f"data.image_size is required for {cfg.source.path or cfg.source.name}, read from files "
                          f"(e.g. data.image_size=224 data.load_size=256)")
    else:
        x0 = raw["source"][0]["train"][0]
        if x0.shape[-1] != x0.shape[-2]:
            raise ConfigError(f"the source images are {x0.shape[-2]}x{x0.shape[-1]}: set data.image_size to resize "
                              f"both domains to a square size")
        size = int(x0.shape[-1])
    channels = cfg.channels or max(_channels(r) for r in raw.values())
    stored = max(cfg.load_size, size)  # crops of `size` are taken from images stored at this size
    s_classes, t_classes = _classes_of(raw["source"]), _classes_of(raw["target"])
    if cfg.num_classes:
        n_classes = cfg.num_classes
    else:
        n_classes, n_t = _count_classes(raw["source"]), _count_classes(raw["target"])
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
    source, target = (_domain(getattr(cfg, role).name, raw[role], cfg, channels, stored, n_classes)
                      for role in ("source", "target"))
    names = (doms["source"].classes(n_classes) if task == SEGMENTATION
             else _classification_names(s_classes or t_classes, n_classes))
    info = PairInfo(cfg.name, cfg.source.name, cfg.target.name, channels, size, n_classes, tuple(mean), tuple(std),
                    task=task, class_names=names)
    return source, target, info


def _domain(name: str, raw, cfg: DataConfig, channels: int, stored: int, n_classes: int) -> Domain:
    """A memory domain's TensorDomain (``_finish``), or a FileDomain reading a file-backed one's images."""
    if not isinstance(raw, FileSplits):
        return _finish(name, raw[0], cfg, channels, stored, n_classes)
    top = max(max(raw.train.labels), max(raw.test.labels))
    if top >= n_classes:
        raise ConfigError(f"domain {name!r} has label {top} but the pair has {n_classes} classes (data.num_classes)")
    return file_domain(name, raw, size=stored, channels=channels, val_size=cfg.val_size,
                       train_subset=cfg.train_subset, test_subset=cfg.test_subset)


def _classification_names(names: list[str] | None, n_classes: int) -> tuple[str, ...]:
    """The class names of a classification pair: the source's folders or lists (the target's when the source
    has none), else the labels themselves ("0", "1", ...: the digits); labels beyond the named ones (a pair
    of more classes than a domain's folders) are named by themselves."""
    names = list(names or [])[:n_classes]
    return tuple(names + [str(k) for k in range(len(names), n_classes)])


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
        x = x.to(self.scale.device, non_blocking=True).float().mul_(self.scale).sub_(self.shift)  # host data too
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def undo(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images back to [0, 1] (for pictures): (x + mean / std) * std = x * std + mean."""
        return ((x.float() + self.shift) / (255.0 * self.scale)).clamp(0, 1)


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
    return x[..., top : top + size, left : left + size]


def random_crop_flip(x: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """A random ``size`` crop and a coin-flip horizontal mirror per image (uint8 kept)."""
    n, _, h, w = x.shape
    tops = torch.randint(0, h - size + 1, (n,), generator=generator).tolist()
    lefts = torch.randint(0, w - size + 1, (n,), generator=generator).tolist()
    flips = (torch.rand(n, generator=generator) < 0.5).tolist()
    out = [x[k, :, top : top + size, left : left + size] for k, (top, left) in enumerate(zip(tops, lefts))]
    return torch.stack([o.flip(-1) if f else o for o, f in zip(out, flips)])


SEG_CROP_TRIES = 10  # mmseg's RandomCrop checks at most 10 windows; DAFormer's RCS re-crops at most 10 times


def seg_window(height: int, width: int, size: tuple[int, int], generator: torch.Generator) -> tuple[int, int]:
    """A uniformly random (top, left) of a ``size`` = (h, w) window inside a height x width image."""
    top = int(torch.randint(0, height - size[0] + 1, (1,), generator=generator))
    left = int(torch.randint(0, width - size[1] + 1, (1,), generator=generator))
    return top, left


def _one_seg_crop(x: torch.Tensor, y: torch.Tensor | None, size: tuple[int, int], generator: torch.Generator,
                  max_share: float, flip: bool, ignore: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One image [C, H, W] (and its label map [H, W]): mmseg's RandomCrop, then RandomFlip at p 0.5."""
    h, w = size
    if h > x.shape[-2] or w > x.shape[-1]:
        raise ConfigError(f"data.seg_crop {list(size)} is larger than a training image ({x.shape[-2]} x "
                          f"{x.shape[-1]}); crops are taken from the stored images")
    top, left = seg_window(x.shape[-2], x.shape[-1], size, generator)
    if y is not None and max_share < 1:  # draw again while one class fills the window (checked at most 10 times)
        for _ in range(SEG_CROP_TRIES):
            window = y[top : top + h, left : left + w]
            counts = torch.bincount(window[window != ignore].reshape(-1).long())
            counts = counts[counts > 0]
            if len(counts) > 1 and float(counts.max()) / float(counts.sum()) < max_share:
                break
            top, left = seg_window(x.shape[-2], x.shape[-1], size, generator)
    x = x[:, top : top + h, left : left + w]
    y = None if y is None else y[top : top + h, left : left + w]
    if flip and float(torch.rand(1, generator=generator)) < 0.5:
        x, y = x.flip(-1), None if y is None else y.flip(-1)
    return x, y


def random_seg_crop(x: torch.Tensor, y: torch.Tensor | None, size: tuple[int, int] | None, generator: torch.Generator,
                    *, max_share: float = 1.0, flip: bool = False, need: list[tuple[int, float]] | None = None,
                    ignore: int = 255) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Segmentation training crops of a batch x [N, C, H, W] (uint8 kept) and its label maps y [N, H, W] (None for
    the target, whose labels are never read): per image a random ``size`` = (h, w) window (None: the whole image),
    the same for the image and its labels; with labels and ``max_share`` < 1 the window is drawn again while one
    class covers >= max_share of its labelled pixels or it holds a single class (mmseg's ``cat_max_ratio``: at
    most 10 windows checked, the 11th taken as drawn); then a horizontal mirror at p 0.5 where ``flip``.
    ``need[k] = (c, pixels)``: image k's crop (window and mirror) is taken again, at most 10 times, until it holds
    more than ``pixels`` pixels of class c (DAFormer's rare class sampling re-crop)."""
    size = size or (x.shape[-2], x.shape[-1])
    xs, ys = [], []
    for k in range(len(x)):
        yk = None if y is None else y[k]
        xc, yc = _one_seg_crop(x[k], yk, size, generator, max_share, flip, ignore)
        if need is not None and yk is not None:
            c, pixels = need[k]
            for _ in range(SEG_CROP_TRIES):
                if int((yc == c).sum()) > pixels:  # strictly more, as the official n_class > 3000 x 0.5
                    break
                xc, yc = _one_seg_crop(x[k], yk, size, generator, max_share, flip, ignore)
        xs.append(xc)
        ys.append(yc)
    return torch.stack(xs), None if y is None else torch.stack(ys)
