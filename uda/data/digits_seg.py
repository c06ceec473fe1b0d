"""digits_seg: an offline segmentation pair built from real images (MNIST digits, real photographs).

Source (``mnist_seg``): 64 x 64 black canvases with 1-3 MNIST digits pasted at random positions
(pixel-wise maximum where digits overlap). Label per pixel: the digit's class (0-9) where that digit's
intensity is >= 128 and on top, ``10`` (background) elsewhere: 11 classes.
Target (``mnistm_seg``): other canvases drawn the same way, then blended MNIST-M style,
|photo crop - canvas| with 64 x 64 crops of the real photographs in the scikit-image and scikit-learn
wheels (``uda.data.mnistm.blend``): textured backgrounds, digits with inverted photo colours.

Train canvases use MNIST train digits, test canvases MNIST test digits; source and target draw
different digits and layouts (seeds differ). Built once with fixed seeds and cached in
``<root>/digits_seg_v{BUILD_VERSION}/``.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from uda.data.files import read_build
from uda.io import save_file

log = logging.getLogger(__name__)

BUILD_VERSION = 1
CANVAS = 64
BACKGROUND = 10
CLASS_NAMES = tuple(str(d) for d in range(10)) + ("background",)
SIZES = {"train": 10000, "test": 1000}
SEEDS = {("mnist_seg", "train"): 11, ("mnist_seg", "test"): 12, ("mnistm_seg", "train"): 21, ("mnistm_seg", "test"): 22}


def compose(digits: np.ndarray, labels: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` canvases of 1-3 digits drawn from ``digits`` (uint8 [M, 28, 28]) / ``labels``.

    Returns (uint8 [n, 64, 64] canvases, uint8 [n, 64, 64] per-pixel classes, background = 10).
    """
    rng = np.random.default_rng(seed)
    size = digits.shape[-1]
    canvas = np.zeros((n, CANVAS, CANVAS), np.uint8)
    target = np.full((n, CANVAS, CANVAS), BACKGROUND, np.uint8)
    counts = rng.integers(1, 4, size=n)
    for i in range(n):
        for _ in range(counts[i]):
            k = rng.integers(len(digits))
            y, x = rng.integers(0, CANVAS - size + 1, size=2)
            patch, region, lab = digits[k], canvas[i, y:y + size, x:x + size], target[i, y:y + size, x:x + size]
            lab[(patch >= 128) & (patch >= region)] = labels[k]  # this digit is on top here
            np.maximum(region, patch, out=region)
    return canvas, target


def build(name: str, split: str, mnist: dict[str, tuple[torch.Tensor, torch.Tensor]],
          photos: list[np.ndarray] | None, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One domain's split: (uint8 images [N, C, 64, 64], uint8 labels [N, 64, 64])."""
    x, y = mnist[split]
    seed = SEEDS[(name, split)]
    canvas, target = compose(x[:, 0].numpy(), y.numpy(), n or SIZES[split], seed)
    if name == "mnist_seg":
        images = canvas[:, None]
    else:
        from uda.data.mnistm import blend

        images = blend(canvas, photos, seed + 1000)
    return torch.from_numpy(images), torch.from_numpy(target)


def load_digits_seg(root: Path, name: str, mnist: dict[str, tuple[torch.Tensor, torch.Tensor]]):
    """{"train": (x, y), "test": (x, y)} of ``mnist_seg`` or ``mnistm_seg``, from the cache or built."""
    cache = root / f"digits_seg_v{BUILD_VERSION}" / f"{name}.pt"
    cached = read_build(cache, BUILD_VERSION)
    if cached is not None:
        return cached
    log.info("building %s (digits_seg) from MNIST%s -> %s", name,
             "" if name == "mnist_seg" else " and the photos in the scikit-image/scikit-learn wheels", cache)
    photos = None
    if name != "mnist_seg":
        from uda.data.mnistm import offline_photos

        photos = [p for _, p in offline_photos()]
    data = {"version": BUILD_VERSION}
    for split in ("train", "test"):
        data[split] = build(name, split, mnist, photos)
    save_file(data, cache)
    return {"train": data["train"], "test": data["test"]}
