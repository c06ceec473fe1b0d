"""USPS and SVHN, read by torchvision's own dataset classes from the files their publishers ship.

Nothing is downloaded here (no network on the machines this runs on): the files are placed under
``<data root>/usps/`` and ``<data root>/svhn/`` (``uda data list`` says where and from which URL).
Files are checked against the published MD5 sums torchvision records, unless ``data.verify=false``
(a modified or subsampled copy).
"""
from __future__ import annotations

from pathlib import Path

import torch

from uda.data.common import DataError, sha256

Splits = dict[str, tuple[torch.Tensor, torch.Tensor]]


def expected_files(name: str) -> dict[str, tuple[str, str]]:
    """file name -> (published URL, md5) for ``usps`` or ``svhn`` (from torchvision's tables)."""
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
