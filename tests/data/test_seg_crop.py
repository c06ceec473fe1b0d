"""Segmentation training crops (``data.seg_crop``, ``data.seg_crop_max_share``, ``data.seg_flip``): mmseg's
RandomCrop with its cat_max_ratio and RandomFlip, DAFormer's rare class sampling re-crop, against windows
scripted by hand; the recipes' settings; a run with them resumes exactly."""
import pytest
import torch

from helpers import SEG_SMALL, make_cfg, resumes_exactly
from uda.data import pairs
from uda.data.pairs import random_seg_crop
from uda.engine import batches
from uda.errors import ConfigError
from uda.schema import validate

# a 4 x 4 label map: class 1 in columns 0-1, class 2 in columns 2-3; row 3 of column 0 unlabelled (255)
LABELS = torch.tensor([[1, 1, 2, 2], [1, 1, 2, 2], [1, 1, 2, 2], [255, 1, 2, 2]], dtype=torch.uint8)


def _scripted(monkeypatch, windows):
    """seg_window returns ``windows`` in order; the list of the calls' (height, width, size)."""
    calls, it = [], iter(windows)

    def window(height, width, size, generator):
        calls.append((height, width, tuple(size)))
        return next(it)

    monkeypatch.setattr(pairs, "seg_window", window)
    return calls


def _coded(height, width):
    """A one-image batch and its label map both holding each pixel's position code (row x width + column), so
    a crop's window can be read back from it."""
    code = torch.arange(height * width, dtype=torch.uint8).view(height, width)
    return code.expand(3, height, width).unsqueeze(0), code.unsqueeze(0)


def test_one_window_for_the_image_and_its_labels_and_the_mirror_takes_both():
    x, y = _coded(6, 8)
    seen_flips = set()
    for seed in range(12):
        xc, yc = random_seg_crop(x, y, (3, 5), torch.Generator().manual_seed(seed), flip=True)
        assert xc.shape == (1, 3, 3, 5) and yc.shape == (1, 3, 5)
        assert torch.equal(xc[0, 0], yc[0]) and torch.equal(xc[0, 2], yc[0])  # the same window, mirrored alike
        top, left = divmod(int(yc[0].min()), 8)  # the position code of the window's top-left corner
        window = y[0, top : top + 3, left : left + 5]
        assert torch.equal(yc[0], window) or torch.equal(yc[0], window.flip(-1))
        seen_flips.add(torch.equal(yc[0], window.flip(-1)))
    assert seen_flips == {True, False}
    a = random_seg_crop(x, y, (3, 5), torch.Generator().manual_seed(4), flip=True)
    b = random_seg_crop(x, y, (3, 5), torch.Generator().manual_seed(4), flip=True)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])  # a function of the generator's state


def test_a_window_that_one_class_fills_is_drawn_again(monkeypatch):
    x = LABELS.expand(1, 3, 4, 4).clone()
    # (0, 0): class 1 only; (2, 0): class 1 and 255 only, still one class; (0, 1): 1 and 2 half each < 0.75
    calls = _scripted(monkeypatch, [(0, 0), (2, 0), (0, 1)])
    _, yc = random_seg_crop(x, LABELS.unsqueeze(0), (2, 2), torch.Generator(), max_share=0.75)
    assert torch.equal(yc[0], LABELS[0:2, 1:3]) and len(calls) == 3 and calls[0] == (4, 4, (2, 2))
    calls = _scripted(monkeypatch, [(0, 0)])  # max_share 1: off, the first window is kept
    _, yc = random_seg_crop(x, LABELS.unsqueeze(0), (2, 2), torch.Generator(), max_share=1.0)
    assert torch.equal(yc[0], LABELS[0:2, 0:2]) and len(calls) == 1


def test_after_ten_checked_windows_the_eleventh_is_taken_as_drawn(monkeypatch):
    x = LABELS.expand(1, 3, 4, 4).clone()
    calls = _scripted(monkeypatch, [(0, 0)] * 10 + [(0, 2)])  # every window a single class
    _, yc = random_seg_crop(x, LABELS.unsqueeze(0), (2, 2), torch.Generator(), max_share=0.75)
    assert torch.equal(yc[0], LABELS[0:2, 2:4]) and len(calls) == 11  # class 2 only, unchecked


def test_rare_class_sampling_re_crops_until_the_drawn_class_has_enough_pixels(monkeypatch):
    x = LABELS.expand(1, 3, 4, 4).clone()
    # class 2 needs more than 3 pixels of the 2 x 2 crop: (0, 0) has 0, (0, 1) has 2, (0, 2) has 4
    calls = _scripted(monkeypatch, [(0, 0), (0, 1), (0, 2)])
    _, yc = random_seg_crop(x, LABELS.unsqueeze(0), (2, 2), torch.Generator(), need=[(2, 3)])
    assert torch.equal(yc[0], LABELS[0:2, 2:4]) and len(calls) == 3
    calls = _scripted(monkeypatch, [(0, 0)] * 11)  # never enough: the 11th crop (10 re-crops) is kept
    _, yc = random_seg_crop(x, LABELS.unsqueeze(0), (2, 2), torch.Generator(), need=[(2, 3)])
    assert torch.equal(yc[0], LABELS[0:2, 0:2]) and len(calls) == 11


