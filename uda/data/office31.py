"""Office-31 (Saenko et al., ECCV 2010) in its usual layout: ``<root>/office31/<domain>/images/<class>/*.jpg``.

The standard protocol has no split: train (labelled source / unlabelled target) and test are the whole
domain. There are no published checksums: ``uda data verify`` counts the class folders and images.
"""
from __future__ import annotations

from pathlib import Path

from uda.data.files import DataError

SOURCE = "domain_adaptation_images.tar.gz (Saenko et al. 2010), unpacked so that"
CLASSES = 31


def folder(root: Path, name: str) -> Path:
    return Path(root) / "office31" / name / "images"


def load_office(root: Path, name: str, *, size: int):
    """({"train": (x, y), "test": (x, y)}, class names): both splits the whole domain, images stored at
    ``size`` x ``size``."""
    from uda.data.custom import read_folder

    images = folder(root, name)
    if not images.is_dir():
        raise DataError(f"office31/{name}: missing {images}/<class>/*.jpg (the Office-31 release, "
                        f"domain_adaptation_images.tar.gz, unpacked into {Path(root) / 'office31'})")
    x, y, classes = read_folder(images, size=size)
    return {"train": (x, y), "test": (x, y)}, classes


def status(root: Path, name: str) -> tuple[str, str]:
    images = folder(root, name)
    classes = [p for p in images.iterdir() if p.is_dir()] if images.is_dir() else []
    if classes:
        return "present", f"{images} ({len(classes)} class folders)"
    return "missing", f"{images}/<class>/*.jpg; from {SOURCE} {Path(root) / 'office31'}/{name}/images exists"


def verify(root: Path, name: str) -> str:
    """The class folders and image count, or where the files go."""
    images = folder(root, name)
    if not images.is_dir():
        raise DataError(f"office31/{name}: missing {images}/<class>/*.jpg; from {SOURCE} {images} exists")
    classes = sorted(p.name for p in images.iterdir() if p.is_dir())
    n = sum(1 for c in classes for f in (images / c).iterdir() if f.is_file())
    if len(classes) != CLASSES:
        raise DataError(f"office31/{name}: {len(classes)} class folders in {images}, the release has {CLASSES}")
    return f"{name}: {CLASSES} class folders, {n} images in {images} (no published checksum)"
