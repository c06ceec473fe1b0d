"""synth2real_seg's construction, without MNIST: fake digits and a fake photo stand in for the real ones."""
import numpy as np
import pytest
import torch

from uda.data import synth2real_seg as s2r
from uda.data.files import DataError


def _digits() -> tuple[np.ndarray, np.ndarray]:
    d = np.zeros((2, 28, 28), np.uint8)
    d[0, 4:24, 4:24] = 200  # class 3: a bright square
    d[1, 8:20, 8:20] = 250  # class 7: a smaller one
    d[1, 0:2, 0:2] = 100  # faint pixels are never a digit
    return d, np.array([3, 7])


def test_labels_are_the_topmost_digit_whose_alpha_reaches_128_and_background_elsewhere():
    digits, labels = _digits()
    alpha, classes, target, boxes = s2r.layout(digits, labels, 40, np.random.default_rng(0))
    counts = (classes >= 0).sum(0)
    assert counts.min() >= s2r.DIGITS_PER_CANVAS[0] and counts.max() <= s2r.DIGITS_PER_CANVAS[1]
    assert (boxes[..., 2][classes >= 0] >= s2r.DIGIT_SIDE[0]).all() and (boxes[..., 2] <= s2r.DIGIT_SIDE[1]).all()
    expect = np.full(target.shape, s2r.BACKGROUND, np.uint8)
    for j in range(alpha.shape[0]):  # paint in layer order: the last digit with alpha >= 128 is on top
        for i in range(alpha.shape[1]):
            if classes[j, i] >= 0:
                expect[i][alpha[j, i] >= 128] = classes[j, i]
    np.testing.assert_array_equal(target, expect)
    assert set(np.unique(target)) <= {3, 7, s2r.BACKGROUND}
    assert (target != s2r.BACKGROUND).any(axis=(1, 2)).all()  # every canvas shows a digit


def test_source_paints_each_digit_in_one_shaded_colour_over_a_texture_and_target_blends_a_photo():
    digits, labels = _digits()
    mnist = {"train": (torch.from_numpy(digits)[:, None], torch.from_numpy(labels))}
    photo = np.random.default_rng(1).integers(0, 256, size=(80, 90, 3), dtype=np.uint8)
    x_s, y_s = s2r.build("synth_seg", "train", mnist, None, n=30)
    x_t, y_t = s2r.build("real_seg", "train", mnist, [photo], n=30)
    assert x_s.shape == x_t.shape == (30, 3, 64, 64) and y_s.shape == y_t.shape == (30, 64, 64)
    assert x_s.dtype == x_t.dtype == y_s.dtype == torch.uint8
    assert not torch.equal(y_s, y_t)  # each domain draws its own layouts
    # the source background is textured: not one constant colour per canvas
    bg = (y_s == s2r.BACKGROUND).unsqueeze(1).expand_as(x_s)
    spread = torch.stack([x_s[i][bg[i]].float().std() for i in range(30)])
    assert (spread > 0).float().mean() > 0.9
    # the same seed builds the same split (offline, seeded)
    x2, y2 = s2r.build("synth_seg", "train", mnist, None, n=30)
    assert torch.equal(x_s, x2) and torch.equal(y_s, y2)


def test_textures_cover_every_kind_within_range():
    t = s2r.textures(200, np.random.default_rng(3))
    assert t.shape == (200, 64, 64, 3) and t.min() >= 0 and t.max() <= 255
    assert (t.reshape(200, -1).std(1) > 1).mean() > 0.9  # almost none is flat (a gradient can be nearly so)


def test_white_canvas_composites_in_layer_order():
    alpha = np.zeros((2, 1, 64, 64), np.uint8)
    alpha[0, 0, :10] = 255
    alpha[1, 0, 5:15] = 128
    canvas = s2r.white_canvas(alpha, np.array([[1], [2]]))
    assert canvas[0, 0, 0] == 255 and canvas[0, 12, 0] == 128 and canvas[0, 20, 0] == 0
    assert canvas[0, 7, 0] == 255  # 128/255 of white over white stays white


def test_class_shares_are_percentages_by_name():
    y = torch.tensor([[[10, 10], [3, 10]]], dtype=torch.uint8)
    shares = s2r.class_shares(y)
    assert shares["background"] == 75.0 and shares["3"] == 25.0 and sum(shares.values()) == 100.0


def _build_small(tmp_path, monkeypatch, name="synth_seg"):
    digits, labels = _digits()
    mnist = {split: (torch.from_numpy(digits)[:, None], torch.from_numpy(labels)) for split in ("train", "test")}
    monkeypatch.setattr(s2r, "SIZES", {"train": 12, "test": 4})
    monkeypatch.setattr("uda.data.mnistm.offline_photos", lambda: [("p", np.full((70, 70, 3), 90, np.uint8))])
    return s2r.load_synth2real_seg(tmp_path, name, mnist), mnist


@pytest.mark.parametrize("name", ["synth_seg", "real_seg"])
def test_build_is_cached_and_verified_and_a_damaged_cache_is_named(tmp_path, monkeypatch, name):
    splits, mnist = _build_small(tmp_path, monkeypatch, name)
    assert splits["train"][0].shape == (12, 3, 64, 64) and splits["test"][1].shape == (4, 64, 64)
    cache = s2r.cache_path(tmp_path, name)
    verdict = s2r.verify(tmp_path, name)
    shares = [round(100 * float((splits["train"][1] == c).double().mean()), 2) for c in range(len(s2r.CLASS_NAMES))]
    assert "matches its SHA-256" in verdict and verdict.endswith(  # background is class 10, after the digits
        f"background {shares[10]:.1f}%, each digit {min(shares[:10]):.2f}-{max(shares[:10]):.2f}%")
    again = s2r.load_synth2real_seg(tmp_path, name, mnist)  # read from the cache, not rebuilt
    assert torch.equal(again["train"][0], splits["train"][0])
    data = torch.load(cache, weights_only=True)
    data["train"][0][0, 0, 0, 0] ^= 1  # one flipped bit
    torch.save(data, cache)
    with pytest.raises(DataError, match=f"{cache}: damaged"):
        s2r.verify(tmp_path, name)
    repaired = s2r.load_synth2real_seg(tmp_path, name, mnist)  # a readable but damaged cache is rebuilt on use
    assert torch.equal(repaired["train"][0], splits["train"][0]) and "matches" in s2r.verify(tmp_path, name)
    cache.write_bytes(cache.read_bytes()[:100])  # truncated
    with pytest.raises(DataError, match="not a readable synth2real_seg build"):
        s2r.verify(tmp_path, name)
    rebuilt = s2r.load_synth2real_seg(tmp_path, name, mnist)  # an unreadable cache is rebuilt, never used
    assert torch.equal(rebuilt["train"][0], splits["train"][0])


def test_verify_without_a_build_says_how_to_make_it(tmp_path):
    with pytest.raises(DataError, match="uda data prepare real_seg"):
        s2r.verify(tmp_path, "real_seg")