class _DrawnStream:
    """A rare class stream whose global batch of 4 drew classes 5, 6, 7, 8 (for images 0-3)."""

    def drawn(self, step):
        return torch.tensor([5, 6, 7, 8]), torch.arange(4)


def test_the_trainer_crops_source_with_labels_and_target_without_and_asks_for_its_rank_s_classes(monkeypatch):
    """PairBatches._augment: rank 1 of 2 (batch 2 each) passes the classes its source images were drawn for
    (the global batch's 3rd and 4th) with the crop's pixel threshold; the target crop gets no labels and no
    cat_max_ratio; a crop larger than the images is one ConfigError line."""
    calls = []

    def crop(x, y, size, gen, **kw):
        calls.append((y is not None, size, kw))
        return x[..., : size[0], : size[1]], None if y is None else y[..., : size[0], : size[1]]

    monkeypatch.setattr(batches, "random_seg_crop", crop)
    pb = object.__new__(batches.PairBatches)
    pb.seed, pb.world, pb.rank, pb.batch, pb.augment_size = 0, 2, 1, 2, None
    pb.seg_crop, pb.streams = batches.SegCrop((4, 5), 0.75, True, 0.1), [_DrawnStream(), None]
    x, y = torch.zeros(2, 3, 6, 8, dtype=torch.uint8), torch.zeros(2, 6, 8, dtype=torch.uint8)
    x_s, y_s, x_t = pb._augment(x, y, x, step=3)
    assert x_s.shape == (2, 3, 4, 5) and y_s.shape == (2, 4, 5) and x_t.shape == (2, 3, 4, 5)
    source, target = calls
    assert source == (True, (4, 5), {"max_share": 0.75, "flip": True, "need": [(7, 0.1 * 20), (8, 0.1 * 20)]})
    assert target == (False, (4, 5), {"flip": True})
    with pytest.raises(ConfigError, match=r"data.seg_crop \[7, 5\] is larger than a training image \(6 x 8\)"):
        random_seg_crop(x, y, (7, 5), torch.Generator())


@pytest.mark.parametrize("overrides, needle", [
    (["data=synthetic", "data.seg_crop=[16,16]"], "for segmentation pairs; synthetic is a classification pair"),
    (["data=synthetic_seg", "data.seg_crop=[16]"], "data.seg_crop must be [height, width]"),
    (["data=synthetic_seg", "data.seg_crop_max_share=0"], "data.seg_crop_max_share must be in (0, 1]"),
    (["data=synthetic_seg", "data.seg_crop_max_share=0.75"], "give data.seg_crop=[height,width] too"),
    (["+experiment=daformer_gta5_cityscapes", "data.seg_crop=[800,800]"],
     "data.seg_crop [800, 800] is larger than data.source_size [704, 1280]"),
])
def test_bad_crop_settings_are_refused_with_the_valid_ones(overrides, needle):
    with pytest.raises(ConfigError) as e:
        validate(make_cfg(*overrides))
    assert needle in str(e.value)


def test_the_recipes_take_the_official_crops():
    daformer = make_cfg("+experiment=daformer_gta5_cityscapes").data
    assert (daformer.seg_crop, daformer.seg_crop_max_share, daformer.seg_flip) == ([512, 512], 0.75, True)
    assert daformer.source_size == [704, 1280]  # mmseg's Resize keeps GTA5's aspect ratio
    dacs = make_cfg("+experiment=dacs_synthia_cityscapes").data
    assert (dacs.seg_crop, dacs.seg_crop_max_share, dacs.seg_flip) == ([512, 512], 1.0, False)


def test_daformer_with_crops_mirrors_and_its_re_crop_trains_on_crops_and_resumes_exactly(tmp_path, monkeypatch):
    overrides = ["method=daformer", *SEG_SMALL, "data.seg_crop=[24,24]", "data.seg_crop_max_share=0.75",
                 "data.seg_flip=true", "method.rcs_min_crop_share=0.05"]
    seen = []
    crop = batches.random_seg_crop
    monkeypatch.setattr(batches, "random_seg_crop", lambda *a, **kw: seen.append(kw.get("need")) or crop(*a, **kw))
    summary = resumes_exactly(overrides, tmp_path, stop_after=4)
    assert 0 <= summary["target_miou"] <= 100
    needs = [n for n in seen if n is not None]  # the source's crops: each image's drawn class, 5% of 24 x 24
    assert needs and all(len(n) == 4 and all(px == 0.05 * 24 * 24 for _, px in n) for n in needs)
