"""Office-Home, VisDA-2017, DomainNet and list files, read from fixture trees written in the releases' layouts:
every pair composes, the readers give the layouts' samples and classes, file-backed domains train end to end
with a ResNet and a small timm model, per-class accuracy equals a hand count, bad input is one clear line."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import cli, make_cfg, resumes_exactly, run_cli
from uda.data.domain import FileDomain
from uda.data.files import DataError
from uda.data.pairs import build_pair
from uda.schema import validate
from uda.schema.data import benchmark_pairs

CLASSES = ("Alarm_Clock", "Bike", "Candles")
SMALL = ("data.image_size=16", "data.load_size=20")


def write_images(folder, n, rng, size=(24, 18)):
    folder.mkdir(parents=True, exist_ok=True)
    shape = (*size, 3)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / f"{i:05d}.jpg")


@pytest.fixture()
def officehome(tmp_path):
    rng = np.random.default_rng(0)
    for dom in ("Art", "Clipart", "Product", "Real_World"):
        for k, c in enumerate(CLASSES):
            write_images(tmp_path / "officehome" / dom / c, 2 + k, rng)
    return tmp_path


def write_list(path, base, entries):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{f.relative_to(base).as_posix()} {y}\n" for f, y in entries))


@pytest.fixture()
def visda(tmp_path):
    rng = np.random.default_rng(1)
    for split in ("train", "validation"):
        base = tmp_path / "visda17" / split
        entries = []
        for y, c in enumerate(("aeroplane", "bicycle", "bus")):
            write_images(base / c, 3, rng)
            entries += [(f, y) for f in sorted((base / c).iterdir())]
        write_list(base / "image_list.txt", base, entries)
    return tmp_path


@pytest.fixture()
def domainnet(tmp_path):
    rng = np.random.default_rng(2)
    base = tmp_path / "domainnet"
    for dom in ("clipart", "real"):
        entries = []
        for y, c in enumerate(("aircraft_carrier", "airplane")):
            write_images(base / dom / c, 6, rng)
            entries += [(f, y) for f in sorted((base / dom / c).iterdir())]
        write_list(base / f"{dom}_train.txt", base, entries[::2] + entries[1::4])
        write_list(base / f"{dom}_test.txt", base, entries[3::4])
    return tmp_path


@pytest.mark.parametrize("pair", sorted(benchmark_pairs()) + ["visda17"])
def test_every_benchmark_pair_composes_and_validates(pair):
    cfg = make_cfg(f"data={pair}", "backbone=resnet50")
    validate(cfg)
    s, t = cfg.data.source.name, cfg.data.target.name
    assert s != t and cfg.data.image_size == 224 and cfg.data.load_size == 256 and cfg.data.augment


def test_officehome_domains_are_whole_folders_read_from_files(officehome):
    cfg = make_cfg("data=officehome_art_clipart", f"data.root={officehome}", *SMALL)
    source, target, info = build_pair(cfg.data)
    assert isinstance(source, FileDomain) and source.train_size == 2 + 3 + 4 == len(source.test)
    assert source.val is None  # the whole-domain protocol: val_size 0
    x, y = source.train_batch(torch.tensor([0, 8]))
    assert x.shape == (2, 3, 20, 20) and x.dtype == torch.uint8 and y.tolist() == [0, 2]
    assert info.class_names[:3] == CLASSES and info.num_classes == 65


def test_visda_reads_the_image_lists_and_holds_out_validation_images(visda):
    cfg = make_cfg("data=visda17", f"data.root={visda}", *SMALL, "data.val_size=2")
    source, target, info = build_pair(cfg.data)
    assert info.class_names[:3] == ("aeroplane", "bicycle", "bus")
    assert source.train_size == 9 - 1 and source.val[0].shape == (1, 3, 20, 20)  # at most a fifth held out
    assert len(target.test) == 9  # the target: tested on whole


def test_domainnet_reads_train_and_test_lists_and_takes_the_class_count_from_them(domainnet):
    cfg = make_cfg("data=domainnet_clipart_real", f"data.root={domainnet}", *SMALL, "data.val_size=0")
    source, target, info = build_pair(cfg.data)
    assert info.num_classes == 2 and info.class_names == ("aircraft_carrier", "airplane")
    assert source.train_size == 6 + 3 and len(source.test) == 3


def test_domainnet_list_suffix_reads_the_subset_lists(domainnet):
    base = domainnet / "domainnet"
    for dom in ("clipart", "real"):
        for split in ("train", "test"):
            files = sorted((base / dom / "airplane").iterdir())[:2]
            write_list(base / f"{dom}_{split}_126.txt", base, [(f, 0) for f in files])
    cfg = make_cfg("data=domainnet_clipart_real", f"data.root={domainnet}", *SMALL, "data.list_suffix=_126",
                   "data.val_size=0")
    source, _, info = build_pair(cfg.data)
    assert source.train_size == 2 and info.num_classes == 1


def test_a_custom_list_file_domain_is_read_from_files(visda, tmp_path):
    lst = visda / "visda17" / "validation" / "image_list.txt"
    cfg = make_cfg("data=custom", f"data.source.path={lst}", f"data.target.path={lst}", *SMALL, "data.val_size=0")
    source, target, info = build_pair(cfg.data)
    assert isinstance(target, FileDomain) and info.num_classes == 3 and info.channels == 3


def test_a_missing_list_file_and_a_malformed_line_are_one_line_each(visda, tmp_path):
    (visda / "visda17" / "train" / "image_list.txt").unlink()
    res = run_cli("train", "data=visda17", f"data.root={visda}", *SMALL, "backbone=resnet50", "backbone.depth=18",
                  "trainer.max_steps=1", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "missing list file" in res.stderr and "image_list.txt" in res.stderr
    bad = tmp_path / "bad.txt"
    bad.write_text("a.jpg 0\nb.jpg\n")
    with pytest.raises(DataError, match=r"bad.txt:2: expected"):
        build_pair(make_cfg("data=custom", f"data.source.path={bad}", f"data.target.path={bad}", *SMALL).data)


@pytest.mark.slow  # a CLI run per case
def test_custom_takes_the_richer_channel_count_and_records_the_pair(tmp_path):
    """A grayscale .npz source (MNIST-like) and an RGB ImageFolder target: the pair is RGB (it was grey)."""
    rng = np.random.default_rng(3)
    grey = {f"{k}_{split}": rng.integers(0, 256, (6, 16, 16), dtype=np.uint8) if k == "x" else np.arange(6) % 2
            for split in ("train", "test") for k in ("x", "y")}
    np.savez(tmp_path / "a.npz", **grey)
    for split in ("train", "test"):
        for c in ("0", "1"):
            write_images(tmp_path / "b" / split / c, 3, rng, size=(16, 16))
    run = tmp_path / "run"
    res = run_cli(
        "train",
        "data=custom",
        f"data.source.path={tmp_path / 'a.npz'}",
        f"data.target.path={tmp_path / 'b'}",
        "method=source_only",
        "trainer.max_steps=2",
        "trainer.batch_size=4",
        "trainer.eval_every=2",
        "trainer.progress=none",
        f"hydra.run.dir={run}",
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["pair"] == {"image_size": 16, "channels": 3, "num_classes": 2, "class_names": ["0", "1"]}
    assert set(summary["target_class_acc"]) == {"0", "1"} and "target_mean_class_acc" in summary
    assert (run / "images" / "train_source_0000000.png").is_file()  # what the network saw, once per run


@pytest.mark.slow  # a CLI run per case
@pytest.mark.parametrize("backbone", [("backbone=resnet50", "backbone.depth=18"),
                                      ("backbone=timm", "backbone.model=test_vit")])
def test_dann_on_officehome_files_end_to_end(officehome, tmp_path, backbone):
    run = tmp_path / "run"
    res = run_cli("train", "+experiment=dann_officehome", *backbone, f"data.root={officehome}", *SMALL,
                  "trainer.max_steps=2", "trainer.batch_size=4", "trainer.eval_every=2", "trainer.checkpoint_every=2",
                  "trainer.progress=none", f"hydra.run.dir={run}", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 2 and set(rows[-1]["target_class_acc"]) >= set(CLASSES)
    assert (run / "checkpoints" / "last.pt").is_file()


@pytest.mark.slow  # a CLI run per case
@pytest.mark.parametrize("layout", ["visda", "domainnet"])
def test_source_only_on_the_list_layouts_end_to_end(layout, request, tmp_path):
    root = request.getfixturevalue(layout)
    data = {"visda": "data=visda17", "domainnet": "data=domainnet_real_clipart"}[layout]
    run = tmp_path / "run"
    res = run_cli("train", "method=source_only", data, "backbone=resnet50", "backbone.depth=18", f"data.root={root}",
                  *SMALL, "data.val_size=2", "trainer.max_steps=2", "trainer.batch_size=4", "trainer.eval_every=2",
                  "trainer.progress=none", f"hydra.run.dir={run}", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    summary = json.loads((run / "summary.json").read_text())
    assert 0 <= summary["target_mean_class_acc"] <= 100 and summary["pair"]["image_size"] == 16


def test_a_file_backed_run_resumes_exactly(officehome, tmp_path):
    """The DataLoader reads the streams' indices and the crops come from (seed, step): a run stopped after
    2 steps and resumed ends with the networks of the uninterrupted one."""
    resumes_exactly(["+experiment=dann_officehome", "backbone.depth=18", f"data.root={officehome}", *SMALL,
                     "trainer.max_steps=4", "trainer.batch_size=4", "trainer.eval_every=2",
                     "trainer.checkpoint_every=2", "trainer.progress=none"], tmp_path, stop_after=2)


def test_per_class_accuracy_equals_a_hand_count(officehome):
    """A model that always says class 0: on Clipart (2, 3, 4 images of classes 0, 1, 2) overall 2/9, per class
    100 / 0 / 0, mean class accuracy 100/3 over the classes with test images (the other 62 have none)."""
    from uda.engine.evaluation import classification_scores

    cfg = make_cfg("data=officehome_art_clipart", f"data.root={officehome}", *SMALL)
    source, target, info = build_pair(cfg.data)

    class Always0:
        def predict(self, x):
            out = torch.zeros(len(x), info.num_classes)
            out[:, 0] = 1.0
            return out

    res = classification_scores(Always0(), source, target, prepare=lambda x: x.float(), batch_size=4,
                                class_names=info.class_names, device=torch.device("cpu"))
    assert res["target_acc"] == pytest.approx(100 * 2 / 9)
    assert [res["target_class_acc"][c] for c in CLASSES] == [100.0, 0.0, 0.0]
    assert res["target_class_acc"][info.class_names[10]] is None
    assert res["target_mean_class_acc"] == pytest.approx(100 / 3)


@pytest.mark.slow  # a CLI run
def test_timm_weights_that_do_not_fit_are_one_line_naming_the_keys(tmp_path):
    import timm

    torch.save(timm.create_model("test_resnet", pretrained=False).state_dict(), tmp_path / "w.pth")
    res = run_cli("train", "backbone=timm", "backbone.model=test_vit", f"backbone.weights={tmp_path / 'w.pth'}",
                  "data=synthetic", "trainer.max_steps=1", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "does not fit timm's test_vit" in res.stderr and "missing [" in res.stderr


def test_timm_weights_from_a_local_file_load(tmp_path):
    import timm

    from uda.nets import build_backbone

    ref = timm.create_model("test_resnet", pretrained=False)
    torch.save(ref.state_dict(), tmp_path / "w.pth")
    cfg = make_cfg("backbone=timm", "backbone.model=test_resnet", f"backbone.weights={tmp_path / 'w.pth'}")
    features, classifier, width = build_backbone(cfg.backbone, in_channels=3, image_size=32, num_classes=5)
    body, want = features[0].state_dict(), ref.state_dict()
    assert width == 256 and body and all(torch.equal(v, want[k]) for k, v in body.items())


def test_data_list_shows_the_new_datasets_with_their_paths_and_sources(officehome):
    res = cli("data", "list", "--root", str(officehome), cwd=officehome, timeout=120)
    lines = {ln.split()[0]: ln for ln in res.stdout.splitlines() if ln.strip()}
    assert "present" in lines["officehome_art"] and "hemanthdv.org" in res.stdout
    assert "missing" in lines["visda17_train"] and "taskcv-2017" in res.stdout
    assert "missing" in lines["domainnet_sketch"] and "M3SDA" in res.stdout
