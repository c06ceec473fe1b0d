"""Office-31 in its release layout: whole domains stored at the load size, a missing domain says where
it goes, the six pairs compose and load, `uda data verify` counts the classes, a local ImageNet ResNet,
and DANN with a ResNet end to end."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import cli, make_cfg, run_cli
from uda.data.files import DataError
from uda.data.pairs import Normalize, build_pair
from uda.schema import ConfigError

CLASSES = ("back_pack", "bike", "calculator")


@pytest.fixture()
def office(tmp_path):
    rng = np.random.default_rng(0)
    for dom, (h, w) in (("amazon", (50, 40)), ("webcam", (60, 60))):
        for c in CLASSES:
            d = tmp_path / "office31" / dom / "images" / c
            d.mkdir(parents=True)
            for i in range(4):
                Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(d / f"frame_{i:04d}.jpg")
    return tmp_path


def test_office_domains_are_whole_and_stored_at_load_size(office):
    cfg = make_cfg("data=amazon_webcam", f"data.root={office}", "data.image_size=32", "data.load_size=40",
                   "data.num_classes=3")
    source, target, info = build_pair(cfg.data)
    assert source.train_x.shape == (12, 3, 40, 40) and target.test_x.shape == (12, 3, 40, 40)
    assert torch.equal(source.train_x, source.test_x)  # the protocol: whole domains, no split
    assert info.image_size == 32 and info.mean == (0.485, 0.456, 0.406)
    prepared = Normalize(info.mean, info.std, torch.device("cpu"), crop=32)(source.test_x[:2])
    assert prepared.shape == (2, 3, 32, 32)


def test_missing_office_domain_says_where_it_goes(tmp_path):
    cfg = make_cfg("data=dslr_webcam", f"data.root={tmp_path}")
    with pytest.raises(DataError, match="office31/dslr/images"):
        build_pair(cfg.data)


def test_resnet_loads_local_imagenet_weights(tmp_path):
    from torchvision import models

    from uda.nets import build_backbone

    ref = models.resnet18(weights=None)
    torch.save(ref.state_dict(), tmp_path / "r18.pth")
    cfg = make_cfg("backbone=resnet50", "backbone.depth=18", f"backbone.weights={tmp_path / 'r18.pth'}")
    features, classifier, width = build_backbone(cfg.backbone, in_channels=3, image_size=32, num_classes=31)
    assert width == 256 and classifier.out_features == 31
    assert torch.equal(features[0].conv1.weight, ref.conv1.weight)


def test_resnet_weights_of_another_depth_are_one_error_naming_the_mismatch(tmp_path):
    from torchvision import models

    from uda.nets import build_backbone

    torch.save(models.resnet18(weights=None).state_dict(), tmp_path / "r18.pth")
    bad = make_cfg("backbone=resnet50", "backbone.depth=34", f"backbone.weights={tmp_path / 'r18.pth'}")
    with pytest.raises(ConfigError, match="does not fit this ResNet"):
        build_backbone(bad.backbone, in_channels=3, image_size=32, num_classes=31)


@pytest.mark.slow  # a ResNet run through the CLI
def test_dann_with_a_resnet_on_office_end_to_end(office, tmp_path):
    run = tmp_path / "run"
    res = run_cli("train", "+experiment=dann_office31", "backbone.depth=18", f"data.root={office}",
                  "data.image_size=32", "data.load_size=40", "data.num_classes=3", "trainer.max_steps=2",
                  "trainer.batch_size=4", "trainer.eval_every=2", "trainer.checkpoint_every=2",
                  "trainer.progress=none", f"hydra.run.dir={run}", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["data"] == "amazon_webcam" and 0 <= summary["target_acc"] <= 100


@pytest.mark.parametrize("pair", ["amazon_dslr", "amazon_webcam", "dslr_amazon", "dslr_webcam", "webcam_amazon",
                                  "webcam_dslr"])
def test_all_six_office_pairs_compose_and_load(tmp_path, pair):
    rng = np.random.default_rng(0)
    for dom in pair.split("_"):
        for c in CLASSES:
            d = tmp_path / "office31" / dom / "images" / c
            d.mkdir(parents=True)
            Image.fromarray(rng.integers(0, 256, (30, 20, 3), dtype=np.uint8)).save(d / "frame_0001.jpg")
    cfg = make_cfg(f"data={pair}", f"data.root={tmp_path}", "data.image_size=16", "data.load_size=20",
                   "data.num_classes=3")
    source, target, info = build_pair(cfg.data)
    assert (info.source, info.target) == tuple(pair.split("_")) and source.train_x.shape == (3, 3, 20, 20)
    assert source.val_x.shape[0] == 0 and target.train_x.shape[0] == 3  # whole domains


def test_data_verify_counts_office_classes(office):
    res = cli("data", "verify", "amazon", "--root", str(office), cwd=office, timeout=120)
    assert res.returncode == 2 and "3 class folders" in res.stderr and "the release has 31" in res.stderr
    res = cli("data", "list", "--root", str(office), cwd=office, timeout=120)
    line = next(ln for ln in res.stdout.splitlines() if ln.split()[:1] == ["amazon"])
    assert "present" in line and "3 class folders" in line
