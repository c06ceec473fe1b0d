"""MNIST-M (Ganin et al. 2016): MNIST digits blended over patches of colour photographs.

The original: I_out = |I_photo_crop - I_digit| per pixel and channel, crops from BSDS500.
If the user has the standard release (``<root>/mnist_m/mnist_m_{train,test}/`` with
``mnist_m_{train,test}_labels.txt``), it is used. Otherwise the dataset is built the same way from the
real photographs shipped inside the scikit-image and scikit-learn wheels (no download), with a fixed
seed, and cached in ``<root>/mnistm_offline/``. Differences from the original, by design:
  * the photo pool is 10 photographs (astronaut, chelsea, coffee, rocket, the two motorcycle views,
    immunohistochemistry, retina, china, flower), each resized to a 321-pixel short side like
    BSDS500's 481x321, instead of BSDS500's 200 training images (hubble_deep_field is left out: its
    crops are mostly black);
  * all 60000 + 10000 MNIST digits are blended (the release has 59001 + 9001);
  * the digit is blended with its grayscale intensity, as in the paper's formula.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from uda.data.files import DataError, read_build
from uda.io import save_file

log = logging.getLogger(__name__)

BUILD_VERSION = 1
BUILD_SEED = 1234
PHOTO_SHORT_SIDE = 321


def offline_photos() -> list[tuple[str, np.ndarray]]:
    """The colour photographs inside the scikit-image and scikit-learn wheels, HxWx3 uint8."""
    import skimage.data as skd
    from sklearn.datasets import load_sample_images
    from torchvision.transforms.v2 import functional as TF

    photos = [
        ("astronaut", skd.astronaut()), ("chelsea", skd.chelsea()), ("coffee", skd.coffee()),
        ("rocket", skd.rocket()),
    ]
    left, right, _ = skd.stereo_motorcycle()
    photos += [("motorcycle_left", left), ("motorcycle_right", right),
               ("immunohistochemistry", skd.immunohistochemistry()), ("retina", skd.retina())]
    sk = load_sample_images()
    photos += [(Path(f).stem, im) for f, im in zip(sk.filenames, sk.images)]
    out = []
    for name, im in photos:
        t = torch.from_numpy(np.array(im[..., :3])).permute(2, 0, 1)  # a writable copy
        t = TF.resize(t, [PHOTO_SHORT_SIDE], antialias=True)  # short side -> 321, like BSDS500
        out.append((name, t.permute(1, 2, 0).contiguous().numpy()))
    return out


def blend(digits: np.ndarray, photos: list[np.ndarray], seed: int) -> np.ndarray:
    """|crop - digit| for each digit image with a random S x S crop of a random photo.

    ``digits``: uint8 [N, S, S] (S = 28 for MNIST-M; digits_seg blends 64 x 64 canvases the same
    way); ``photos``: uint8 [H, W, 3] each. Returns uint8 [N, 3, S, S].
    """
    rng = np.random.default_rng(seed)
    n, size = digits.shape[0], digits.shape[-1]
    which = rng.integers(len(photos), size=n)
    out = np.empty((n, size, size, 3), np.uint8)
    ar = np.arange(size)
    for p, photo in enumerate(photos):
        sel = np.flatnonzero(which == p)
        h, w = photo.shape[:2]
        ys = rng.integers(0, h - size + 1, size=sel.size)
        xs = rng.integers(0, w - size + 1, size=sel.size)
        crops = photo[(ys[:, None] + ar)[:, :, None], (xs[:, None] + ar)[:, None, :]]  # [n,S,S,3]
        out[sel] = np.abs(crops.astype(np.int16) - digits[sel][..., None].astype(np.int16)).astype(np.uint8)
    return out.transpose(0, 3, 1, 2).copy()


def _load_release(folder: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    from PIL import Image

    cache = folder / "mnist_m_uint8.pt"
    if cache.is_file():
        try:
            return torch.load(cache, weights_only=True)
        except Exception as e:  # noqa: BLE001 -- a truncated or corrupt cache is rebuilt, never used
            log.warning("unreadable cache %s (%s); reading the release again", cache, e)
    out = {}
    for split in ("train", "test"):
        labels_file = folder / f"mnist_m_{split}_labels.txt"
        if not labels_file.is_file():
            raise DataError(f"MNIST-M release in {folder} lacks {labels_file.name}")
        xs, ys = [], []
        for n, line in enumerate(labels_file.read_text().split("\n"), 1):
            if not line.strip():
                continue
            try:
                fname, label = line.split()
                label = int(label)
            except ValueError:
                raise DataError(f"{labels_file}:{n}: expected '<image> <label>', got {line.strip()!r}") from None
            img = folder / f"mnist_m_{split}" / fname
            if not img.is_file():
                raise DataError(f"MNIST-M image {img} listed in {labels_file.name} is missing")
            try:
                with Image.open(img) as im:
                    xs.append(torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1))
            except OSError as e:  # PIL's UnidentifiedImageError and truncated files are OSErrors
                raise DataError(f"{img}: not a readable image ({type(e).__name__}: {e}); replace the file") from e
            ys.append(label)
        out[split] = (torch.stack(xs), torch.tensor(ys, dtype=torch.long))
    save_file(out, cache)
    return out


def load_mnistm(
    root: Path, mnist: dict[str, tuple[torch.Tensor, torch.Tensor]]
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{"train": (x uint8 [N,3,28,28], y), "test": (...)}: the standard release if present, else the
    offline build (made once, then read from the cache)."""
    release = root / "mnist_m"
    if (release / "mnist_m_train_labels.txt").is_file():
        return _load_release(release)
    cache = root / "mnistm_offline" / f"mnistm_offline_v{BUILD_VERSION}.pt"
    cached = read_build(cache, BUILD_VERSION)
    if cached is not None:
        return cached
    log.info("building MNIST-M offline from the photos in the scikit-image/scikit-learn wheels -> %s", cache)
    photos = [p for _, p in offline_photos()]
    data = {"version": BUILD_VERSION}
    for i, split in enumerate(("train", "test")):
        x, y = mnist[split]
        data[split] = (torch.from_numpy(blend(x[:, 0].numpy(), photos, BUILD_SEED + i)), y.clone())
    save_file(data, cache)
    return {"train": data["train"], "test": data["test"]}
