"""Your own domains: ImageFolder trees and .npz files, harmonised into one pair; bad input (a missing
key, an empty folder, a corrupt image, a truncated archive) is one error naming the file, exit status 2."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import cli, make_cfg, run_cli
from uda.data.files import DataError
from uda.data.pairs import build_pair
from uda.schema import ConfigError


def write_npz(path, *, classes=3, size=28, n_train=60, n_test=30, drop=(), test_size=None, channels=None):
    rng = np.random.default_rng(0)
    shape = (size, size) if channels is None else (size, size, channels)
    tshape = shape if test_size is None else (test_size, test_size) + shape[2:]
    data = {"x_train": rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
            "y_train": np.arange(n_train) % classes,
            "x_test": rng.integers(0, 256, (n_test, *tshape), dtype=np.uint8),
            "y_test": np.arange(n_test) % classes}
    np.savez(path, **{k: v for k, v in data.items() if k not in drop})
    return path


def write_folder(root, *, classes=("a", "b", "c"), per_class=(6, 3), size=20, empty=False):
    rng = np.random.default_rng(1)
    for split, n in zip(("train", "test"), per_class):
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(0 if empty else n):
                Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
                    root / split / c / f"{i}.png"
                )
    return root


def cfg_for(src, tgt, *extra):
    return make_cfg("data=custom", f"data.source.path={src}", f"data.target.path={tgt}", *extra)


def test_npz_grayscale_source_and_rgb_folder_target_meet_one_network(tmp_path):
    src = write_npz(tmp_path / "a.npz")
    tgt = write_folder(tmp_path / "b")
    source, target, info = build_pair(cfg_for(src, tgt).data)
    # size and classes from the source, channels from the richer domain: the RGB target is not turned grey
    assert (info.channels, info.image_size, info.num_classes) == (3, 28, 3)
    assert info.mean == (0.5,) * 3 and info.std == (0.5,) * 3
    assert target.train_x.shape[1:] == (3, 28, 28) and target.train_x.dtype == torch.uint8
    assert source.train_x.shape[1:] == (3, 28, 28)  # the grayscale source repeated to RGB
    assert torch.equal(source.train_x[:, 0], source.train_x[:, 2])
    assert source.train_x.shape[0] + source.val_x.shape[0] == 60 and target.test_x.shape[0] == 9
    grey = build_pair(cfg_for(src, tgt, "data.channels=1", "data.image_size=32").data)[1]
    assert grey.train_x.shape[1:] == (1, 32, 32) and grey.train_x.shape[1:] == grey.test_x.shape[1:]


def test_target_npz_may_omit_train_labels(tmp_path):
    src = write_npz(tmp_path / "a.npz")
    tgt = write_npz(tmp_path / "b.npz", drop=("y_train",))
    _, target, _ = build_pair(cfg_for(src, tgt).data)
    assert (target.train_y == -1).all() and (target.test_y >= 0).all()
    with pytest.raises(DataError, match="missing key"):
        build_pair(cfg_for(tgt, src).data)  # a source needs its labels


def test_missing_npz_key_names_the_key_and_the_required_ones(tmp_path):
    src = write_npz(tmp_path / "a.npz", drop=("x_test",))
    with pytest.raises(
        DataError, match=r"a.npz: missing key\(s\) x_test; an .npz domain needs x_train, y_train, x_test, y_test"
    ):
        build_pair(cfg_for(src, write_folder(tmp_path / "b")).data)


def test_empty_image_folder_is_one_clear_error(tmp_path):
    with pytest.raises(DataError, match="train"):
        build_pair(cfg_for(write_npz(tmp_path / "a.npz"), write_folder(tmp_path / "b", empty=True)).data)


def test_class_count_mismatch_names_both_domains(tmp_path):
    src = write_folder(tmp_path / "a", classes=("a", "b", "c"))
    tgt = write_folder(tmp_path / "b", classes=("a", "b", "c", "d"))
    with pytest.raises(ConfigError, match=r"source .*a has 3 classes, target .*b has 4"):
        build_pair(cfg_for(src, tgt).data)


def test_images_of_the_wrong_size_are_named(tmp_path):
    src = write_npz(tmp_path / "a.npz", test_size=32)
    with pytest.raises(DataError, match="x_train is .*28, 28.* but x_test is .*32, 32"):
        build_pair(cfg_for(src, write_folder(tmp_path / "b")).data)
    bad = tmp_path / "c.npz"
    np.savez(bad, x_train=np.zeros((4, 8, 8), np.float32), y_train=np.zeros(4), x_test=np.zeros((2, 8, 8), np.float32),
             y_test=np.zeros(2))
    with pytest.raises(DataError, match="uint8"):
        build_pair(cfg_for(bad, write_folder(tmp_path / "b")).data)


def test_custom_needs_both_paths(tmp_path):
    res = cli("train", "data=custom", f"data.source.path={tmp_path}", f"hydra.run.dir={tmp_path / 'r'}")
    assert res.returncode != 0 and "data.target.path" in res.stderr and "Traceback" not in res.stderr


def test_training_on_a_custom_pair_end_to_end(tmp_path):
    src = write_npz(tmp_path / "a.npz", size=16, channels=3, n_train=80)
    tgt = write_folder(tmp_path / "b", size=16)
    run = tmp_path / "run"
    res = run_cli("train", "data=custom", f"data.source.path={src}", f"data.target.path={tgt}",
                  "trainer.max_steps=4", "trainer.batch_size=8", "trainer.eval_every=2", "trainer.checkpoint_every=2",
                  "trainer.progress=none", f"hydra.run.dir={run}", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads((run / "summary.json").read_text())["data"] == "custom"


def assert_one_line_error(tmp_path, domain, start):
    """``uda train`` on ``domain`` as source and target: exit status 2, no traceback, a last line ``start...``."""
    res = run_cli("train", "data=custom", f"data.source.path={domain}", f"data.target.path={domain}",
                  f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith(start)


@pytest.mark.slow  # a CLI run per case
def test_a_corrupt_image_in_an_image_folder_is_one_line_naming_it(tmp_path):
    folder = write_folder(tmp_path / "imgs")
    bad = folder / "train" / "b" / "1.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(DataError, match="1.png: not a readable image"):
        build_pair(cfg_for(folder, folder).data)
    assert_one_line_error(tmp_path, folder, f"uda: error: {bad}: not a readable image")


@pytest.mark.slow  # a CLI run per case
@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_a_damaged_npz_is_one_line_naming_it(tmp_path, damage):
    path = write_npz(tmp_path / "dom.npz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"PK\x03\x04" + b"\x00" * 64)
    with pytest.raises(DataError, match="dom.npz: not a readable .npz file"):
        build_pair(cfg_for(path, path).data)
    assert_one_line_error(tmp_path, path, f"uda: error: {path}: not a readable .npz file")
