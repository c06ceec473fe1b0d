"""Classification domains read from image files at each step, never held in memory (Office-Home, VisDA-2017,
DomainNet, your own list files): the sample lists, their readers and the ``FileDomain`` they make.

Two ways to name the images of a split:

* a class-folder tree, ``<folder>/<class>/*.jpg`` (torchvision's ImageFolder layout; Office-Home's release):
  classes are the sub-folder names, sorted, labels their positions;
* a list file, one ``relative/path.jpg label`` per line (VisDA-2017's ``image_list.txt``, DomainNet's
  ``<domain>_train.txt``, Transfer-Learning-Library's ``image_list/*.txt``): paths relative to a base folder,
  integer labels; a class is named after the folder its files sit in when they all share one, else its label.

An item is decoded (torchvision), turned to the pair's channel count and resized to ``size`` x ``size``: the
size a pair stores its images at (``data.load_size``), from which the trainer takes its crop per image, random
+ flip for training, central for evaluation, exactly as for the in-memory domains.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from uda.data.domain import FileDomain
from uda.data.files import DataError, read_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
LIST_FORMAT = "one 'relative/path.jpg label' per line"
# the seed of the fixed draws below (held-out validation images, a capped test split): a
# property of the data, the same for every run seed, so every run of a pair selects on and
# reports the same images
SPLIT_SEED = 0


@dataclass(frozen=True)
class Samples:
    """The image files of one split, their labels and the class names (label -> name)."""

    files: tuple[Path, ...]
    labels: tuple[int, ...]
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.files)

    def take(self, idx) -> Samples:
        return Samples(tuple(self.files[i] for i in idx), tuple(self.labels[i] for i in idx), self.classes)


@dataclass(frozen=True)
class FileSplits:
    """What a file-backed classification domain's reader returns: its train and test samples."""

    train: Samples
    test: Samples


def scan_folder(folder: Path, *, what: str) -> Samples:
    """The images of a class-folder tree ``folder/<class>/*``, classes sorted by name."""
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir()) if folder.is_dir() else []
    if not classes:
        raise DataError(f"{what}: no class folders in {folder} (expected {folder}/<class>/*.jpg)")
    files, labels = [], []
    for label, name in enumerate(classes):
        found = sorted(f for f in (folder / name).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        files += found
        labels += [label] * len(found)
    if not files:
        raise DataError(f"{what}: {len(classes)} class folders in {folder} but no images "
                        f"({', '.join(IMAGE_SUFFIXES)})")
    return Samples(tuple(files), tuple(labels), tuple(classes))


def read_list(file: Path, *, base: Path, what: str) -> Samples:
    """The images a list file names (paths relative to ``base``); DataError for a missing or malformed list,
    or for images it names that are not on disk (the count and the first one)."""
    if not file.is_file():
        raise DataError(f"{what}: missing list file {file} ({LIST_FORMAT}, paths relative to {base})")
    files, labels = [], []
    for n, line in enumerate(file.read_text().splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        parts = text.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].isdigit():
            raise DataError(f"{file}:{n}: expected {LIST_FORMAT} with a label >= 0, got {text!r}")
        files.append(base / parts[0])
        labels.append(int(parts[1]))
    if not files:
        raise DataError(f"{what}: the list file {file} names no images ({LIST_FORMAT})")
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise DataError(f"{what}: {len(missing)} of the {len(files)} images in {file} are missing, first {missing[0]}")
    return Samples(tuple(files), tuple(labels), class_names(files, labels))


def class_names(files: list[Path], labels: list[int]) -> tuple[str, ...]:
    """Label -> the folder its images sit in, where every image of the label shares one folder name and no
    two labels share it; else the label itself ("0", "1", ...)."""
    folders: dict[int, set[str]] = {}
    for f, y in zip(files, labels):
        folders.setdefault(y, set()).add(f.parent.name)
    names = [next(iter(folders[y])) if len(folders.get(y, ())) == 1 else str(y) for y in range(max(labels) + 1)]
    return tuple(names) if len(set(names)) == len(names) else tuple(map(str, range(max(labels) + 1)))


def fixed_draw(n: int, k: int) -> list[int]:
    """``k`` of ``range(n)``, the same for every run (``SPLIT_SEED``), in sorted order."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED))
    return sorted(perm[:k].tolist())


class ImageFiles(Dataset):
    """Item ``i``: (uint8 [channels, size, size] image, int64 label), decoded from its file at each call."""

    def __init__(self, samples: Samples, *, size: int, channels: int):
        self.samples, self.size, self.channels = samples, size, channels

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        from torchvision.transforms.v2 import functional as TF

        x = read_image(self.samples.files[i])  # RGB (grayscale files are repeated by the decoder)
        if self.channels == 1:
            x = TF.rgb_to_grayscale(x)
        if tuple(x.shape[-2:]) != (self.size, self.size):
            x = TF.resize(x, [self.size, self.size], antialias=True)
        return x, torch.tensor(self.samples.labels[i], dtype=torch.long)

    def __repr__(self) -> str:
        return f"ImageFiles({len(self)} images, {self.size}x{self.size}x{self.channels})"


def file_domain(name: str, splits: FileSplits, *, size: int, channels: int, val_size: int, train_subset: int = 0,
                test_subset: int = 0) -> FileDomain:
    """A ``FileDomain`` of ``splits``: ``val_size`` training images (at most a fifth; a fixed draw, so that a
    folder sorted by class gives every class its share) held out in memory for label-free selection."""
    train, test = splits.train, splits.test
    if train_subset:
        train = train.take(range(min(train_subset, len(train))))
    if test_subset:
        test = test.take(range(min(test_subset, len(test))))
    n_val = min(val_size, len(train) // 5)
    val = None
    if n_val:
        held = fixed_draw(len(train), n_val)
        kept = sorted(set(range(len(train))) - set(held))
        val_files = ImageFiles(train.take(held), size=size, channels=channels)
        items = [val_files[i] for i in range(len(val_files))]
        val = (torch.stack([x for x, _ in items]), torch.stack([y for _, y in items]))
        train = train.take(kept)
    return FileDomain(
        name,
        ImageFiles(train, size=size, channels=channels),
        ImageFiles(test, size=size, channels=channels),
        classes=train.classes,
        val=val,
        test_batch_size=None,
    )
