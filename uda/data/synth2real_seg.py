"""synth2real_seg: an offline segmentation pair built to behave like GTA5 -> Cityscapes (rendered -> real).

Both domains share one layout rule and differ only in how a layout becomes pixels:
  * layout: 64 x 64 canvases with 3-4 MNIST digits, each resized (bilinear) to a side drawn from 28-36 px, its
    strokes thickened (a 5 x 5 maximum filter: a bold face), centred in its own cell of a 2 x 2 grid and moved
    up to 4 px off the centre either way, later digits over earlier ones where they meet. Label per pixel: the
    class (0-9) of the topmost digit whose intensity there is >= 128, ``10`` (background) elsewhere: 11 classes,
    background 69% of the pixels (``class_shares``; digits_seg's canvases are 95% background).
  * source ``synth_seg`` (rendered, as a game engine draws a scene): a procedural background texture, one of
    smooth colour noise, a linear gradient, stripes, a rotated checkerboard or flat shapes, every parameter
    drawn from the seed; each digit painted over it in one flat colour with a linear shading ramp, alpha-
    composited with its antialiased intensity. The colour keeps its distance from the background under it.
  * target ``real_seg`` (real, as a camera sees one): the white-on-black canvas of the same layout rule
    blended MNIST-M style, |photo crop - canvas|, with 64 x 64 crops of the real photographs in the
    scikit-image and scikit-learn wheels (``uda.data.mnistm.blend``): photo texture behind, digits in
    inverted photo colours.
Both backgrounds are textured, so the shift lies in texture statistics and rendering, not in a constant field
the source never varies. Train canvases use MNIST train digits, test canvases MNIST test digits; each domain
and split has its own seed. Built once, cached in ``<root>/synth2real_seg_v{BUILD_VERSION}/`` with a SHA-256
of its tensors that ``uda data verify`` checks (a damaged cache is named, then rebuilt on use).
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import torch

from uda.data.files import DataError, read_build
from uda.io import save_file, tensor_bytes

log = logging.getLogger(__name__)

BUILD_VERSION = 1
CANVAS = 64
BACKGROUND = 10
CLASS_NAMES = tuple(str(d) for d in range(10)) + ("background",)
SIZES = {"train": 10000, "test": 1000}
SEEDS = {("synth_seg", "train"): 31, ("synth_seg", "test"): 32, ("real_seg", "train"): 41, ("real_seg", "test"): 42}
DOMAINS = ("synth_seg", "real_seg")
DIGITS_PER_CANVAS = (3, 4)  # inclusive, one per cell of a 2 x 2 grid
GRID = 2  # cells per side: digits sit in distinct cells, so they barely occlude each other
DIGIT_SIDE = (28, 36)  # px, inclusive: the side a 28 x 28 MNIST digit is resized to
JITTER = 4  # px a digit moves off its cell's centre, either way (it may reach into a neighbour)
STROKE = 5  # the resized digit's strokes are thickened by a 5 x 5 maximum filter (a bold face, 2 px a side)
TEXTURES = ("noise", "gradient", "stripes", "checks", "shapes")
MIN_COLOUR_DISTANCE = 100.0  # RGB distance a digit's colour keeps from the mean background under it


def layout(digits: np.ndarray, labels: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """``n`` layouts of 3-4 digits drawn from ``digits`` (uint8 [M, 28, 28]) / ``labels``, one per grid cell.

    Returns (alpha uint8 [L, n, 64, 64]: layer j holds canvas i's j-th digit (0 where it has none),
    classes int64 [L, n] (-1 where none), per-pixel labels uint8 [n, 64, 64] (the topmost digit with alpha
    >= 128, else ``BACKGROUND``), boxes int64 [L, n, 3]: (y, x, side) of each digit)."""
    layers = DIGITS_PER_CANVAS[1]
    counts = rng.integers(DIGITS_PER_CANVAS[0], layers + 1, size=n)
    which = rng.integers(len(digits), size=(layers, n))
    sides = rng.integers(DIGIT_SIDE[0], DIGIT_SIDE[1] + 1, size=(layers, n))
    cells = np.argsort(rng.random(size=(n, GRID * GRID)), axis=1).T[:layers]  # [L, n] distinct cells per canvas
    jitter = rng.integers(-JITTER, JITTER + 1, size=(layers, n, 2))
    alpha = np.zeros((layers, n, CANVAS, CANVAS), np.uint8)
    classes = np.full((layers, n), -1, np.int64)
    boxes = np.zeros((layers, n, 3), np.int64)
    target = np.full((n, CANVAS, CANVAS), BACKGROUND, np.uint8)
    src = torch.from_numpy(np.ascontiguousarray(digits)).float()[:, None]
    for side in np.unique(sides):  # resize every digit drawn at this side in one call
        sel = np.argwhere(sides == side)
        scaled = torch.nn.functional.interpolate(src[torch.from_numpy(which[sel[:, 0], sel[:, 1]])], size=(side, side),
                                                 mode="bilinear", align_corners=False)
        scaled = torch.nn.functional.max_pool2d(scaled, STROKE, stride=1, padding=STROKE // 2)  # bold strokes
        scaled = scaled[:, 0].round().clamp(0, 255).to(torch.uint8).numpy()
        for (j, i), patch in zip(sel, scaled):
            if j >= counts[i]:
                continue
            cell, span = divmod(cells[j, i], GRID), CANVAS // GRID
            y, x = (np.clip(np.array(cell) * span + (span - side) // 2 + jitter[j, i], 0, CANVAS - side)).tolist()
            alpha[j, i, y:y + side, x:x + side] = patch
            classes[j, i], boxes[j, i] = labels[which[j, i]], (y, x, side)
    for j in range(layers):  # later digits lie over earlier ones
        for i in np.flatnonzero(classes[j] >= 0):
            target[i][alpha[j, i] >= 128] = classes[j, i]
    return alpha, classes, target, boxes


def textures(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` procedural backgrounds, float32 [n, 64, 64, 3] in [0, 255], one kind of ``TEXTURES`` each."""
    out = np.empty((n, CANVAS, CANVAS, 3), np.float32)
    kind = rng.integers(len(TEXTURES), size=n)
    c0, c1 = rng.uniform(0, 255, size=(2, n, 1, 1, 3)).astype(np.float32)
    theta = rng.uniform(0, 2 * np.pi, size=(n, 1, 1))
    yy, xx = (np.mgrid[0:CANVAS, 0:CANVAS].astype(np.float32) + 0.5) / CANVAS - 0.5  # [-0.5, 0.5)
    u = xx * np.cos(theta) + yy * np.sin(theta)  # [n, 64, 64] coordinate along the drawn direction
    v = -xx * np.sin(theta) + yy * np.cos(theta)
    t = np.empty((n, CANVAS, CANVAS), np.float32)
    # gradient: linear ramp c0 -> c1 across the canvas along theta
    t[:] = np.clip(u / np.sqrt(0.5) + 0.5, 0, 1)
    # stripes: 2-8 periods per canvas, edges softened over about a pixel (a renderer's antialiasing)
    freq, phase = rng.uniform(2, 8, size=(n, 1, 1)), rng.uniform(0, 2 * np.pi, size=(n, 1, 1))
    stripes = 0.5 + 0.5 * np.tanh(3 * np.sin(2 * np.pi * freq * u + phase))
    # checks: cells of 4-16 px in the rotated frame
    cell = rng.uniform(4, 16, size=(n, 1, 1)) / CANVAS
    checks = ((np.floor(u / cell) + np.floor(v / cell)) % 2).astype(np.float32)
    t = np.where((kind == 2)[:, None, None], stripes, np.where((kind == 3)[:, None, None], checks, t))
    out[:] = c0 + t[..., None] * (c1 - c0)
    # noise: a random 3x3 .. 8x8 colour grid, upsampled bicubically (smooth blotches)
    grids = rng.integers(3, 9, size=n)
    for grid in np.unique(grids[kind == 0]):
        sel = np.flatnonzero((kind == 0) & (grids == grid))
        low = torch.from_numpy(rng.uniform(0, 255, size=(sel.size, 3, grid, grid)).astype(np.float32))
        up = torch.nn.functional.interpolate(low, size=(CANVAS, CANVAS), mode="bicubic", align_corners=False)
        out[sel] = up.clamp(0, 255).permute(0, 2, 3, 1).numpy()
    # shapes: a flat base colour with 3-8 flat rectangles and disks over it
    yi, xi = np.mgrid[0:CANVAS, 0:CANVAS]
    for i in np.flatnonzero(kind == 4):
        img = np.broadcast_to(c0[i], (CANVAS, CANVAS, 3)).copy()
        for _ in range(rng.integers(3, 9)):
            cy, cx = rng.uniform(0, CANVAS, size=2)
            h, w = rng.uniform(4, 16, size=2)
            mask = ((yi - cy) ** 2 / h ** 2 + (xi - cx) ** 2 / w ** 2 <= 1) if rng.random() < 0.5 else \
                (np.abs(yi - cy) <= h) & (np.abs(xi - cx) <= w)
            img[mask] = rng.uniform(0, 255, size=3)
        out[i] = img
    return out


