"""Image augmentations on batches of normalised tensors, every draw from a ``torch.Generator`` (a method
makes one from (seed, step, rank), so a resumed run repeats them): a random resized crop with a coin-flip
mirror (FixMatch's weak view) and timm's RandAugment (its strong view)."""
from __future__ import annotations

import math

import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

BILINEAR = InterpolationMode.BILINEAR  # TLlib hands timm interpolation=Image.BILINEAR
LEVEL_MAX = 10.0  # timm's _LEVEL_DENOM: magnitudes run over [0, 10]
# timm's _RAND_TRANSFORMS (timm/data/auto_augment.py): the 15 ops RandAugment draws from
RAND_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd", "Color",
            "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")


def to_pixels(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Normalised float [N, C, H, W] -> uint8 pixels (x std + mean, in [0, 1], x 255 rounded)."""
    return ((x.float() * std + mean).clamp(0, 1) * 255).round().to(torch.uint8)


def from_pixels(u: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return ((u.float() / 255 - mean) / std).to(dtype)


def random_resized_crop(img: torch.Tensor, gen: torch.Generator, scale: tuple[float, float], flip: bool,
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> torch.Tensor:
    """torchvision's RandomResizedCrop(size, scale, ratio) of one image [C, H, W] back to its size (10 tries,
    then the central crop of the clamped ratio), then a coin-flip horizontal mirror when ``flip``."""
    _, h, w = img.shape
    area, box = h * w, None
    for _ in range(10):
        u = torch.rand(2, generator=gen).tolist()
        target = area * (scale[0] + (scale[1] - scale[0]) * u[0])
        aspect = math.exp(math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[1])
        cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            top = int(torch.randint(0, h - ch + 1, (1,), generator=gen))
            left = int(torch.randint(0, w - cw + 1, (1,), generator=gen))
            box = (top, left, ch, cw)
            break
    if box is None:
        cw, ch = min(w, round(h * ratio[1])), min(h, round(w / ratio[0]))
        box = ((h - ch) // 2, (w - cw) // 2, ch, cw)
    out = TF.resized_crop(img, *box, size=[h, w], antialias=True)
    flipped = flip and bool(torch.rand(1, generator=gen) < 0.5)
    return out.flip(-1) if flipped else out


def _signed(v: float, gen: torch.Generator) -> float:
    return -v if bool(torch.rand(1, generator=gen) < 0.5) else v  # timm's _randomly_negate


def apply_op(img: torch.Tensor, op: str, level: float, gen: torch.Generator, fill: list[float]) -> torch.Tensor:
    """One RandAugment op on a uint8 image [C, H, W] at ``level`` in [0, 10], as timm's level-to-argument maps."""
    lv = level / LEVEL_MAX
    _, h, w = img.shape
    if op == "AutoContrast":
        return TF.autocontrast(img)
    if op == "Equalize":
        return TF.equalize(img)
    if op == "Invert":
        return TF.invert(img)
    if op == "Rotate":
        return TF.rotate(img, _signed(30 * lv, gen), interpolation=BILINEAR, fill=fill)
    if op == "Posterize":  # keep int(4 lv) bits (timm: 0..4, milder as the level rises)
        return TF.posterize(img, int(4 * lv))
    if op == "Solarize":  # invert pixels >= 256 lv (256: none, as PIL)
        threshold = int(256 * lv)
        return img if threshold > 255 else TF.solarize(img, threshold)
    if op == "SolarizeAdd":  # add int(110 lv) to pixels < 128
        added = (img.int() + int(110 * lv)).clamp(0, 255).to(torch.uint8)
        return torch.where(img < 128, added, img)
    if op in ("Color", "Contrast", "Brightness", "Sharpness"):  # enhance factor 1.8 lv + 0.1
        f = 1.8 * lv + 0.1
        if op == "Color":
            return TF.adjust_saturation(img, f) if img.shape[0] == 3 else img
        return {"Contrast": TF.adjust_contrast, "Brightness": TF.adjust_brightness,
                "Sharpness": TF.adjust_sharpness}[op](img, f)
    if op in ("ShearX", "ShearY"):  # shear 0.3 lv (a slope), random sign
        deg = math.degrees(math.atan(_signed(0.3 * lv, gen)))
        shear = [deg, 0.0] if op == "ShearX" else [0.0, deg]
        return TF.affine(img, angle=0.0, translate=[0.0, 0.0], scale=1.0, shear=shear, interpolation=BILINEAR,
                         fill=fill)
    if op in ("TranslateXRel", "TranslateYRel"):  # shift 0.45 lv of the side, random sign
        t = _signed(0.45 * lv, gen)
        shift = [t * w, 0.0] if op == "TranslateXRel" else [0.0, t * h]
        return TF.affine(img, angle=0.0, translate=shift, scale=1.0, shear=[0.0, 0.0], interpolation=BILINEAR,
                         fill=fill)
    raise ValueError(f"unknown RandAugment op {op!r}; valid: {', '.join(RAND_OPS)}")


def rand_augment(img: torch.Tensor, gen: torch.Generator, *, ops: int, magnitude: float, magnitude_std: float,
                 prob: float, fill: list[float]) -> torch.Tensor:
    """timm's RandAugment ('rand-m{magnitude}-n{ops}-mstd{magnitude_std}') of one uint8 image: ``ops`` ops
    drawn with replacement from ``RAND_OPS``, each applied with probability ``prob`` at a level drawn
    N(magnitude, magnitude_std) clipped to [0, 10]."""
    for i in torch.randint(0, len(RAND_OPS), (ops,), generator=gen).tolist():
        if bool(torch.rand(1, generator=gen) >= prob):
            continue
        level = magnitude + magnitude_std * float(torch.randn(1, generator=gen)) if magnitude_std > 0 else magnitude
        img = apply_op(img, RAND_OPS[i], min(max(level, 0.0), LEVEL_MAX), gen, fill)
    return img
