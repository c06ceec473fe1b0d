"""USPS, SVHN and Synthetic Digits read from their releases (fixture files in the real formats): checksums,
missing files named with their source, each digits pair meets one network and trains end to end."""
import json

import numpy as np
import pytest
import torch

from helpers import make_cfg, run_cli, write_usps
from uda.data.digits import load_svhn, load_syndigits, load_usps
from uda.data.files import DataError
from uda.data.pairs import build_pair


def write_svhn(d, n_train=30, n_test=20, *, drop_key=None):
    """The .mat release: X is 32 x 32 x 3 x N uint8, y is N x 1 with 10 standing for the digit 0."""
    from scipy.io import savemat

    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for fn, n in (("train_32x32.mat", n_train), ("test_32x32.mat", n_test)):
        data = {"X": rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8),
                "y": (np.arange(n) % 10 + 1).reshape(n, 1).astype(np.uint8)}
        data.pop(drop_key, None)
        savemat(d / fn, data)


def write_syndigits(d, n_train=30, n_test=20, *, zero_as_ten=False, gray=False):
    """Ganin's SynNumbers .mat files: SVHN's layout (X 32 x 32 x 3 x N uint8, y N x 1), labels 0..9."""
    from scipy.io import savemat

    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2)
    for fn, n in (("synth_train_32x32.mat", n_train), ("synth_test_32x32.mat", n_test)):
        y = np.arange(n) % 10
        if zero_as_ten:
            y[y == 0] = 10
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        x[0, 0, 0, :] = np.arange(n)  # pixel (row 0, col 0, red) tells the images apart after transposing
        if gray:  # a wrong layout: no channel axis
            x = x[:, :, 0, :]
        savemat(d / fn, {"X": x, "y": y.reshape(n, 1).astype(np.uint8)})


@pytest.fixture()
def root(tmp_path, mnist_root):
    (tmp_path / "MNIST").symlink_to(mnist_root / "MNIST")
    write_usps(tmp_path / "usps")
    write_svhn(tmp_path / "svhn")
    write_syndigits(tmp_path / "syndigits")
    return tmp_path


def test_usps_reads_the_libsvm_release(root):
    s = load_usps(root, verify=False)
    x, y = s["train"]
    assert x.shape == (40, 1, 16, 16) and x.dtype == torch.uint8 and s["test"][0].shape == (20, 1, 16, 16)
    assert y.tolist()[:11] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0]  # libsvm labels 1..10 -> 0..9
    assert x[0, 0, 0, 0] == 0 and x[1, 0, 0, 0] == 255  # -1 -> 0, +1 -> 255


def test_svhn_reads_the_mat_release_and_maps_10_to_0(root):
    s = load_svhn(root, verify=False)
    x, y = s["train"]
    assert x.shape == (30, 3, 32, 32) and x.dtype == torch.uint8
    assert y.tolist()[:10] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]


def test_syndigits_reads_the_mat_release(root, tmp_path):
    s = load_syndigits(root)  # no published checksum: verify=True checks presence and structure only
    x, y = s["train"]
    assert x.shape == (30, 3, 32, 32) and x.dtype == torch.uint8 and s["test"][0].shape == (20, 3, 32, 32)
    assert y.tolist()[:11] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0]
    assert x[:5, 0, 0, 0].tolist() == [0, 1, 2, 3, 4]  # N x C x H x W from MATLAB's H x W x C x N
    write_syndigits(tmp_path / "ten" / "syndigits", zero_as_ten=True)
    assert load_syndigits(tmp_path / "ten")["train"][1].tolist()[:11] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0]


def test_syndigits_wrong_layout_and_missing_files_are_clear(tmp_path):
    with pytest.raises(DataError, match=r"syndigits/synth_train_32x32.mat \(from http://yaroslav.ganin.net"):
        load_syndigits(tmp_path)
    write_syndigits(tmp_path / "syndigits", gray=True)
    with pytest.raises(DataError, match="expected 32 x 32 x 3 x N uint8"):
        load_syndigits(tmp_path)


def test_files_that_are_not_the_published_ones_fail_the_checksum(root):
    with pytest.raises(DataError, match=r"checksum mismatch for .*usps.*data.verify=false"):
        load_usps(root)


def test_missing_files_name_their_path_and_source(tmp_path):
    with pytest.raises(DataError, match=r"svhn/train_32x32.mat \(from http://ufldl.stanford.edu"):
        load_svhn(tmp_path, verify=False)


def test_a_mat_file_without_its_images_is_one_clear_error(tmp_path):
    write_svhn(tmp_path / "svhn", drop_key="X")
    with pytest.raises(DataError, match="svhn: cannot parse"):
        load_svhn(tmp_path, verify=False)


@pytest.mark.parametrize("pair, shape", [("usps_mnist", (1, 28, 28)), ("mnist_usps", (1, 28, 28)),
                                         ("svhn_mnist", (3, 32, 32)), ("syndigits_svhn", (3, 32, 32))])
def test_pairs_meet_one_network(root, pair, shape):
    cfg = make_cfg(f"data={pair}", f"data.root={root}", "data.verify=false", "data.train_subset=200",
                   "data.test_subset=50")
    source, target, info = build_pair(cfg.data)
    for dom in (source, target):
        assert dom.train_x.shape[1:] == shape and dom.test_x.shape[1:] == shape and dom.train_x.dtype == torch.uint8
        assert dom.val_x.shape[0] >= 1  # a fifth at most is held out
    assert (info.channels, info.image_size) == (shape[0], shape[1])


@pytest.mark.parametrize("pair", ["mnist_usps", "usps_mnist", "svhn_mnist", "syndigits_svhn"])
def test_training_on_each_digits_pair_end_to_end(root, tmp_path, pair):
    run = tmp_path / "run"
    res = run_cli("train", f"data={pair}", f"data.root={root}", "data.verify=false", "+debug=fast",
                  f"hydra.run.dir={run}", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads((run / "summary.json").read_text())["data"] == pair
