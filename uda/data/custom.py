"""Your own domains: an ImageFolder tree or an .npz file, read into uint8 tensors, or a list file read from
files at each step.

- ImageFolder (torchvision's class): ``<path>/train/<class>/*.png|jpg...`` and ``<path>/test/<class>/...``;
  classes are the sub-folder names, sorted.
- ``.npz`` with ``x_train``, ``y_train``, ``x_test``, ``y_test``: uint8 images N x H x W (grayscale) or
  N x H x W x C (C = 1 or 3), integer labels. A target domain may omit ``y_train`` (never used).
- a list file ``<path>.txt``: one ``relative/path.jpg label`` per line, paths relative to the list's folder
  (the format of DomainNet and Transfer-Learning-Library); ``data.<role>.test_path`` names the test split's
  list ("" = the same list). See ``uda.data.image_files``.
Images are resized to the pair's size as they are read (torchvision's resize, antialiased).
"""
from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import torch

from uda.data.files import DataError

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
UNLABELLED = -1  # a target train split without labels
# what numpy raises for a damaged .npz, at np.load or when a member is read
NPZ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)


def load_npz(path: Path, *, role: str) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], list[str] | None]:
    import numpy as np

    try:
        npz = np.load(path, allow_pickle=False)
        if not hasattr(npz, "files"):  # a single .npy array
            raise DataError(f"{path}: one array, not an .npz archive with {', '.join(NPZ_KEYS)}")
        with npz:
            have = list(npz.files)
            data = {k: npz[k] for k in NPZ_KEYS if k in have}  # reads the members: a damaged one fails here
    except NPZ_ERRORS as e:
        raise DataError(f"{path}: not a readable .npz file ({type(e).__name__}: {e}); replace the file") from e
    optional = {"y_train"} if role == "target" else set()
    missing = [k for k in NPZ_KEYS if k not in data and k not in optional]
    if missing:
        raise DataError(
            f"{path}: missing key(s) {', '.join(missing)}; an .npz domain needs {', '.join(NPZ_KEYS)}"
            f"{' (y_train optional for a target)' if role == 'target' else ''}; it has {', '.join(have) or 'none'}"
        )
    splits, shapes = {}, {}
    for split in ("train", "test"):
        x = data[f"x_{split}"]
        if x.dtype != np.uint8:
            raise DataError(f"{path}: x_{split} must be uint8 images (0-255), got dtype {x.dtype}")
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim != 4 or x.shape[-1] not in (1, 3):
            raise DataError(
                f"{path}: x_{split} must be N x H x W or N x H x W x C with C = 1 or 3, got shape {x.shape}"
            )
        shapes[split] = x.shape[1:]
        if f"y_{split}" in data:
            y = torch.from_numpy(data[f"y_{split}"].astype("int64")).reshape(-1)
            if len(y) != len(x):
                raise DataError(f"{path}: y_{split} has {len(y)} labels for {len(x)} images")
            if len(y) and int(y.min()) < 0:
                raise DataError(f"{path}: y_{split} has a negative label {int(y.min())}")
        else:
            y = torch.full((len(x),), UNLABELLED, dtype=torch.long)
        splits[split] = (torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))), y)
    if shapes["train"] != shapes["test"]:
        raise DataError(f"{path}: images of different sizes: x_train is {shapes['train']} (H x W x C) but x_test is "
                        f"{shapes['test']}")
    return splits, None


def read_folder(folder: Path, *, size: int | None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """All images of an ImageFolder tree (torchvision's class) as uint8 N x C x H x W, resized to
    ``size`` x ``size`` when given; with labels and the class names."""
    from torchvision import datasets
    from torchvision.transforms.v2 import functional as TF

    try:
        ds = datasets.ImageFolder(str(folder))
    except (FileNotFoundError, RuntimeError) as e:
        raise DataError(f"{folder}: {e}") from e
    xs = []
    for file, _ in ds.samples:
        try:
            img = TF.pil_to_tensor(ds.loader(file))  # RGB uint8 C x H x W
        except (OSError, ValueError) as e:  # PIL's UnidentifiedImageError and truncated files are OSErrors
            raise DataError(f"{file}: not a readable image ({type(e).__name__}: {e}); delete or replace the "
                            f"file") from e
        if size is not None and img.shape[-2:] != (size, size):
            img = TF.resize(img, [size, size], antialias=True)
        xs.append(img)
    if size is None and len({tuple(x.shape) for x in xs}) > 1:
        raise DataError(f"{folder}: images of different sizes; set data.image_size to resize them")
    return torch.stack(xs), torch.tensor(ds.targets, dtype=torch.long), ds.classes


def load_image_folder(
    path: Path, *, size: int | None
) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], list[str]]:
    splits, classes = {}, None
    for split in ("train", "test"):
        folder = path / split
        if not folder.is_dir():
            raise DataError(f"{path}: an ImageFolder domain needs {folder}/<class>/<images>")
        x, y, names = read_folder(folder, size=size)
        if classes is None:
            classes = names
        elif names != classes:
            raise DataError(f"{path}: train/ has classes {classes} but test/ has {names}")
        splits[split] = (x, y)
    return splits, classes


def load_list(path: Path, test_path: str, *, role: str):
    """A list-file domain, read from files: train from ``path``, test from ``test_path`` ("" = the same list:
    the whole domain, the Office protocol); paths in each list are relative to the list's folder."""
    from uda.data.image_files import FileSplits, read_list

    train = read_list(path, base=path.parent, what=f"data.{role}.path")
    if not test_path:
        return FileSplits(train, train)
    test_file = Path(test_path).expanduser()
    return FileSplits(train, read_list(test_file, base=test_file.parent, what=f"data.{role}.test_path"))


def load_custom(path_str: str, *, role: str, size: int | None, test_path: str = ""):
    """(splits, class names or None) for a custom domain at ``path_str`` held in memory, or
    ``FileSplits`` for a list file (read from files at each step)."""
    path = Path(path_str).expanduser()
    if not path.exists():
        raise DataError(f"data.{role}.path: {path} does not exist (an ImageFolder directory, an .npz file or a "
                        f".txt list file)")
    if test_path and path.suffix != ".txt":
        raise DataError(f"data.{role}.test_path is for list files; {path} is not one (its test split is its own)")
    if path.is_dir():
        return load_image_folder(path, size=size)
    if path.suffix == ".npz":
        return load_npz(path, role=role)
    if path.suffix == ".txt":
        return load_list(path, test_path, role=role)
    raise DataError(f"data.{role}.path: {path} is neither a directory (ImageFolder), an .npz file nor a .txt list")


def num_classes(splits, classes: list[str] | None) -> int:
    if classes is not None:
        return len(classes)
    labels = torch.cat([y for _, y in splits.values()])
    labels = labels[labels != UNLABELLED]
    return int(labels.max()) + 1 if labels.numel() else 0
