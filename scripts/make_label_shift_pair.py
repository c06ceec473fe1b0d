"""A pair where adaptation should hurt (issue 44): MNIST -> MNIST under label shift, as two .npz domains for
``data=custom``. Both domains are the same grey digits, so there is no covariate shift for an aligner to
remove; only the label marginals differ (source balanced, target mostly 0-4). Aligning the marginal feature
distributions then has to move the target's features of 0-4 onto the source's 5-9 (Zhao et al., ICML 2019,
Theorem 4.3: with different label marginals, invariant features bound the joint error from below).

    python scripts/make_label_shift_pair.py --out /data/mnist_shift
    uda train data=custom data.source.path=/data/mnist_shift/source.npz data.target.path=/data/mnist_shift/target.npz

Source: MNIST train[:30000] and the whole MNIST test set (balanced). Target: MNIST train[30000:] and MNIST
test, each keeping every image of 0-4 and every ``--keep``-th (default 10th) image of 5-9 in file order
(about 91% of the target is 0-4). Deterministic: no random draw.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from uda.data.files import data_root
from uda.data.mnist import load_mnist


def shifted(x: np.ndarray, y: np.ndarray, keep: int) -> tuple[np.ndarray, np.ndarray]:
    """Every image of 0-4 and every ``keep``-th image of each class 5-9 (by position within that class)."""
    rank = np.zeros(len(y), dtype=np.int64)
    for c in range(10):
        idx = np.flatnonzero(y == c)
        rank[idx] = np.arange(len(idx))
    mask = (y < 5) | (rank % keep == 0)
    return x[mask], y[mask]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--root", default="", help="the data root holding MNIST (default: $UDA_DATA or ~/.cache/uda)")
    ap.add_argument("--keep", type=int, default=10, help="keep every keep-th target image of classes 5-9")
    a = ap.parse_args()
    m = load_mnist(data_root(a.root))
    (xtr, ytr), (xte, yte) = ((x.squeeze(1).numpy(), y.numpy()) for x, y in (m["train"], m["test"]))
    a.out.mkdir(parents=True, exist_ok=True)
    np.savez(a.out / "source.npz", x_train=xtr[:30000], y_train=ytr[:30000], x_test=xte, y_test=yte)
    (xt, yt), (xs, ys) = shifted(xtr[30000:], ytr[30000:], a.keep), shifted(xte, yte, a.keep)
    np.savez(a.out / "target.npz", x_train=xt, y_train=yt, x_test=xs, y_test=ys)
    for name, y in (("source train", ytr[:30000]), ("target train", yt), ("target test", ys)):
        share = 100 * np.mean(y < 5)
        print(f"{name}: {len(y)} images, {share:.1f}% of them 0-4")
    print(f"-> {a.out}/source.npz, {a.out}/target.npz")


if __name__ == "__main__":
    main()
