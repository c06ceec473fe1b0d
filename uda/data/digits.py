"""USPS and SVHN, read by torchvision's own dataset classes from the files their publishers ship,
and Synthetic Digits (Ganin & Lempitsky's SynNumbers, which torchvision lacks) from its .mat release.

Nothing is downloaded here (no network on the machines this runs on): the files are placed under
``<data root>/usps/`` and ``<data root>/svhn/``, ``<data root>/syndigits/`` (``uda data list`` says where and
from which URL).
USPS and SVHN files are checked against the published MD5 sums torchvision records, unless
``data.verify=false`` (a modified or subsampled copy). SynDigits has no published checksum: its files
are checked for their structure only.
"""
from __future__ import annotations

from pathlib import Path

import torch

from uda.data.files import DataError, sha256

Splits = dict[str, tuple[torch.Tensor, torch.Tensor]]


SYNDIGITS_URL = "http://yaroslav.ganin.net/ (SynNumbers: synth_train_32x32.mat, synth_test_32x32.mat)"
NAMES = ("usps", "svhn", "syndigits")


def expected_files(name: str) -> dict[str, tuple[str, str | None]]:
    """file name -> (published URL, md5 or None) for ``usps``, ``svhn`` (torchvision's tables), ``syndigits``."""
    if name == "syndigits":
        return {"synth_train_32x32.mat": (SYNDIGITS_URL, None), "synth_test_32x32.mat": (SYNDIGITS_URL, None)}
    from torchvision import datasets

    if name == "usps":
        return {fn: (url, md5) for url, fn, md5 in datasets.USPS.split_list.values()}
    if name == "svhn":
        return {fn: (url, md5) for split, (url, fn, md5) in datasets.SVHN.split_list.items() if split != "extra"}
    raise KeyError(name)


def check_files(root: Path, name: str, verify: bool) -> Path:
    """The domain's directory; DataError naming each missing or altered file and where it comes from."""
    d = Path(root) / name
    files = expected_files(name)
    missing = [fn for fn in files if not (d / fn).is_file()]
    if missing:
        where = "; ".join(f"{d / fn} (from {files[fn][0]})" for fn in missing)
        raise DataError(f"{name}: missing {where}. Download them elsewhere and copy them there, "
                        f"or set data.root to a directory that has {name}/")
    if verify:
        for fn, (_, md5) in files.items():
            if md5 is None:  # nothing published to compare with
                continue
            got = sha256(d / fn, algorithm="md5")
            if got != md5:
                raise DataError(f"checksum mismatch for {d / fn}: md5 {got}, the published file has {md5}; "
                                f"replace it, or pass data.verify=false to use this copy as it is")
    return d


def load_usps(root: Path, verify: bool = True) -> Splits:
    """USPS (Hull 1994; the libsvm bz2 release): 7291 train / 2007 test, 16x16 grayscale, uint8."""
    from torchvision.datasets import USPS

    d = check_files(root, "usps", verify)
    out = {}
    for split in ("train", "test"):
        try:
            ds = USPS(str(d), train=split == "train", download=False)
        except (OSError, ValueError, EOFError) as e:
            raise DataError(f"usps: cannot parse {d} ({split}): {e}") from e
        out[split] = (torch.from_numpy(ds.data).unsqueeze(1).contiguous(), torch.tensor(ds.targets, dtype=torch.long))
    return out


def load_svhn(root: Path, verify: bool = True) -> Splits:
    """SVHN cropped digits (Netzer et al. 2011, the .mat release): 73257 train / 26032 test, 32x32 RGB."""
    from torchvision.datasets import SVHN

    class _SVHN(SVHN):
        def _check_integrity(self) -> bool:  # done by check_files (honouring data.verify)
            return True

    d = check_files(root, "svhn", verify)
    out = {}
    for split in ("train", "test"):
        try:
            ds = _SVHN(str(d), split=split, download=False)
        except (OSError, ValueError, KeyError) as e:
            raise DataError(f"svhn: cannot parse {d} ({split}): {e}") from e
        out[split] = (torch.from_numpy(ds.data).contiguous(), torch.from_numpy(ds.labels).long())
    return out


def load_syndigits(root: Path, verify: bool = True) -> Splits:
    """Synthetic Digits (Ganin & Lempitsky 2015's SynNumbers, the 32x32 .mat release): ~479k train / 9553 test.

    Same layout as SVHN's .mat files (``X``: 32 x 32 x 3 x N uint8, ``y``: N x 1); labels are 0..9
    (a copy that writes the digit 0 as 10, SVHN's convention, is mapped back). torchvision has no
    class for it, so the file is read with ``scipy.io.loadmat`` as torchvision's SVHN does.
    """
    from scipy.io import loadmat

    d = check_files(root, "syndigits", verify)
    out = {}
    for split in ("train", "test"):
        path = d / f"synth_{split}_32x32.mat"
        try:
            mat = loadmat(path, variable_names=["X", "y"])
            x, y = mat["X"], mat["y"].reshape(-1).astype("int64")
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DataError(f"syndigits: cannot parse {path} (expected variables X: 32x32x3xN uint8, y: Nx1): "
                            f"{e}") from e
        if x.ndim != 4 or x.shape[2] != 3 or x.shape[3] != len(y) or x.dtype.kind != "u":
            raise DataError(f"syndigits: {path} has X of shape {x.shape} ({x.dtype}) for {len(y)} labels; "
                            f"expected 32 x 32 x 3 x N uint8")
        if (y == 10).any() and not (y == 0).any():
            y[y == 10] = 0
        out[split] = (torch.from_numpy(x.transpose(3, 2, 0, 1).copy()), torch.from_numpy(y))
    return out
