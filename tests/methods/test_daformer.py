"""DAFormer: rare class sampling's probabilities and stream, the feature distance's mask and value, the PL crop,
ClassMix over the batch's classes, the EMA before the student's step, the update against a reference with the
same draws (with and without FD), the warm-up the method brings, and an end-to-end run that resumes exactly."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F

from helpers import SEG_SMALL, build_seg, make_cfg, resumes_exactly, seg_batches, sgd_stepper
from uda.data.domain import TensorDomain, _label_counts
from uda.data.streams import RareClassStream, rcs_probabilities, step_generator
from uda.errors import ConfigError
from uda.methods.dacs import MIX_STREAM, class_mix_masks
from uda.methods.daformer import feature_distance, pl_crop, thing_cells
from uda.methods.parts import strong_augment


def test_rcs_probabilities_by_hand():
    # pixels of classes 0, 1, 2 (and unlabelled, last column) in two images; class 3 never occurs
    pixels = torch.tensor([[60, 30, 0, 0, 10], [20, 10, 10, 0, 60]])
    classes, p = rcs_probabilities(pixels, temperature=0.1)
    assert classes.tolist() == [0, 1, 2]  # a class with no pixel is never drawn
    f = torch.tensor([80, 40, 10], dtype=torch.float64) / 130  # unlabelled pixels do not count
    want = torch.exp((1 - f) / 0.1) / torch.exp((1 - f) / 0.1).sum()
    torch.testing.assert_close(p, want)
    assert p[2] > p[1] > p[0]  # the rarest class is the likeliest


def test_rare_class_stream_draws_images_holding_the_class_and_is_a_function_of_the_step():
    pixels = torch.tensor([[90, 10, 0], [50, 50, 0], [99, 1, 0], [100, 0, 0]])
    stream = RareClassStream(pixels, 64, temperature=0.01, min_share=0.05, seed=3, stream=1)
    assert [imgs.tolist() for imgs in stream.images] == [[0, 1, 2, 3], [0, 1]]  # class 1 > 5%: images 0 and 1
    a = stream.indices(5)
    assert a.shape == (64,) and torch.equal(a, RareClassStream(pixels, 64, temperature=0.01, min_share=0.05,
                                                               seed=3, stream=1).indices(5))
    assert not torch.equal(a, stream.indices(6))
    # T = 0.01: the rare class 1 (f = 61 / 390) is drawn almost always, so images 0 and 1 almost always
    assert (a <= 1).float().mean() > 0.9
    with pytest.raises(ConfigError, match=r"class\(es\) \[1\].*rcs_min_share"):
        RareClassStream(pixels, 4, temperature=0.01, min_share=0.6, seed=0, stream=1)


def test_class_pixels_count_every_label_map_and_put_255_last():
    y = torch.tensor([[[0, 1], [255, 1]], [[2, 2], [2, 0]]])
    assert _label_counts(y, 3).tolist() == [[1, 2, 0, 1], [1, 0, 3, 0]]
    dom = TensorDomain("d", torch.zeros(2, 3, 2, 2, dtype=torch.uint8), y, y[:1], y[:1])
    assert torch.equal(dom.class_pixels(3), _label_counts(y, 3))


def test_thing_cells_keep_cells_where_one_thing_class_covers_three_quarters():
    y = torch.full((1, 4, 4), 0)
    y[0, :2, :2] = 2  # a whole cell of thing class 2
    y[0, :2, 2:] = torch.tensor([[2, 2], [2, 1]])  # 3 / 4 of thing class 2: kept (>= 0.75)
    y[0, 2:, :2] = torch.tensor([[2, 2], [1, 1]])  # 1 / 2: dropped
    y[0, 2:, 2:] = 255  # ignored pixels are their own class, never a thing
    mask = thing_cells(y, (2, 2), num_classes=3, things=[2], min_ratio=0.75)
    assert mask.tolist() == [[[True, True], [False, False]]]
    assert not thing_cells(y, (2, 2), 3, things=[1], min_ratio=0.75).any()


def test_feature_distance_is_the_masked_mean_of_the_l2_norm_and_zero_when_nothing_is_masked():
    f_s = torch.zeros(1, 2, 1, 2, requires_grad=True)
    f_i = torch.tensor([[[[3.0, 1.0]], [[4.0, 1.0]]]])  # cell norms 5 and sqrt(2)
    mask = torch.tensor([[[True, False]]])
    assert feature_distance(f_s, f_i, mask).item() == pytest.approx(5.0)
    assert feature_distance(f_s, f_i, torch.ones(1, 1, 2, dtype=torch.bool)).item() == pytest.approx(
        (5 + math.sqrt(2)) / 2)
    empty = feature_distance(f_s, f_i, torch.zeros(1, 1, 2, dtype=torch.bool))
    empty.backward()
    assert empty.item() == 0 and torch.equal(f_s.grad, torch.zeros_like(f_s))  # finite, and no gradient


def test_pl_crop_zeroes_the_top_and_bottom_rows():
    w = pl_crop(torch.ones(1, 8, 3), top=0.25, bottom=0.125)  # 2 rows on top, 1 at the bottom
    assert w[0, :, 0].tolist() == [0, 0, 1, 1, 1, 1, 1, 0]
    assert torch.equal(pl_crop(torch.ones(1, 8, 3), 0.0, 0.0), torch.ones(1, 8, 3))


def test_class_mix_over_the_batch_may_name_classes_absent_from_the_image():
    y = torch.stack([torch.zeros(4, 4, dtype=torch.long), torch.ones(4, 4, dtype=torch.long) * 2])
    y[1, 0, 0] = 1
    # the batch has classes {0, 1, 2}: each image pastes ceil(3 / 2) = 2 of them, present or not
    for seed in range(6):
        masks = class_mix_masks(y, torch.Generator().manual_seed(seed), batch_classes=True)
        chosen_0 = masks[0].any().item()  # image 0 holds class 0 only: pasted iff 0 was chosen for it
        assert masks[0].all() == chosen_0
    per_image = class_mix_masks(y, torch.Generator().manual_seed(0))
    assert per_image[0].all()  # one class present: ceil(1 / 2) = 1, always pasted


def _reference_step(ref, src, tgt, step, lr, *, confidence, imnet=None, fd_weight=0.0, things=(), ratio=0.75):
    """The DAFormer update written out: EMA first, then CE + FD + mixed CE, one SGD step."""
    alpha = min(1 - 1 / (step + 1), 0.999)
    teacher = [alpha * p_t + (1 - alpha) * p_s for p_t, p_s in zip(ref.teacher.parameters(),
                                                                  ref.segmenter.parameters())]
    with torch.no_grad():
        for p, v in zip(ref.teacher.parameters(), teacher):
            p.copy_(v)
    gen = step_generator(0, step, stream=MIX_STREAM)
    up = lambda t: F.interpolate(t, size=(32, 32), mode="bilinear", align_corners=False)  # noqa: E731
    out_s = ref.segmenter(src.x)
    loss = F.cross_entropy(up(out_s.logits), src.y, ignore_index=255, reduction="sum") / src.y.numel()  # mmseg
    if imnet is not None:
        with torch.no_grad():
            f_i = imnet(src.x).features
        mask = thing_cells(src.y, tuple(f_i.shape[-2:]), 4, list(things), ratio)
        loss = loss + fd_weight * torch.linalg.vector_norm(out_s.features - f_i, dim=1)[mask].mean()
    with torch.no_grad():
        conf, y_hat = F.softmax(up(ref.teacher(tgt.x).logits), 1).max(1)
        q = (conf >= confidence).float().mean()
        m = class_mix_masks(src.y, gen, batch_classes=True)
        x_m = torch.where(m.unsqueeze(1), src.x, tgt.x)
        y_m, w = torch.where(m, src.y, y_hat), torch.where(m, 1.0, q)
        x_m = strong_augment(x_m, gen, mean=ref.mean, std=ref.std, jitter=0.2, jitter_p=0.8, blur_p=0.5,
                             blur_sigma=[0.15, 1.15], per_batch=True)
    ce_m = F.cross_entropy(up(ref.segmenter(x_m).logits), y_m, ignore_index=255, reduction="none")
    loss = loss + (w * ce_m).mean()
    params = list(ref.segmenter.parameters())
    return [p - lr * g for p, g in zip(params, torch.autograd.grad(loss, params))], teacher


def test_daformer_update_equals_a_reference_with_the_same_draws_ema_first():
    m = build_seg("method=daformer", "method.confidence=0.2")
    assert m.imnet is None  # no backbone.weights: FD is off
    assert set(m.param_groups()) == {"seg", "head"} and not any(p.requires_grad for p in m.teacher.parameters())
    with torch.no_grad():
        for p in m.teacher.parameters():
            p.mul_(0.9)
    ref, (src, tgt), step, lr = copy.deepcopy(m), seg_batches(), 7, 0.05
    m.update(src, tgt, step, sgd_stepper(m, lr=lr, momentum=0.0))
    new, teacher = _reference_step(ref, src, tgt, step, lr, confidence=0.2)
    for got, want in zip(m.segmenter.parameters(), new):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    for got, want in zip(m.teacher.parameters(), teacher):  # the EMA of the student BEFORE its step
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


def test_daformer_feature_distance_joins_the_update_on_thing_classes_only():
    m = build_seg("method=daformer", "method.confidence=0.2", "method.fd_classes=[1,2]", "method.fd_weight=0.5")
    m.imnet = copy.deepcopy(m.segmenter).requires_grad_(False)  # as backbone.weights would build it
    with torch.no_grad():
        for p in m.imnet.parameters():
            p.add_(0.3)
    m.train()
    assert not m.imnet.training  # the ImageNet network stays in eval mode
    ref, (src, tgt), step, lr = copy.deepcopy(m), seg_batches(), 3, 0.05
    src.y[:, 8:24, 8:24] = 1  # a block of thing class 1 over whole feature cells
    m.update(src, tgt, step, sgd_stepper(m, lr=lr, momentum=0.0))
    new, _ = _reference_step(ref, src, tgt, step, lr, confidence=0.2, imnet=ref.imnet, fd_weight=0.5,
                             things=(1, 2))
    for got, want in zip(m.segmenter.parameters(), new):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    assert all(torch.equal(a, b) for a, b in zip(m.imnet.parameters(), ref.imnet.parameters()))  # frozen


def test_daformer_says_when_the_feature_distance_is_off_for_want_of_imagenet_weights(caplog):
    with caplog.at_level("WARNING", logger="uda"):
        assert build_seg("method=daformer").imnet is None  # the offline pairs: no backbone.weights
    assert "feature distance (method.fd_weight=0.005) is off" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="uda"):
        build_seg("method=daformer", "method.fd_weight=0")  # off by choice: nothing to say
    assert "feature distance" not in caplog.text


def test_daformer_first_step_keeps_the_teacher_a_copy_and_asks_for_rare_class_sampling():
    m = build_seg("method=daformer")
    before = [p.clone() for p in m.segmenter.parameters()]
    m.update(*seg_batches(), 0, sgd_stepper(m))
    assert all(torch.equal(a, b) for a, b in zip(m.teacher.parameters(), before))  # no EMA at step 0
    rcs = m.source_sampling()
    assert rcs.temperature == 0.01 and rcs.min_share == pytest.approx(3000 / (1914 * 1052))
    assert build_seg("method=daformer", "method.rcs=false").source_sampling() is None


def test_daformer_brings_its_warmup_under_any_optimizer():
    cfg = make_cfg("method=daformer", "data=synthetic_seg")
    assert (cfg.optimizer.name.value, cfg.optimizer.lr, cfg.optimizer.warmup) == ("adamw", 6e-5, 0.0375)
    cfg = make_cfg("method=daformer", "+experiment=synth2real_seg_cpu")  # the recipe's Adam 1e-3; the warm-up stays
    assert (cfg.optimizer.name.value, cfg.optimizer.warmup) == ("adam", 0.0375)
    assert make_cfg("method=dacs", "+experiment=synth2real_seg_cpu").optimizer.warmup == 0
    assert make_cfg("method=daformer", "optimizer.warmup=0").optimizer.warmup == 0


def test_daformer_runs_end_to_end_with_rare_class_sampling_and_resumes_exactly(tmp_path):
    summary = resumes_exactly(["method=daformer", *SEG_SMALL], tmp_path, stop_after=4)
    assert 0 <= summary["target_miou"] <= 100


@pytest.mark.slow  # DeepLab-v2 is seconds a step on a CPU
def test_daformer_strategies_run_on_deeplabv2_as_in_the_papers_ablation():
    # DAFormer's Table 3: its strategies (EMA self-training, ClassMix, RCS, warm-up) on DeepLab-v2
    from helpers import SEG_INFO, build

    m = build("data=digits_seg", "backbone=deeplabv2", "backbone.depth=50", "method=daformer",
              "method.confidence=0.2", info=SEG_INFO).train()
    before = {k: v.clone() for k, v in m.segmenter.state_dict().items()}
    src, tgt = seg_batches(n=2)
    for step in range(2):  # the teacher first copies the student (step 0), then averages it
        out = m.update(src, tgt, step, sgd_stepper(m, lr=0.01))
        assert all(math.isfinite(float(v)) for v in out.values())
    assert any(not torch.equal(before[k], v) for k, v in m.segmenter.state_dict().items())
    assert not any(p.requires_grad for p in m.teacher.parameters())
    assert make_cfg("method=daformer", "data=digits_seg", "backbone=deeplabv2").optimizer.warmup == 0.0375


@pytest.mark.parametrize("method", ["dacs", "daformer"])
def test_classmix_runs_on_a_common_window_when_the_domains_differ_in_size(method):
    # GTA5 (720 x 1280) -> Cityscapes (512 x 1024): ClassMix pastes source pixels onto target images
    from uda.methods import Batch

    m = build_seg(f"method={method}")
    g = torch.Generator().manual_seed(0)
    src = Batch(torch.randn(2, 3, 40, 48, generator=g), torch.randint(0, 4, (2, 40, 48), generator=g))
    tgt = Batch(torch.randn(2, 3, 32, 32, generator=g), None)
    out = m.update(src, tgt, 3, sgd_stepper(m))
    assert all(torch.isfinite(v) for v in out.values())
    assert m.pseudo[0].shape == (2, 32, 32)  # the target's full pseudo-labels (what MIC reads)


def test_crop_to_takes_one_window_for_every_map_and_draws_nothing_at_the_size():
    from uda.methods.parts import common_size, crop_to

    x, y = torch.arange(2 * 6 * 8.0).view(2, 1, 6, 8), torch.arange(2 * 6 * 8).view(2, 6, 8)
    gen = torch.Generator().manual_seed(0)
    state = gen.get_state()
    assert crop_to((6, 8), gen, x, y)[1] is y and torch.equal(gen.get_state(), state)
    xc, yc = crop_to((4, 5), gen, x, y)
    assert xc.shape == (2, 1, 4, 5) and yc.shape == (2, 4, 5) and torch.equal(xc[:, 0].long(), yc)
    assert common_size(torch.zeros(1, 3, 720, 1280), torch.zeros(1, 3, 512, 1024)) == (512, 1024)
