"""``data=synthetic`` and ``data=synthetic_seg``: small pairs generated in memory from fixed seeds, with no
file and no download: what the tests run on, and the first thing to try a new method on
(``uda train data=synthetic +debug=fast``). Not a benchmark: a few hundred images, learnable in a few
hundred steps, with a domain shift of the MNIST -> MNIST-M kind.

``synthetic`` (classification, 4 classes, 28 x 28 RGB): a bright square whose quadrant is the class, its
size and position jittered, on a dark background with noise. The target (``synthetic_target``) draws other
squares the same way and shifts them: a colour gradient background, and the square |background - square|
(colour inverted against it, as MNIST-M blends digits with photographs).

``synthetic_seg`` (segmentation, 32 x 32 RGB): canvases of 1-3 shapes (square, disk, bar); per-pixel labels
0 square, 1 disk, 2 bar, 3 background (255 nowhere). The target blends its canvases the same way.
"""
from __future__ import annotations

import numpy as np
import torch

CLASSES = ("top_left", "top_right", "bottom_left", "bottom_right")
SEG_CLASSES = ("square", "disk", "bar", "background")
SIZE, SEG_SIZE = 28, 32
SIZES = {"train": 400, "test": 200}
SEG_SIZES = {"train": 256, "test": 64}
# one seed per domain and split: no two of them share a draw
SEEDS = {"synthetic_source": 101, "synthetic_target": 102, "synthetic_seg_source": 201, "synthetic_seg_target": 202}
SPLIT_OFFSET = {"train": 0, "test": 1000}


def _squares(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(float [n, 28, 28] in [0, 1], labels [n]): a square in quadrant ``label``, jittered."""
    y = rng.integers(0, len(CLASSES), n)
    x = np.zeros((n, SIZE, SIZE), np.float32)
    half = SIZE // 2
    for i in range(n):
        side = int(rng.integers(6, 11))
        top = (y[i] // 2) * half + int(rng.integers(0, half - side + 1))
        left = (y[i] % 2) * half + int(rng.integers(0, half - side + 1))
        x[i, top:top + side, left:left + side] = rng.uniform(0.7, 1.0)
    return np.clip(x + rng.normal(0, 0.05, x.shape), 0, 1), y


def _shapes(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(float [n, 32, 32] in [0, 1], per-pixel labels [n, 32, 32]): 1-3 shapes, the later on top."""
    x = np.zeros((n, SEG_SIZE, SEG_SIZE), np.float32)
    y = np.full((n, SEG_SIZE, SEG_SIZE), len(SEG_CLASSES) - 1, np.uint8)
    rows, cols = np.mgrid[:SEG_SIZE, :SEG_SIZE]
    for i in range(n):
        for _ in range(int(rng.integers(1, 4))):
            k = int(rng.integers(0, 3))
            cy, cx, r = *rng.integers(6, SEG_SIZE - 6, 2), int(rng.integers(3, 6))
            if k == 0:
                mask = (abs(rows - cy) <= r) & (abs(cols - cx) <= r)
            elif k == 1:
                mask = (rows - cy) ** 2 + (cols - cx) ** 2 <= r * r
            else:
                mask = (abs(rows - cy) <= 1) & (abs(cols - cx) <= 2 * r)
            x[i][mask], y[i][mask] = rng.uniform(0.7, 1.0), k
    return np.clip(x + rng.normal(0, 0.05, x.shape), 0, 1), y


def _to_rgb(x: np.ndarray, rng: np.random.Generator, shifted: bool) -> torch.Tensor:
    """uint8 [n, 3, H, W]: grey for the source; for the target a random colour gradient background and the
    picture blended MNIST-M style, |background - picture|."""
    n, h, w = x.shape
    rgb = np.repeat(x[:, None], 3, axis=1)
    if shifted:
        ramp = np.linspace(0, 1, w, dtype=np.float32)[None, None, None, :]
        lo, hi = rng.uniform(0, 0.6, (n, 3, 1, 1)), rng.uniform(0.4, 1.0, (n, 3, 1, 1))
        background = (lo + (hi - lo) * ramp).astype(np.float32) * np.ones((1, 1, h, 1), np.float32)
        rgb = np.abs(background - rgb)
    return torch.from_numpy((rgb * 255).round().astype(np.uint8))


def load(name: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One domain's split: (uint8 images [N, 3, H, W], labels: int64 [N], or uint8 [N, H, W] for segmentation)."""
    rng = np.random.default_rng(SEEDS[name] + SPLIT_OFFSET[split])
    seg = name.startswith("synthetic_seg")
    x, y = _shapes(rng, SEG_SIZES[split]) if seg else _squares(rng, SIZES[split])
    images = _to_rgb(x, rng, shifted=name.endswith("target"))
    return images, torch.from_numpy(y) if seg else torch.from_numpy(y).long()


def splits(name: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {split: load(name, split) for split in ("train", "test")}
