"""GTA5, SYNTHIA-RAND-CITYSCAPES and Cityscapes in their official on-disk layouts, read lazily from files.

Under the data root (nothing is downloaded; the notes of ``uda.data.catalog.DOMAINS`` say where each comes from):
``gta5/images/NNNNN.png`` + ``gta5/labels/NNNNN.png`` (8-bit palette PNGs, index = Cityscapes label id);
``synthia/RGB/*.png`` + ``synthia/GT/LABELS/*.png`` (16-bit PNGs, class id in the first (R) channel, instance
ids in the second); ``cityscapes/leftImg8bit/{train,val}/<city>/<name>_leftImg8bit.png`` +
``cityscapes/gtFine/{train,val}/<city>/<name>_gtFine_labelIds.png``.

Splits: GTA5 and SYNTHIA have no official test split, so the last ``min(500, n // 5)`` images by name are
held out as the test split and never trained on. Cityscapes trains on ``train`` and tests on ``val`` with
labels at full size. A target's train labels are never read (they may be absent): its items carry an
all-``IGNORE`` label. Labels are train ids of the 19-class Cityscapes protocol or of the 16 / 13 classes of
the SYNTHIA -> Cityscapes protocols (in Cityscapes train-id order); ``IGNORE`` (255) everywhere else.
"""
from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from cityscapesscripts.helpers.labels import labels as CITYSCAPES_LABELS
from torch.utils.data import Dataset

from uda.data.domain import FileDomain
from uda.data.files import DataError, decode, decode_png16, read_image
from uda.errors import ConfigError

IGNORE = 255
HELD_OUT = 500  # GTA5 / SYNTHIA test split: the last 500 images by name (at most a fifth of the folder)
ROLES = ("source", "target")

CITYSCAPES_CLASSES = tuple(lab.name for lab in sorted(
    (lab for lab in CITYSCAPES_LABELS if 0 <= lab.trainId < IGNORE), key=lambda lab: lab.trainId))
SYNTHIA_16 = tuple(c for c in CITYSCAPES_CLASSES if c not in ("terrain", "truck", "train"))
SYNTHIA_13 = tuple(c for c in SYNTHIA_16 if c not in ("wall", "fence", "pole"))
PROTOCOLS = {19: CITYSCAPES_CLASSES, 16: SYNTHIA_16, 13: SYNTHIA_13}

# SYNTHIA-RAND-CITYSCAPES class ids (its README) -> Cityscapes class names. Not mapped, so
# ignored: 0 void, 13 parking-slot, 14 road-work, 22 lanemarking.
SYNTHIA_NAMES = {1: "sky", 2: "building", 3: "road", 4: "sidewalk", 5: "fence", 6: "vegetation", 7: "pole",
                 8: "car", 9: "traffic sign", 10: "person", 11: "bicycle", 12: "motorcycle",
                 15: "traffic light", 16: "terrain", 17: "rider", 18: "truck", 19: "bus", 20: "train", 21: "wall"}

def _classes(num_classes: int, valid: tuple[int, ...], what: str) -> tuple[str, ...]:
    if num_classes not in valid:
        raise ConfigError(f"num_classes={num_classes!r} is not a {what} label protocol; valid: "
                          f"{', '.join(map(str, valid))}")
    return PROTOCOLS[num_classes]


def class_names(name: str, num_classes: int) -> tuple[str, ...]:
    """The class names, in train-id order, of domain ``name`` under the ``num_classes`` protocol."""
    _known(name, ConfigError)
    return _classes(num_classes, (16, 13) if name == "synthia" else (19, 16, 13), name)


def _lut(id_to_name: dict[int, str], classes: tuple[str, ...]) -> torch.Tensor:
    lut = torch.full((256,), IGNORE, dtype=torch.uint8)
    for label_id, name in id_to_name.items():
        if name in classes:
            lut[label_id] = classes.index(name)
    return lut


def cityscapes_lut(num_classes: int) -> torch.Tensor:
    """uint8 [256]: Cityscapes (and GTA5) label id -> train id of the 19/16/13-class protocol, else 255."""
    classes = _classes(num_classes, (19, 16, 13), "Cityscapes/GTA5")
    return _lut({lab.id: lab.name for lab in CITYSCAPES_LABELS if 0 <= lab.id < 256}, classes)


def synthia_lut(num_classes: int) -> torch.Tensor:
    """uint8 [256]: SYNTHIA-RAND-CITYSCAPES class id -> train id of the 16- or 13-class protocol, else 255."""
    return _lut(SYNTHIA_NAMES, _classes(num_classes, (16, 13), "SYNTHIA"))


