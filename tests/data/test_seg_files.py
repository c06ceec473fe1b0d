"""GTA5, SYNTHIA and Cityscapes in their release layouts (fixture files in the real formats): label ids to
train ids per protocol, 16-bit SYNTHIA labels, held-out test splits, full-size Cityscapes val labels,
missing files named, and the file-backed pairs through the trainer with exact resume."""
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import make_cfg, state_equal
from uda.data import segmentation as seg
from uda.data.catalog import DOMAINS
from uda.data.files import DataError
from uda.engine import checkpoint as ckpt
from uda.engine.loop import TrainingInterrupted, train
from uda.schema import ConfigError, validate

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")


H, W = 24, 40  # fixture images are 40 x 24 (height 24)
IDS = torch.tensor([7, 26, 0, 1, 255, 24, 22, 12, 33, 11], dtype=torch.uint8)  # Cityscapes label ids


def write_png(chw, path):
    """A uint8 [C, H, W] tensor as an 8-bit PNG (grey for one channel, RGB for three), with Pillow."""
    pixels = chw.numpy()
    Image.fromarray(pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0)).save(path)


def write_png16(path, rgb):
    """A 16-bit RGB PNG (colour type 2, bit depth 16), as SYNTHIA's GT/LABELS files are.

    Neither torchvision's encode_png (uint8 only) nor Pillow (no 16-bit RGB mode) writes one, so this
    follows the PNG spec directly: signature, IHDR, one zlib IDAT of filter-0 rows of big-endian samples,
    IEND; each chunk is length + type + data + CRC-32. torchvision reads it back as uint16 (checked below).
    """
    _, h, w = rgb.shape
    rows = rgb.permute(1, 2, 0).numpy().astype(">u2")
    raw = b"".join(b"\x00" + rows[y].tobytes() for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def write_palette(path, ids):
    """A GTA5 label: an 8-bit palette PNG whose indices are the Cityscapes label ids."""
    img = Image.fromarray(ids.numpy(), mode="P")
    img.putpalette(list(np.random.default_rng(0).integers(0, 256, 768)))
    img.save(path)


def label_map(h=H, w=W, ids=IDS):
    """[h, w] uint8: vertical stripes cycling through ``ids``, 4 pixels wide."""
    return ids[(torch.arange(w) // 4) % len(ids)].expand(h, w).contiguous()


def rgb(i, h=H, w=W):
    return torch.full((3, h, w), 10 * i, dtype=torch.uint8)


@pytest.fixture()
def root(tmp_path):
    gta = tmp_path / "gta5"
    (gta / "images").mkdir(parents=True)
    (gta / "labels").mkdir()
    for i in range(1, 7):
        write_png(rgb(i), str(gta / "images" / f"{i:05d}.png"))
        # GTA5 has a few labels whose size differs from their image's: resizing each to its target handles it
        write_palette(gta / "labels" / f"{i:05d}.png", label_map()[::2, ::2] if i == 2 else label_map())
    write_png(rgb(1)[:1], str(gta / "images" / "00001.png"))  # a grayscale image
    Image.new("RGBA", (W, H), (50, 60, 70, 128)).save(gta / "images" / "00003.png")  # an RGBA image
    syn = tmp_path / "synthia"
    (syn / "RGB").mkdir(parents=True)
    (syn / "GT" / "LABELS").mkdir(parents=True)
    for i in range(6):
        write_png(rgb(i), str(syn / "RGB" / f"{i:07d}.png"))
        ids = label_map(ids=torch.tensor([3, 8, 16, 21, 10, 0, 22]))
        write_png16(
            syn / "GT" / "LABELS" / f"{i:07d}.png", torch.stack([ids.int(), ids.int() * 1000 + i, ids.int() * 0])
        )
    cs = tmp_path / "cityscapes"
    for split, names in (("train", ("aachen_000000_000019", "aachen_000001_000019", "bremen_000000_000019")),
                         ("val", ("frankfurt_000000_000294", "lindau_000000_000019"))):
        for name in names:
            city = name.split("_")[0]
            (cs / "leftImg8bit" / split / city).mkdir(parents=True, exist_ok=True)
            (cs / "gtFine" / split / city).mkdir(parents=True, exist_ok=True)
            write_png(rgb(3), str(cs / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png"))
            write_png(label_map()[None], str(cs / "gtFine" / split / city / f"{name}_gtFine_labelIds.png"))
            write_png(rgb(1), str(cs / "gtFine" / split / city / f"{name}_gtFine_color.png"))  # not a label id file
    return tmp_path


def load(name, root, num_classes=19, role="source", train_size=(12, 20), test_size=(16, 32)):
    """The domain as the table loads it (its notes say where missing files come from)."""
    return seg.load_seg_domain(name, root, num_classes=num_classes, train_size=train_size, test_size=test_size,
                               role=role, where=DOMAINS[name].notes if name in DOMAINS else "")


def test_class_tables_follow_cityscapes_train_ids():
    assert len(seg.CITYSCAPES_CLASSES) == 19 and seg.CITYSCAPES_CLASSES[0] == "road"
    assert seg.CITYSCAPES_CLASSES[13] == "car" and seg.CITYSCAPES_CLASSES[18] == "bicycle"
    assert seg.SYNTHIA_16 == tuple(c for c in seg.CITYSCAPES_CLASSES if c not in ("terrain", "truck", "train"))
    assert len(seg.SYNTHIA_13) == 13 and not {"wall", "fence", "pole"} & set(seg.SYNTHIA_13)
    assert seg.class_names("gta5", 16) == seg.SYNTHIA_16
    with pytest.raises(ConfigError, match="num_classes=19 .*synthia.*valid: 16, 13"):
        seg.class_names("synthia", 19)
    with pytest.raises(ConfigError, match="valid: 19, 16, 13"):
        seg.cityscapes_lut(20)


@pytest.mark.parametrize("kind", ["gray", "palette"])
def test_cityscapes_and_gta5_label_ids_map_to_each_protocol(tmp_path, kind):
    path = tmp_path / "label.png"
    write_png(IDS[None, None], str(path)) if kind == "gray" else write_palette(path, IDS[None])
    ids = seg.read_label_ids(path)  # road car unlabeled ego-vehicle 255 person terrain wall bicycle building
    assert ids.shape == (1, 1, 10) and ids.flatten().tolist() == IDS.tolist()
    expect = {19: [0, 13, 255, 255, 255, 11, 9, 3, 18, 2],
              16: [0, 12, 255, 255, 255, 10, 255, 3, 15, 2],
              13: [0, 9, 255, 255, 255, 7, 255, 255, 12, 2]}
    for n, want in expect.items():
        assert seg.cityscapes_lut(n)[ids.long()].flatten().tolist() == want, n


def test_synthia_reads_the_first_channel_of_a_16bit_png(tmp_path):
    ids = torch.tensor([[3, 8, 16, 21, 10, 0, 22, 300]], dtype=torch.int32)  # 300: no SYNTHIA class
    write_png16(tmp_path / "l.png", torch.stack([ids, ids + 4000, ids * 0 + 65535]))
    Image.open(tmp_path / "l.png").verify()  # an independent decoder accepts the file (chunk CRCs included)
    got = seg.read_synthia_ids(tmp_path / "l.png")
    assert got.dtype == torch.uint16 and got.shape == (1, 1, 8) and got.flatten().tolist() == ids.flatten().tolist()
    ds = seg.SegFiles(name="t", images=[tmp_path / "l.png"], labels=[tmp_path / "l.png"], lut=seg.synthia_lut(16),
                      read_label=seg.read_synthia_ids, image_size=(1, 8), label_size=None)
    assert ds[0][1].flatten().tolist() == [0, 12, 255, 3, 10, 255, 255, 255]  # road car terrain wall person ...
    assert seg.synthia_lut(13)[[3, 8, 16, 21, 10]].tolist() == [0, 9, 255, 255, 7]


@pytest.mark.parametrize("name", ["gta5", "synthia"])
def test_synthetic_domains_hold_out_the_last_images_by_name(root, name):
    dom = load(name, root, num_classes=16)
    assert (len(dom.train), len(dom.test)) == (5, 1)  # 6 images: the test tail is a fifth (at most 500)
    assert dom.test.images[0] == max(dom.train.images + dom.test.images)  # the last by name, never trained on
    assert dom.classes == seg.SYNTHIA_16 and dom.val is None
    for ds, size in ((dom.train, (12, 20)), (dom.test, (16, 32))):
        for i in range(len(ds)):
            x, y = ds[i]
            assert x.dtype == torch.uint8 and x.shape == (3, *size)
            assert y.dtype == torch.int64 and y.shape == size
            assert set(y.unique().tolist()) <= set(range(16)) | {255} and (y == 0).any() and (y == 12).any()


def test_gta5_converts_gray_and_rgba_images_and_ignores_target_train_labels(root, monkeypatch):
    dom = load("gta5", root, train_size=(H, W))
    assert torch.equal(dom.train[0][0], rgb(1))  # grayscale -> 3 equal channels
    assert dom.train[2][0][:, 0, 0].tolist() == [50, 60, 70]  # RGBA -> RGB
    assert torch.equal(dom.train[1][1], dom.train[0][1])  # a half-size label resized (nearest) to the target size
    target = load("gta5", root, role="target")
    assert target.train.labels is None and (target.train[0][1] == 255).all() and target.train[0][1].shape == (12, 20)
    monkeypatch.setattr(seg, "HELD_OUT", 1)
    assert len(load("gta5", root).test) == 1


def test_cityscapes_trains_on_train_and_tests_on_val_at_full_label_size(root):
    dom = load("cityscapes", root)
    assert (len(dom.train), len(dom.test)) == (3, 2) and dom.test.name == "cityscapes/val"
    x, y = dom.test[1]
    assert x.shape == (3, 16, 32) and y.shape == (H, W)  # images resized, val labels at full size
    assert torch.equal(y, seg.cityscapes_lut(19)[label_map().long()].long())
    x, y = dom.train[0]
    assert x.shape == (3, 12, 20) and y.shape == (12, 20) and (y == 13).any()
    for p in (root / "cityscapes" / "gtFine" / "train").rglob("*.png"):
        p.unlink()  # an unlabelled target needs no train labels
    target = load("cityscapes", root, role="target")
    assert target.train.labels is None and (target.train[0][1] == 255).all()
    with pytest.raises(DataError, match="aachen_000000_000019_gtFine_labelIds.png"):
        load("cityscapes", root, role="source")


@pytest.mark.parametrize("name, expected", [("gta5", "gta5/images/*.png"), ("synthia", "synthia/RGB/*.png"),
                                            ("cityscapes", "cityscapes/leftImg8bit/train/*/*_leftImg8bit.png")])
def test_a_missing_domain_names_its_expected_path_and_source(tmp_path, name, expected):
    with pytest.raises(DataError) as e:
        load(name, tmp_path, num_classes=16)
    assert str(tmp_path / expected) in str(e.value) and "http" in str(e.value)


def test_an_image_without_a_label_is_named(root):
    (root / "synthia" / "GT" / "LABELS" / "0000002.png").unlink()
    with pytest.raises(DataError, match=r"1 image\(s\) without a label file, first .*RGB/0000002.png"):
        load("synthia", root, num_classes=13)
    (root / "gta5" / "labels" / "00006.png").unlink()  # the test tail is checked even for a target
    with pytest.raises(DataError, match="images/00006.png"):
        load("gta5", root, role="target")
    for f in sorted((root / "gta5" / "images").iterdir())[2:]:
        f.unlink()
    with pytest.raises(DataError, match="2 image.*at least 5"):
        load("gta5", root)


def test_bad_names_roles_and_protocols_list_the_valid_ones(root):
    with pytest.raises(ConfigError, match="'gta6'.*gta5, synthia, cityscapes"):
        load("gta6", root)
    with pytest.raises(ConfigError, match="'tgt'.*source, target"):
        load("gta5", root, role="tgt")
    with pytest.raises(ConfigError, match="valid: 16, 13"):
        load("synthia", root, num_classes=19)


@pytest.mark.parametrize("pair, classes", [("gta5_cityscapes", 19), ("synthia_cityscapes", 16)])
def test_file_backed_pairs_train_evaluate_at_full_label_size_and_resume(root, tmp_path, pair, classes):
    args = [f"data={pair}", "method=adaptsegnet", "method.ndf=4", "backbone=seg_small", "backbone.channels=[4,8]",
            f"data.root={root}", "data.source_size=[32,32]", "data.target_size=[32,32]", "data.workers=0",
            "trainer.max_steps=4", "trainer.batch_size=2", "trainer.eval_every=2", "trainer.checkpoint_every=2",
            "trainer.log_every=1", "trainer.progress=none", "trainer.eval_batch_size=2"]
    summary = train(make_cfg(*args), tmp_path / "ref")
    assert len(summary["target_iou"]) == classes and 0 <= summary["target_miou"] <= 100
    assert "source_val_miou" not in (tmp_path / "ref" / "metrics.jsonl").read_text()  # no held-out val split
    with pytest.raises(TrainingInterrupted):
        train(make_cfg(*args), tmp_path / "cut", stop_after=3)
    train(make_cfg(*args, "resume=true"), tmp_path / "cut")
    a, b = (ckpt.load(tmp_path / d / "checkpoints" / "last.pt")["method"] for d in ("ref", "cut"))
    assert state_equal(a, b)  # the DataLoader resumes at the same step's images


def test_file_backed_pairs_need_their_image_sizes():
    with pytest.raises(ConfigError, match=r"data.source_size \(\[height, width\]\) is required"):
        validate(make_cfg("data=gta5_cityscapes", "data.source_size=[]"))


def test_the_domain_table_lists_verifies_and_prepares_the_segmentation_domains(root, tmp_path_factory):
    empty = tmp_path_factory.mktemp("empty")
    for name in ("gta5", "synthia", "cityscapes"):
        state, detail = DOMAINS[name].status(empty)
        assert state == "missing" and str(empty / name) in detail and DOMAINS[name].notes
    assert [DOMAINS[n].status(root)[0] for n in ("gta5", "synthia", "cityscapes")] == ["present"] * 3
    assert "6 images, 6 labels" in DOMAINS["gta5"].verify(root)
    assert "train: 3 images, 3 labels; val: 2 images, 2 labels" in DOMAINS["cityscapes"].prepare(root)
    (root / "synthia" / "GT" / "LABELS" / "0000009.png").write_bytes(b"")
    with pytest.raises(DataError, match="6 images but 7 label files.*0000009.png"):
        DOMAINS["synthia"].verify(root)
