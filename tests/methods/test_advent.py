"""ADVENT: the self-information map and the normalised entropy by hand; each mode's single update against
a reference written out with plain autograd (D frozen for the segmenter, D on detached maps); which
groups step; an end-to-end run of each mode on the synthetic segmentation pair that resumes exactly."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F

from helpers import SEG_SMALL, ApplySpy, build_seg, joint, make_cfg, resumes_exactly, seg_batches
from uda.methods.advent import entropy_loss, self_information

ADV = ["method=advent", "method.ndf=4"]


def test_self_information_and_entropy_by_hand():
    # one pixel, C = 4: p = (1/2, 1/4, 1/8, 1/8); -p log2 p = 1/2, 1/2, 3/8, 3/8; / log2 4 = 2
    p = torch.tensor([0.5, 0.25, 0.125, 0.125]).view(1, 4, 1, 1)
    assert self_information(p).flatten().tolist() == pytest.approx([0.25, 0.25, 0.1875, 0.1875])
    # uniform pixels have entropy 1, one-hot pixels 0; E averages over the pixels
    two = torch.cat([torch.full((1, 4, 1, 1), 0.25), torch.tensor([1.0, 0, 0, 0]).view(1, 4, 1, 1)], 3)
    assert entropy_loss(two).item() == pytest.approx(0.5)
    assert entropy_loss(p).item() == pytest.approx(0.875)
    assert math.isfinite(entropy_loss(torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)).item())


def _reference(ref, src, tgt, multi_level):
    up = lambda t: F.interpolate(t, size=(32, 32), mode="bilinear", align_corners=False)  # noqa: E731
    o_s, o_t = joint(ref.segmenter, src.x, tgt.x)
    lv_s = [up(o_s.logits)] + ([up(o_s.aux)] if multi_level else [])
    lv_t = [up(o_t.logits)] + ([up(o_t.aux)] if multi_level else [])
    ce = lambda lo: F.cross_entropy(lo, src.y, ignore_index=255)  # noqa: E731
    loss_seg = ce(lv_s[0]) + (0.1 * ce(lv_s[1]) if multi_level else 0)
    return lv_s, lv_t, loss_seg


def _info(lo):
    p = F.softmax(lo, 1)
    return -p * torch.log2(p + 1e-30) / math.log2(p.shape[1])


def _assert_sgd(new, old, grads, lr):
    for q, p, g in zip(new, old, grads):
        torch.testing.assert_close(q, p - lr * g, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("multi_level", [True, False])
def test_minent_update_equals_a_hand_computed_reference(multi_level):
    lr = 0.05
    m = build_seg(*ADV, "method.mode=minent", f"method.multi_level={str(multi_level).lower()}",
                  "method.ent_weight=0.5", "method.ent_aux_weight=0.25")
    assert len(m.discs) == 0 and set(m.param_groups()) == {"seg", "head"}
    ref = copy.deepcopy(m)
    src, tgt = seg_batches()
    spy = ApplySpy(m, lr=lr)
    m.update(src, tgt, 0, spy)
    assert spy.calls == [({"seg", "head"}, {"seg", "head"})]
    _, lv_t, loss_seg = _reference(ref, src, tgt, multi_level)
    # E = sum over classes of I, averaged over N x H x W target pixels
    loss = loss_seg + sum(w * _info(lo).sum(1).mean() for w, lo in zip([0.5, 0.25], lv_t))
    params = list(ref.segmenter.parameters())
    _assert_sgd(m.segmenter.parameters(), params, torch.autograd.grad(loss, params), lr)


@pytest.mark.parametrize("multi_level", [True, False])
def test_advent_update_equals_a_hand_computed_reference(multi_level):
    lr = 0.05
    m = build_seg(*ADV, f"method.multi_level={str(multi_level).lower()}", "method.adv_weight=0.3",
                  "method.adv_aux_weight=0.2")
    assert len(m.discs) == (2 if multi_level else 1)
    ref = copy.deepcopy(m)
    src, tgt = seg_batches()
    spy = ApplySpy(m, lr=lr)
    m.update(src, tgt, 0, spy)
    assert spy.calls == [({"seg", "head", "disc"}, {"seg", "head", "disc"})]
    assert all(p.requires_grad for p in m.parameters())  # D unfrozen again
    lv_s, lv_t, loss_seg = _reference(ref, src, tgt, multi_level)
    bce = lambda z, v: F.binary_cross_entropy_with_logits(z, torch.full_like(z, float(v)))  # noqa: E731
    discs = list(ref.discs)
    # the segmenter: target maps labelled source (0) by the PRE-update D
    loss_g = loss_seg + sum(w * bce(d(_info(lo)), 0) for w, d, lo in zip([0.3, 0.2], discs, lv_t))
    params = list(ref.segmenter.parameters())
    _assert_sgd(m.segmenter.parameters(), params, torch.autograd.grad(loss_g, params), lr)
    # D: halves of BCE on detached maps, source 0, target 1
    loss_d = sum(0.5 * (bce(d(_info(s.detach())), 0) + bce(d(_info(t.detach())), 1))
                 for d, s, t in zip(discs, lv_s, lv_t))
    d_params = list(ref.discs.parameters())
    _assert_sgd(m.discs.parameters(), d_params, torch.autograd.grad(loss_d, d_params), lr)


def test_advent_builds_the_official_defaults():
    m = build_seg("method=advent")
    c = m.cfg
    assert (c.mode, c.multi_level, c.adv_weight, c.adv_aux_weight, c.ent_weight, c.ent_aux_weight) == \
        ("advent", True, 0.001, 0.0002, 0.001, 0.0002)
    assert m.discs[0][0].in_channels == 4  # D reads the C channels of the self-information map
    cfg = make_cfg("method=advent", "data=digits_seg")
    assert (cfg.optimizer.lr, cfg.method.disc_optimizer.lr) == (2.5e-4, 1e-4)


@pytest.mark.parametrize("mode", ["advent", "minent"])
def test_advent_runs_end_to_end_and_resumes_exactly(tmp_path, mode):
    summary = resumes_exactly([*ADV, f"method.mode={mode}", *SEG_SMALL], tmp_path, stop_after=4)
    assert 0 <= summary["target_miou"] <= 100