def read_label_ids(path: Path) -> torch.Tensor:
    """[1, H, W] label ids of a Cityscapes ``*_labelIds.png`` or a GTA5 label (8-bit gray or palette PNG:
    decoded UNCHANGED, a palette PNG gives its indices, which are the ids)."""
    ids = decode(path, "UNCHANGED")
    if ids.shape[0] != 1:
        raise DataError(f"{path}: a label-id PNG has one channel (gray or palette), this one has {ids.shape[0]}; "
                        f"colour-coded label images are not label ids")
    return ids


def read_synthia_ids(path: Path) -> torch.Tensor:
    """[1, H, W] class ids of a SYNTHIA ``GT/LABELS`` 16-bit PNG: its first (R) channel (uint16)."""
    return decode_png16(path)[:1]


class SegFiles(Dataset):
    """Image / label-map pairs read from files at each ``__getitem__`` (nothing is held in memory).

    Item ``i``: (uint8 [3, H, W] image resized to ``image_size`` (bilinear, antialiased), int64 [h, w] train
    ids resized to ``label_size`` (nearest) or at the file's own size when ``label_size`` is None).
    ``labels=None`` is an unlabelled split: every label pixel is ``IGNORE``. Sizes are (height, width).
    """

    def __init__(self, *, name: str, images: list[Path], labels: list[Path] | None, lut: torch.Tensor,
                 read_label: Callable[[Path], torch.Tensor], image_size: tuple[int, int],
                 label_size: tuple[int, int] | None):
        if labels is not None and len(labels) != len(images):
            raise ValueError(f"{name}: {len(images)} images but {len(labels)} label files")
        self.name, self.images, self.labels, self.lut, self.read_label = name, list(images), labels, lut, read_label
        self.image_size, self.label_size = tuple(image_size), None if label_size is None else tuple(label_size)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        from torchvision.transforms.v2 import InterpolationMode
        from torchvision.transforms.v2 import functional as TF

        x = read_image(self.images[i])
        full_size = tuple(x.shape[-2:])
        if full_size != self.image_size:
            x = TF.resize(x, list(self.image_size), interpolation=InterpolationMode.BILINEAR, antialias=True)
        if self.labels is None:
            return x, torch.full(self.label_size or full_size, IGNORE, dtype=torch.long)
        ids = self.read_label(self.labels[i]).long().clamp_(max=len(self.lut) - 1)  # lut[255] = IGNORE
        y = self.lut[ids]  # uint8 [1, h, w] train ids
        if self.label_size is not None and tuple(y.shape[-2:]) != self.label_size:
            y = TF.resize(y, list(self.label_size), interpolation=InterpolationMode.NEAREST_EXACT)
        return x, y[0].long()

    def class_pixels(self, num_classes: int) -> torch.Tensor:
        """int64 [N, K + 1]: the pixels of each train id (last: of none) in each label file at its own size."""
        from uda.data.domain import _label_counts

        if self.labels is None:
            raise ValueError(f"{self.name}: unlabelled, so it has no class statistics")
        return torch.cat([_label_counts(self.lut[self.read_label(p).long().clamp_(max=len(self.lut) - 1)], num_classes)
                          for p in self.labels])

    def __repr__(self) -> str:
        return f"SegFiles({self.name!r}, {len(self)} images, labelled={self.labels is not None})"


def _images(root: Path, folder: Path, pattern: str, name: str, where: str) -> list[Path]:
    files = sorted(folder.glob(pattern)) if folder.is_dir() else []
    if not files:
        raise DataError(f"{name}: no images at {folder / pattern}" + (f"; {where}, unpacked under the data root {root}"
                                                                     if where else ""))
    return files


def _label_files(images: list[Path], label_of: Callable[[Path], Path], name: str) -> list[Path]:
    """The label path of every image; DataError naming the first image whose label file is missing."""
    labels = [label_of(p) for p in images]
    missing = [(img, lab) for img, lab in zip(images, labels) if not lab.is_file()]
    if missing:
        img, lab = missing[0]
        raise DataError(f"{name}: {len(missing)} image(s) without a label file, first {img}: expected {lab}")
    return labels


