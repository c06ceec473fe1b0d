"""Office-Home, VisDA-2017 and DomainNet in their releases' layouts under the data root, read from files.

* Office-Home (Venkateswara et al., CVPR 2017; 65 classes): ``officehome/{Art,Clipart,Product,Real_World}/
  <class>/*.jpg``. As for Office-31, the protocol has no split: train and test are the whole domain.
* VisDA-2017 classification (Peng et al. 2017; 12 classes): ``visda17/train/`` (synthetic renderings, the source)
  and ``visda17/validation/`` (real photographs, the target), each ``<class>/*.jpg`` with the release's
  ``image_list.txt`` (``class/file.jpg label``) beside it; the list is what is read. The target is trained on
  (unlabelled) and tested on whole; the source's test split is a fixed draw of ``VISDA_SOURCE_TEST`` of its
  images (the protocol reports the target only, and 152k source images per evaluation would dominate a run).
* DomainNet (Peng et al., ICCV 2019; 345 classes): ``domainnet/<domain>/<class>/*.jpg`` with the release's
  ``domainnet/<domain>_train.txt`` and ``<domain>_test.txt`` (``<domain>/<class>/file.jpg label``).
  ``data.list_suffix`` reads ``<domain>_train<suffix>.txt`` instead: the 126-class subset (Saito et al. 2019)
  from lists the user supplies, whose labels run 0..125 (``data.num_classes`` 0 takes the count from them).

No checksums are published for these: ``uda data verify`` checks the layout and that every listed image exists.
"""
from __future__ import annotations

from pathlib import Path

from uda.data.files import DataError
from uda.data.image_files import FileSplits, fixed_draw, read_list, scan_folder
from uda.data.published import PUBLISHED as WHERE

OFFICEHOME = {"art": "Art", "clipart": "Clipart", "product": "Product", "realworld": "Real_World"}
OFFICEHOME_CLASSES = 65
VISDA = {"train": "train", "validation": "validation"}  # domain -> folder: source renderings, target photos
VISDA_CLASSES = 12
VISDA_SOURCE_TEST = 2000
DOMAINNET = ("clipart", "infograph", "painting", "quickdraw", "real", "sketch")
DOMAINNET_CLASSES = 345



# ---------- Office-Home
def officehome_folder(root: Path, name: str) -> Path:
    return Path(root) / "officehome" / OFFICEHOME[name]


def load_officehome(root: Path, name: str) -> FileSplits:
    folder = officehome_folder(root, name)
    if not folder.is_dir():
        raise DataError(f"officehome/{name}: missing {folder}/<class>/*.jpg ({WHERE['officehome']}, unpacked so "
                        f"that {folder} exists)")
    whole = scan_folder(folder, what=f"officehome/{name}")
    return FileSplits(whole, whole)


def describe_officehome(root: Path, name: str, *, strict: bool = False) -> str:
    """What is on disk; ``strict`` (``uda data verify``): DataError unless the release's 65 class folders."""
    whole, folder = load_officehome(root, name).train, officehome_folder(root, name)
    _check(strict, len(whole.classes), OFFICEHOME_CLASSES, f"officehome/{name}: {len(whole.classes)} class folders "
                                                           f"in {folder}")
    return f"{folder}: {len(whole.classes)} class folders, {len(whole)} images"


# ---------- VisDA-2017
def visda_list(root: Path, name: str) -> Path:
    return Path(root) / "visda17" / VISDA[name] / "image_list.txt"


def load_visda17(root: Path, name: str) -> FileSplits:
    lst = visda_list(root, name)
    whole = read_list(lst, base=lst.parent, what=f"visda17/{name} ({WHERE['visda17']})")
    if name == "train" and len(whole) > VISDA_SOURCE_TEST:
        return FileSplits(whole, whole.take(fixed_draw(len(whole), VISDA_SOURCE_TEST)))
    return FileSplits(whole, whole)


def describe_visda17(root: Path, name: str, *, strict: bool = False) -> str:
    """What is listed (every listed image present); ``strict``: DataError unless labels 0..11."""
    whole = load_visda17(root, name).train
    n_classes = max(whole.labels) + 1
    _check(strict, n_classes, VISDA_CLASSES, f"visda17/{name}: labels 0..{n_classes - 1} in {visda_list(root, name)}")
    return f"{visda_list(root, name)}: {len(whole)} images, {n_classes} classes"


# ---------- DomainNet
def domainnet_list(root: Path, name: str, split: str, suffix: str = "") -> Path:
    return Path(root) / "domainnet" / f"{name}_{split}{suffix}.txt"


def load_domainnet(root: Path, name: str, suffix: str = "") -> FileSplits:
    base = Path(root) / "domainnet"
    what = f"domainnet/{name} ({WHERE['domainnet']})"
    return FileSplits(*(read_list(domainnet_list(root, name, split, suffix), base=base, what=what)
                        for split in ("train", "test")))


def describe_domainnet(root: Path, name: str, *, strict: bool = False) -> str:
    """The lists and their images (every listed image present). The class count is not checked, also when
    ``strict``: the lists of the 126-class subset are a DomainNet too."""
    splits = load_domainnet(root, name)
    return (f"{domainnet_list(root, name, 'train')}: {len(splits.train)} train, {len(splits.test)} test images, "
            f"{max(splits.train.labels) + 1} classes")


def _check(strict: bool, found: int, expected: int, what: str) -> None:
    if strict and found != expected:
        raise DataError(f"{what}; the release has {expected} classes")


def verify(describe, root: Path, name: str) -> str:
    """``uda data verify`` / ``prepare`` (nothing to download): ``describe`` strictly, or a DataError."""
    return f"{describe(root, name, strict=True)}; layout checked (no published checksum)"


def status(describe, root: Path, name: str) -> tuple[str, str]:
    """``uda data list``: ("present", what ``describe`` (a ``describe_*``) finds) or ("missing", what is wrong
    and where the files go)."""
    try:
        return "present", describe(root, name)
    except DataError as e:
        return "missing", str(e)
