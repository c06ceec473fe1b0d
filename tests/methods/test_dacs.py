"""DACS: ClassMix masks hold exactly the chosen source classes, labels and weights follow them; the blur
kernel, the confidence weight and the weighted CE by hand; the EMA rate; the update against a reference with
the same draws; an end-to-end run on the synthetic segmentation pair that resumes exactly."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F

from helpers import SEG_SMALL, build_seg, resumes_exactly, seg_batches, sgd_stepper
from uda.data.streams import step_generator
from uda.engine import checkpoint as ckpt
from uda.methods.dacs import MIX_STREAM, class_mix_masks, mixed_loss
from uda.methods.parts import blur_kernel, strong_augment


def test_class_mix_masks_cover_exactly_half_of_the_source_classes():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 5, (4, 16, 16), generator=g)
    y[0, :2] = 255  # ignored pixels count as a class, as in the official code
    y[1] = 3  # one class only: ceil(1 / 2) = 1, the whole image is pasted
    masks = class_mix_masks(y, torch.Generator().manual_seed(1))
    for yi, mi in zip(y, masks):
        present = set(torch.unique(yi).tolist())
        chosen = set(torch.unique(yi[mi]).tolist())
        assert chosen <= present and len(chosen) == math.ceil(len(present) / 2)
        assert torch.equal(mi, torch.isin(yi, torch.tensor(sorted(chosen))))  # whole classes, never part of one
    assert masks[1].all()


def test_blur_kernel_by_hand():
    # ceil(0.1 s) = c; floor(c - 0.5 + c mod 2): 32 -> c 4 -> 3; 33 -> c 4 -> 3; 512 -> c 52 -> 51; 41 -> c 5 -> 5
    assert [blur_kernel(s) for s in (32, 33, 512, 41)] == [3, 3, 51, 5]


def test_mixed_loss_weights_each_pixel_and_ignores_255():
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 0.0]]]])  # [1, K=2, 1, 2]
    y = torch.tensor([[[0, 255]]])
    w = torch.tensor([[[0.5, 1.0]]])
    ce0 = -math.log(math.exp(2) / (math.exp(2) + 1))
    assert mixed_loss(logits, y, w).item() == pytest.approx(0.5 * ce0 / 2)  # the 255 pixel adds 0 to the mean


def test_strong_augment_is_a_function_of_the_generator_and_stays_in_range():
    x = torch.rand(3, 3, 16, 16) * 2 - 1  # normalised with mean = std = 0.5
    mean, std = torch.full((3, 1, 1), 0.5), torch.full((3, 1, 1), 0.5)
    kw = dict(mean=mean, std=std, jitter=0.25, jitter_p=1.0, blur_p=1.0, blur_sigma=[0.15, 1.15])
    a = strong_augment(x, torch.Generator().manual_seed(3), **kw)
    b = strong_augment(x, torch.Generator().manual_seed(3), **kw)
    assert torch.equal(a, b) and not torch.allclose(a, x) and a.min() >= -1 - 1e-6 and a.max() <= 1 + 1e-6
    off = strong_augment(x, torch.Generator().manual_seed(3), **{**kw, "jitter_p": 0.0, "blur_p": 0.0})
    assert torch.allclose(off, x, atol=1e-6)


def test_dacs_update_equals_a_reference_with_the_same_draws():
    m = build_seg("method=dacs", "method.confidence=0.2", "method.unsup_weight=0.7")
    assert set(m.param_groups()) == {"seg", "head"} and not any(p.requires_grad for p in m.teacher.parameters())
    with torch.no_grad():  # a teacher different from the student, so the EMA is visible
        for p in m.teacher.parameters():
            p.mul_(0.9)
    ref = copy.deepcopy(m)
    src, tgt = seg_batches()
    step, lr = 7, 0.05
    m.update(src, tgt, step, sgd_stepper(m, lr=lr, momentum=0.0))

    gen = step_generator(0, step, stream=MIX_STREAM)
    with torch.no_grad():
        p_t = F.softmax(F.interpolate(ref.teacher(tgt.x).logits, size=(32, 32), mode="bilinear",
                                      align_corners=False), 1)
        conf, y_hat = p_t.max(1)
        q = (conf >= 0.2).float().mean()  # one weight for every target pixel of the batch
        mask = class_mix_masks(src.y, gen)
        x_m = mask.unsqueeze(1) * src.x + (~mask).unsqueeze(1) * tgt.x
        y_m = torch.where(mask, src.y, y_hat)
        w = mask.float() + (~mask).float() * q
        x_m = strong_augment(x_m, gen, mean=ref.mean, std=ref.std, jitter=0.25, jitter_p=0.8, blur_p=0.5,
                             blur_sigma=[0.15, 1.15])
    up = lambda t: F.interpolate(t, size=(32, 32), mode="bilinear", align_corners=False)  # noqa: E731
    loss_s = F.cross_entropy(up(ref.segmenter(src.x).logits), src.y, ignore_index=255)
    ce_m = F.cross_entropy(up(ref.segmenter(x_m).logits), y_m, ignore_index=255, reduction="none")
    loss = loss_s + 0.7 * (w * ce_m).mean()
    params = list(ref.segmenter.parameters())
    grads = torch.autograd.grad(loss, params)
    new = [p - lr * g for p, g in zip(params, grads)]
    for q_new, want in zip(m.segmenter.parameters(), new):
        torch.testing.assert_close(q_new, want, rtol=1e-4, atol=1e-6)
    alpha = min(1 - 1 / 8, 0.99)  # step 7
    for p_t, p_old, p_new in zip(m.teacher.parameters(), ref.teacher.parameters(), new):
        torch.testing.assert_close(p_t, alpha * p_old + (1 - alpha) * p_new.detach(), rtol=1e-4, atol=1e-6)


def test_dacs_first_step_makes_the_teacher_the_student():
    m = build_seg("method=dacs")
    m.update(*seg_batches(), 0, sgd_stepper(m))  # alpha_0 = min(1 - 1/1, 0.99) = 0
    assert all(torch.equal(a, b) for a, b in zip(m.teacher.parameters(), m.segmenter.parameters()))


def test_dacs_runs_end_to_end_and_resumes_exactly(tmp_path):
    summary = resumes_exactly(["method=dacs", *SEG_SMALL], tmp_path, stop_after=4)
    assert 0 <= summary["target_miou"] <= 100
    last = ckpt.load(tmp_path / "ref" / "checkpoints" / "last.pt")["method"]
    assert any(k.startswith("teacher.") for k in last)  # the teacher is in the checkpoint
