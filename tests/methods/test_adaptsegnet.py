"""AdaptSegNet: its single update against a hand-computed reference (single- and multi-level), the heads'
learning-rate multiplier, and an end-to-end run on the synthetic segmentation pair (mIoU, per-class IoUs, grids)
that resumes exactly."""
import copy
import json

import pytest
import torch
import torch.nn.functional as F

from helpers import SEG_SMALL, ApplySpy, build_seg, joint, make_cfg, seg_batches, state_equal
from uda.engine import checkpoint as ckpt
from uda.engine.loop import TrainingInterrupted, train

ASN = ["method=adaptsegnet", "method.ndf=4"]


@pytest.mark.parametrize("multi_level", [True, False])
def test_adaptsegnet_update_equals_a_hand_computed_reference(multi_level):
    lr = 0.05
    m = build_seg(*ASN, f"method.multi_level={str(multi_level).lower()}", "method.adv_weight=0.3",
              "method.adv_aux_weight=0.2", "method.seg_aux_weight=0.1")
    ref = copy.deepcopy(m)
    src, tgt = seg_batches()
    spy = ApplySpy(m, lr=lr)
    out = m.update(src, tgt, 0, spy)
    assert spy.calls == [({"seg", "head", "disc"}, {"seg", "head", "disc"})]  # one step of everything, at the end
    assert ("loss/seg_aux" in out) == multi_level and (m.disc_aux is not None) == multi_level
    assert all(p.requires_grad for p in m.parameters())  # D unfrozen again

    # reference: plain autograd on the copies. Segmenter: CE + 0.1 CE_aux + adversarial terms with the
    # target outputs labelled source (0) by the PRE-update discriminators; D: halves of BCE on detached outputs
    net, discs = ref.segmenter, [ref.disc] + ([ref.disc_aux] if multi_level else [])
    up = lambda t: F.interpolate(t, size=(32, 32), mode="bilinear", align_corners=False)  # noqa: E731
    o_s, o_t = joint(net, src.x, tgt.x)  # one pass over both batches (batch-norm statistics)
    lv_s = [up(o_s.logits)] + ([up(o_s.aux)] if multi_level else [])
    lv_t = [up(o_t.logits)] + ([up(o_t.aux)] if multi_level else [])
    ce = lambda lo: F.cross_entropy(lo, src.y, ignore_index=255)  # noqa: E731
    bce = lambda z, v: F.binary_cross_entropy_with_logits(z, torch.full_like(z, float(v)))  # noqa: E731
    loss_g = ce(lv_s[0]) + (0.1 * ce(lv_s[1]) if multi_level else 0)
    loss_g = loss_g + sum(w * bce(d(F.softmax(lo, 1)), 0) for w, d, lo in zip([0.3, 0.2], discs, lv_t))
    g_params = list(net.parameters())
    grads = torch.autograd.grad(loss_g, g_params)
    for p, g, q in zip(g_params, grads, m.segmenter.parameters()):
        torch.testing.assert_close(q, p - lr * g, rtol=1e-4, atol=1e-6)
    loss_d = sum(0.5 * (bce(d(F.softmax(s.detach(), 1)), 0) + bce(d(F.softmax(t.detach(), 1)), 1))
                 for d, s, t in zip(discs, lv_s, lv_t))
    d_params = [p for d in discs for p in d.parameters()]
    grads = torch.autograd.grad(loss_d, d_params)
    got = [p for d in ([m.disc] + ([m.disc_aux] if multi_level else [])) for p in d.parameters()]
    for p, g, q in zip(d_params, grads, got):
        torch.testing.assert_close(q, p - lr * g, rtol=1e-4, atol=1e-6)


def test_head_learning_rate_multiplier_reaches_the_heads_optimizer():
    m = build_seg("method=adaptsegnet", "backbone.head_lr_mult=10", "optimizer.lr=0.002")
    over = m.optimizer_overrides()
    assert over["head"].lr == pytest.approx(0.02) and over["disc"].lr == pytest.approx(1e-4)
    assert {id(p) for p in m.param_groups()["head"]} == {id(p) for p in m.segmenter.new_parameters()}


@pytest.fixture(scope="module")
def seg_reference(tmp_path_factory):
    d = tmp_path_factory.mktemp("seg_ref")
    return d, train(make_cfg(*ASN, *SEG_SMALL, "trainer.images=true"), d)


def test_adaptsegnet_run_reports_miou_per_class_ious_and_the_selection_scores(seg_reference):
    d, summary = seg_reference
    assert {"source_miou", "target_miou", "source_iou", "target_iou"} <= summary.keys()
    assert "target_acc" not in summary
    assert set(summary["target_iou"]) == {"square", "disk", "bar", "background"}
    assert 0 <= summary["target_miou"] <= 100
    rows = [json.loads(ln) for ln in (d / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [3, 6] and "source_val_miou" in rows[0] and "target_entropy" in rows[0]
    assert summary["selected"]["source_val"]["target_miou"] in {r["target_miou"] for r in rows}


def test_adaptsegnet_run_writes_colourised_grids(seg_reference):
    d, _ = seg_reference
    grid = d / "images" / "seg_target_0000006.png"
    assert grid.is_file()
    from uda.data.files import read_image

    img = read_image(grid)
    assert img.shape[0] == 3 and img.shape[1] > 3 * 32  # rows: images, labels, predictions


@pytest.mark.parametrize("stop_after", [4])
def test_adaptsegnet_resumes_exactly(tmp_path, seg_reference, stop_after):
    with pytest.raises(TrainingInterrupted):
        train(make_cfg(*ASN, *SEG_SMALL), tmp_path, stop_after=stop_after)
    train(make_cfg(*ASN, *SEG_SMALL, "resume=true"), tmp_path)
    a = ckpt.load(tmp_path / "checkpoints" / "last.pt")
    b = ckpt.load(seg_reference[0] / "checkpoints" / "last.pt")
    assert state_equal(a["method"], b["method"])