def _layout(root: Path, name: str, split: str = "", where: str = "") -> tuple[list[Path], Callable[[Path], Path],
                                                                              list[Path]]:
    """A domain's sorted image paths (Cityscapes: of ``split``), the function giving each one's label path,
    and the label files on disk. ``where``: what the files are and where they come from (for errors)."""
    base = Path(root) / name
    if name == "gta5":
        return (_images(root, base / "images", "*.png", name, where), lambda p: base / "labels" / p.name,
                sorted((base / "labels").glob("*.png")))
    if name == "synthia":
        return (_images(root, base / "RGB", "*.png", name, where), lambda p: base / "GT" / "LABELS" / p.name,
                sorted((base / "GT" / "LABELS").glob("*.png")))
    suffix, label_dir = "_leftImg8bit.png", base / "gtFine" / split
    return (_images(root, base / "leftImg8bit" / split, f"*/*{suffix}", name, where),
            lambda p: label_dir / p.parent.name / (p.name[:-len(suffix)] + "_gtFine_labelIds.png"),
            sorted(label_dir.glob("*/*_gtFine_labelIds.png")))


def _load(
    root: Path,
    name: str,
    lut: torch.Tensor,
    read_label: Callable[[Path], torch.Tensor],
    *,
    num_classes: int,
    train_size: tuple[int, int],
    test_size: tuple[int, int],
    role: str,
    where: str,
) -> FileDomain:
    if role not in ROLES:
        raise ConfigError(f"role={role!r}; valid: {', '.join(ROLES)}")
    if name == "cityscapes":  # train / val; val labels stay at full size (the benchmark's protocol)
        (train_x, train_of, _), (test_x, test_of, _) = (
            _layout(root, name, "train", where),
            _layout(root, name, "val", where),
        )
        test_name, test_label_size = "val", None
    else:  # no official split: hold out the last min(500, n // 5) images by name, never trained on
        images, train_of, _ = _layout(root, name, where=where)
        n_test = min(HELD_OUT, len(images) // 5)
        if n_test == 0:
            raise DataError(f"{name}: {len(images)} image(s) in {images[0].parent}; at least 5 are needed to "
                            f"hold out a test split")
        train_x, test_x, test_of = images[:-n_test], images[-n_test:], train_of
        test_name, test_label_size = "test", test_size
    train_y = None if role == "target" else _label_files(train_x, train_of, name)  # a target's are never read
    files = partial(SegFiles, lut=lut, read_label=read_label)
    return FileDomain(
        name, classes=PROTOCOLS[num_classes],
        train=files(name=f"{name}/train", images=train_x, labels=train_y, image_size=train_size, label_size=train_size),
        test=files(name=f"{name}/{test_name}", images=test_x, labels=_label_files(test_x, test_of, name),
                   image_size=test_size, label_size=test_label_size))


# per dataset: (label id -> train id table for num_classes, the label file reader)
READERS: dict[str, tuple[Callable[[int], torch.Tensor], Callable[[Path], torch.Tensor]]] = {
    "gta5": (cityscapes_lut, read_label_ids),  # GTA5's labels are Cityscapes ids
    "synthia": (synthia_lut, read_synthia_ids),
    "cityscapes": (cityscapes_lut, read_label_ids),
}


def _known(name: str, error: type[Exception]) -> None:
    if name not in READERS:
        raise error(f"unknown segmentation domain {name!r}; valid: {', '.join(READERS)}")


def load_seg_domain(name: str, root: Path, *, num_classes: int, train_size: tuple[int, int],
                    test_size: tuple[int, int], role: str, where: str = "") -> FileDomain:
    """GTA5 (19, 16 or 13 classes), SYNTHIA (16 or 13) or Cityscapes (19, 16 or 13) under the data root
    ``root``. GTA5 / SYNTHIA: test = the held-out tail; Cityscapes: train (unlabelled as a target), test = val
    with full-size labels. ``where``: what the files are and where they come from (the domain table's notes),
    for the error a missing folder gives."""
    _known(name, ConfigError)
    lut, read_label = READERS[name]
    return _load(Path(root), name, lut(num_classes), read_label, num_classes=num_classes, train_size=train_size,
                 test_size=test_size, role=role, where=where)


def check_layout(root: Path, name: str, where: str = "") -> str:
    """``uda data verify``: the layout is complete and every image has its label (no pixels are read; no
    checksums are published for these datasets). A one-line summary, or DataError saying what is wrong."""
    _known(name, DataError)
    parts = []
    for split in (("train", "val") if name == "cityscapes" else ("",)):
        images, label_of, labels = _layout(Path(root), name, split, where)
        if labels or split != "train":  # Cityscapes train labels may be absent (an unlabelled target)
            _label_files(images, label_of, name)
            extra = sorted(set(labels) - set(map(label_of, images)))
            if extra:
                raise DataError(f"{name}: {len(images)} images but {len(labels)} label files; {len(extra)} "
                                f"label(s) without an image, first {extra[0]}")
        parts.append(f"{split + ': ' if split else ''}{len(images)} images, {len(labels)} labels")
    return f"{name}: {'; '.join(parts)} in {Path(root) / name} (layout checked; no published checksums)"