def render(alpha: np.ndarray, boxes: np.ndarray, classes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The source rendering of layouts: uint8 [n, 3, 64, 64], each digit in one flat colour with a linear
    shading ramp, alpha-composited over a procedural texture."""
    layers, n = classes.shape
    img = textures(n, rng)
    colour = rng.uniform(0, 255, size=(layers, n, 3)).astype(np.float32)
    shade = rng.uniform(-0.4, 0.4, size=(layers, n)).astype(np.float32)  # brightness change top -> bottom
    rows = (np.arange(CANVAS, dtype=np.float32) + 0.5)[:, None]
    for j in range(layers):
        for i in np.flatnonzero(classes[j] >= 0):
            y, x, side = boxes[j, i]
            under = img[i, y:y + side, x:x + side].reshape(-1, 3).mean(0)
            c = colour[j, i]
            if np.linalg.norm(c - under) < MIN_COLOUR_DISTANCE:  # too close to the background: its complement
                c = 255 - under
            ramp = 1 + shade[j, i] * ((rows - y) / side - 0.5)  # [64, 1], 1 at the digit's middle row
            paint = np.clip(c[None, None] * ramp[..., None], 0, 255)  # [64, 1, 3] -> broadcast over columns
            a = alpha[j, i].astype(np.float32)[..., None] / 255
            img[i] = a * paint + (1 - a) * img[i]
    return np.round(img).clip(0, 255).astype(np.uint8).transpose(0, 3, 1, 2).copy()


def white_canvas(alpha: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """uint8 [n, 64, 64]: white digits alpha-composited over black in layer order (the target's canvas)."""
    canvas = np.zeros(alpha.shape[1:], np.float32)
    for j in range(classes.shape[0]):
        a = alpha[j].astype(np.float32) / 255
        canvas = a * 255 + (1 - a) * canvas
    return np.round(canvas).astype(np.uint8)


def build(name: str, split: str, mnist: dict[str, tuple[torch.Tensor, torch.Tensor]],
          photos: list[np.ndarray] | None, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One domain's split: (uint8 images [N, 3, 64, 64], uint8 labels [N, 64, 64])."""
    x, y = mnist[split]
    seed = SEEDS[(name, split)]
    rng = np.random.default_rng(seed)
    alpha, classes, target, boxes = layout(x[:, 0].numpy(), y.numpy(), n or SIZES[split], rng)
    if name == "synth_seg":
        images = render(alpha, boxes, classes, rng)
    else:
        from uda.data.mnistm import blend

        images = blend(white_canvas(alpha, classes), photos, seed + 1000)
    return torch.from_numpy(images), torch.from_numpy(target)


def class_shares(labels: torch.Tensor) -> dict[str, float]:
    """Percent of the pixels of each class in ``labels`` (uint8 [N, H, W]), by class name."""
    counts = torch.bincount(labels.reshape(-1).long(), minlength=len(CLASS_NAMES)).double()
    return {name: round(float(100 * c / counts.sum()), 2) for name, c in zip(CLASS_NAMES, counts)}


def _digest(data: dict) -> str:
    h = hashlib.sha256()
    for split in ("train", "test"):
        for t in data[split]:
            h.update(tensor_bytes(t))
    return h.hexdigest()


def cache_path(root: Path, name: str) -> Path:
    return Path(root) / f"synth2real_seg_v{BUILD_VERSION}" / f"{name}.pt"


def load_synth2real_seg(root: Path, name: str, mnist: dict[str, tuple[torch.Tensor, torch.Tensor]]):
    """{"train": (x, y), "test": (x, y)} of ``synth_seg`` or ``real_seg``, from the cache or built."""
    if name not in DOMAINS:
        raise DataError(f"unknown synth2real_seg domain {name!r}; valid: {', '.join(DOMAINS)}")
    cache = cache_path(root, name)
    cached = read_build(cache, BUILD_VERSION, digest=_digest)  # a damaged cache is rebuilt, never used
    if cached is not None:
        return cached
    log.info("building %s (synth2real_seg) from MNIST%s -> %s", name,
             " and procedural textures" if name == "synth_seg" else
             " and the photos in the scikit-image/scikit-learn wheels", cache)
    photos = None
    if name == "real_seg":
        from uda.data.mnistm import offline_photos

        photos = [p for _, p in offline_photos()]
    data = {"version": BUILD_VERSION}
    for split in ("train", "test"):
        data[split] = build(name, split, mnist, photos)
    data["sha256"] = _digest(data)
    save_file(data, cache)
    return {"train": data["train"], "test": data["test"]}


def verify(root: Path, name: str) -> str:
    """``uda data verify``: the cached build reads and matches the SHA-256 taken when it was built. A one-line
    verdict; DataError naming the damaged file (delete it: the next run or ``uda data prepare`` rebuilds it)."""
    cache = cache_path(root, name)
    if not cache.is_file():
        raise DataError(f"{name}: no build at {cache}; `uda data prepare {name}` (or the first run) builds it")
    try:
        data = torch.load(cache, weights_only=True)
        ok = data.get("version") == BUILD_VERSION and data.get("sha256") == _digest(data)
    except Exception as e:  # noqa: BLE001 -- truncated, corrupt or not a build at all
        raise DataError(f"{cache}: not a readable synth2real_seg build ({type(e).__name__}); delete it and run "
                        f"`uda data prepare {name}` to rebuild it") from None
    if not ok:
        raise DataError(f"{cache}: damaged (its tensors do not match the SHA-256 taken at build, or another build "
                        f"version); delete it and run `uda data prepare {name}` to rebuild it")
    shares = class_shares(data["train"][1])
    digits = [v for k, v in shares.items() if k != "background"]
    return (f"{name}: build v{BUILD_VERSION} at {cache} matches its SHA-256; {len(data['train'][0])} train + "
            f"{len(data['test'][0])} test canvases; of the train pixels background {shares['background']:.1f}%, "
            f"each digit {min(digits):.2f}-{max(digits):.2f}%")
