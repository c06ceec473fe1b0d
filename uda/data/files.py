"""Data root, checksums, cached builds and image decoding shared by the dataset readers (torch is imported
only inside the functions that need it: ``uda.data.catalog`` imports this module)."""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from uda.errors import UserError

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch


class DataError(UserError):
    """A dataset is missing or corrupt: the message says which file and what to do."""


def data_root(configured: str = "") -> Path:
    """``data.root`` if set, else $UDA_DATA, else ~/.cache/uda (XDG_CACHE_HOME honoured)."""
    if configured:
        return Path(configured).expanduser()
    if os.environ.get("UDA_DATA"):
        return Path(os.environ["UDA_DATA"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "uda"


def checked_root(configured: str = "", domain: str = "NAME") -> Path:
    """``data_root``, which must exist when it was chosen (``data.root`` or $UDA_DATA): a typo is an error, not
    a new place to prepare the data in. Only the default root is created on first use."""
    root = data_root(configured)
    chosen = "data.root" if configured else ("$UDA_DATA" if os.environ.get("UDA_DATA") else None)
    if chosen and not root.is_dir():
        what = "is not a directory" if root.exists() else "does not exist"
        raise DataError(f"the data root {root} ({chosen}) {what}; fix the path, or prepare the data there with "
                        f"`uda data prepare {domain} --root {root}`")
    return root


def sha256(path: Path, chunk: int = 1 << 20, algorithm: str = "sha256") -> str:
    """Hex digest of a file (``algorithm``: any hashlib name; md5 for torchvision's published sums)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify(path: Path, expected: str) -> None:
    """Raise DataError naming ``path`` if it is missing or its sha256 is not ``expected``."""
    if not path.is_file():
        raise DataError(f"missing file {path}")
    got = sha256(path)
    if got != expected:
        raise DataError(
            f"checksum mismatch for {path} (size {path.stat().st_size} bytes): sha256 {got}, "
            f"expected {expected}. The file is corrupt or truncated: delete it and run again."
        )


def read_build(cache: Path, version: int, digest: Callable[[dict], str] | None = None) -> dict | None:
    """The splits of an offline build cached at ``cache`` ({"train": (x, y), "test": (x, y)}), or None
    when there is none, it is of another ``version``, it is unreadable, or (given ``digest``, the build's hash
    of its tensors) they no longer match the ``sha256`` taken at build: then it is rebuilt, never used."""
    if not cache.is_file():
        return None
    import torch

    try:
        data = torch.load(cache, weights_only=True)
    except Exception as e:  # noqa: BLE001 -- a truncated or corrupt cache
        logging.getLogger("uda").warning("unreadable cache %s (%s); rebuilding it", cache, e)
        return None
    if data.get("version") != version:
        return None
    if digest is not None and data.get("sha256") != digest(data):
        logging.getLogger("uda").warning("damaged cache %s (its tensors do not match the SHA-256 taken at build); "
                                         "rebuilding it", cache)
        return None
    return {"train": tuple(data["train"]), "test": tuple(data["test"])}


def decode(path: Path, mode: str = "UNCHANGED") -> torch.Tensor:
    """The decoded image file as [C, H, W] (Pillow): ``RGB`` converts grey, palette and RGBA images to RGB;
    ``UNCHANGED`` keeps the file's channels (a palette PNG gives its indices). DataError if unreadable."""
    import numpy as np
    import torch
    from PIL import Image

    try:
        with Image.open(path) as img:
            pixels = np.array(img.convert("RGB") if mode == "RGB" else img)
    except (OSError, ValueError, SyntaxError) as e:  # Pillow's errors for a missing, truncated or alien file
        raise DataError(f"{path}: not a readable image ({e}); delete or replace the file") from e
    x = torch.from_numpy(pixels)
    return x[None] if x.ndim == 2 else x.permute(2, 0, 1).contiguous()


def decode_png16(path: Path) -> torch.Tensor:
    """[C, H, W] uint16 samples of a 16-bit PNG (SYNTHIA's labels), which Pillow reads as 8 bits: torchvision's
    PNG decoder, deprecated in 0.29 for TorchCodec (not a dependency); its warning is silenced for this call only."""
    import warnings

    from torchvision.io import ImageReadMode, decode_png, read_file

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning, module="torchvision")
            return decode_png(read_file(str(path)), ImageReadMode.UNCHANGED)
    except RuntimeError as e:
        raise DataError(f"{path}: not a readable image ({e}); delete or replace the file") from e


def read_image(path: Path) -> torch.Tensor:
    """uint8 [3, H, W]; grayscale, palette and RGBA files are converted to RGB."""
    return decode(path, "RGB")
