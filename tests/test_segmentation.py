"""Segmentation stack: mIoU by hand, digits_seg's construction, the segmentation source-only baseline
and AdaptSegNet's update against a hand-computed reference (which groups change in which sub-step),
and end-to-end runs on digits_seg (summary keys, grids, exact resume)."""
import copy
import json

import pytest
import torch
import torch.nn.functional as F

from uda.config import ConfigError, validate
from uda.data.digits_seg import BACKGROUND, compose
from uda.data.pairs import PairInfo
from uda.engine import checkpoint as ckpt
from uda.engine.loop import TrainingInterrupted, train
from uda.engine.optim import Stepper
from uda.losses import gan_loss, seg_ce
from uda.methods.base import Batch
from uda.metrics import confusion, iou, miou
from uda.nets.segmentation import forward_pair
from uda.registry import get_method

from conftest import make_cfg, run_cli, state_equal

K = 4
INFO = PairInfo("digits_seg", "mnist_seg", "mnistm_seg", 3, 32, K, mean=(0.5,) * 3, std=(0.5,) * 3,
                task="segmentation", class_names=tuple("abcd"))
TINY = ["data=digits_seg", "backbone.channels=[4,8]"]
ASN = ["method=adaptsegnet", "method.ndf=4"]


# ------------------------------------------------------------------------------------------ mIoU
def test_miou_equals_a_hand_computation_with_ignore_pixels_and_absent_classes():
    y = torch.tensor([[0, 0, 1], [255, 2, 2]])
    pred = torch.tensor([[0, 1, 1], [2, 2, 0]])  # the ignored pixel's prediction (2) must not count
    cm = confusion(pred, y, K)
    assert cm.sum() == 5 and cm[2, 2] == 1 and cm[2, 0] == 1 and cm[0, 1] == 1
    # class 0: TP 1, FP 1, FN 1 -> 1/3; class 1: TP 1, FP 1 -> 1/2; class 2: TP 1, FN 1 -> 1/2; class 3 absent
    per_class = iou(cm)
    torch.testing.assert_close(per_class[:3], torch.tensor([1 / 3, 1 / 2, 1 / 2], dtype=torch.float64))
    assert torch.isnan(per_class[3])
    assert miou(cm) == pytest.approx(100 * (1 / 3 + 1 / 2 + 1 / 2) / 3)


def test_miou_accumulates_the_confusion_over_batches_not_the_per_batch_means():
    # batch A has only class 0 (all right); batch B classes 0 and 1 (one pixel of 1 predicted as 0)
    a = confusion(torch.tensor([0, 0]), torch.tensor([0, 0]), 2)
    b = confusion(torch.tensor([0, 1, 0]), torch.tensor([0, 1, 1]), 2)
    # whole set: class 0 TP 3, FP 1 -> 3/4; class 1 TP 1, FN 1 -> 1/2; mIoU 62.5
    assert miou(a + b) == pytest.approx(62.5)
    assert miou(a + b) != pytest.approx((miou(a) + miou(b)) / 2)


def test_seg_ce_ignores_255_and_upsamples_to_the_labels():
    logits = torch.randn(2, 3, 2, 2)
    y = torch.randint(0, 3, (2, 4, 4))
    y[0, 0, 0] = 255
    up = F.interpolate(logits, size=(4, 4), mode="bilinear", align_corners=False)
    keep = y != 255
    hand = -(F.log_softmax(up, 1).gather(1, y.clamp(max=2)[:, None])[:, 0][keep]).mean()
    torch.testing.assert_close(seg_ce(logits, y), hand)


def test_gan_losses_equal_hand_computations():
    z = torch.tensor([[0.5, -1.0], [2.0, 0.0]])
    bce_1 = torch.log1p(torch.exp(-z)).mean()  # -log sigmoid(z)
    torch.testing.assert_close(gan_loss(z, 1, "bce"), bce_1)
    torch.testing.assert_close(gan_loss(z, 0, "bce"), torch.log1p(torch.exp(z)).mean())
    torch.testing.assert_close(gan_loss(z, 1, "ls"), ((z - 1) ** 2).mean())


# ------------------------------------------------------------------------------------ digits_seg
def test_digits_seg_labels_follow_the_topmost_bright_digit_and_background_elsewhere():
    digits = torch.zeros(2, 28, 28, dtype=torch.uint8)
    digits[0, 4:20, 4:20] = 200  # "digit" of class 3: a bright square
    digits[1, 10:26, 10:26] = 250  # class 7, brighter
    digits[1, 0:2, 0:2] = 100  # faint pixels are background
    canvas, target = compose(digits.numpy(), torch.tensor([3, 7]).numpy(), 50, seed=0)
    assert canvas.shape == target.shape == (50, 64, 64)
    classes = set(target.flatten().tolist())
    assert classes <= {3, 7, BACKGROUND} and BACKGROUND in classes
    c, t = torch.from_numpy(canvas), torch.from_numpy(target)
    assert torch.all(c[t == BACKGROUND] < 128)  # background pixels are dark or faint
    assert torch.all(c[t == 3] == 200) and torch.all(c[t == 7] == 250)  # where 7 overlaps 3, 7 (brighter) wins
    assert (t != BACKGROUND).any(dim=(1, 2)).all()  # every canvas has at least one digit


# ----------------------------------------------------------------------------------- the updates
class ApplySpy(Stepper):
    """SGD per group; records the groups of each ``apply`` and which groups' parameters changed."""

    def __init__(self, method, lr=0.05):
        opts = {g: torch.optim.SGD(p, lr=lr) for g, p in method.param_groups().items()}
        super().__init__(opts, torch.amp.GradScaler("cpu", enabled=False), "cpu")
        self.method, self.calls = method, []

    def apply(self, *groups):
        before = {g: [p.detach().clone() for p in ps] for g, ps in self.method.param_groups().items()}
        super().apply(*groups)
        changed = {g for g, ps in self.method.param_groups().items()
                   if any(not torch.equal(a, p) for a, p in zip(before[g], ps))}
        self.calls.append((set(groups), changed))


def seg_batches(n=3, size=32):
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, K, (n, size, size), generator=g)
    y[:, :2] = 255
    return (Batch(torch.randn(n, 3, size, size, generator=g), y),
            Batch(torch.randn(n, 3, size, size, generator=g) * 0.5 + 0.3, None))


def joint(net, a, b):
    """Reference for ``forward_pair``: one pass over both batches, split back."""
    out, n = net(torch.cat([a, b])), a.shape[0]
    return tuple(type(out)(*(None if t is None else t[sl] for t in out)) for sl in (slice(None, n), slice(n, None)))


def test_forward_pair_is_one_pass_so_batch_norm_statistics_cover_both_domains():
    torch.manual_seed(0)
    net = build("source_only").segmenter.train()
    src, tgt = seg_batches()
    bn = next(m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    mean0 = bn.running_mean.clone()
    out_s, out_t = forward_pair(net, src.x, tgt.x)
    first_conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    with torch.no_grad():  # the first BN's input: batch mean over source AND target
        mu = first_conv(torch.cat([src.x, tgt.x])).mean(dim=(0, 2, 3))
    torch.testing.assert_close(bn.running_mean, 0.9 * mean0 + 0.1 * mu, rtol=1e-4, atol=1e-6)
    ref_s, ref_t = joint(copy.deepcopy(net), src.x, tgt.x)
    torch.testing.assert_close(out_s.logits, ref_s.logits)
    torch.testing.assert_close(out_t.features, ref_t.features)
    sep_s = net(src.x)  # a separate pass normalises by the source batch alone: different outputs
    assert not torch.allclose(sep_s.logits, out_s.logits, atol=1e-4)
    small = tgt.x[:, :, :16, :16]  # different image sizes: two passes
    a, b = forward_pair(net.eval(), src.x, small)
    assert a.logits.shape[-1] != b.logits.shape[-1]
    torch.testing.assert_close(b.logits, net(small).logits)


def build(name, *overrides):
    torch.manual_seed(0)
    extra = ["method.ndf=4"] if name == "adaptsegnet" else []
    return get_method(name).from_config(make_cfg(f"method={name}", *TINY, *extra, *overrides), INFO)


@pytest.mark.parametrize("multi_level", [True, False])
def test_adaptsegnet_update_equals_a_hand_computed_reference(multi_level):
    lr = 0.05
    m = build("adaptsegnet", f"method.multi_level={str(multi_level).lower()}", "method.adv_weight=0.3",
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


def test_segmentation_source_only_steps_the_segmenter_on_source_alone():
    m = build("source_only")
    assert type(m).__name__ == "SegSourceOnly" and set(m.param_groups()) == {"seg", "head"}
    src, tgt = seg_batches()
    a, b = copy.deepcopy(m), copy.deepcopy(m)
    spy = ApplySpy(a)
    a.update(src, tgt, 0, spy)
    assert spy.calls == [({"seg", "head"}, {"seg", "head"})]
    b.update(src, Batch(torch.zeros_like(tgt.x), None), 0, ApplySpy(b))  # the target batch is never looked at
    assert state_equal(a.state_dict(), b.state_dict())


def test_head_learning_rate_multiplier_reaches_the_heads_optimizer():
    cfg = make_cfg("method=adaptsegnet", *TINY, "backbone.head_lr_mult=10", "optimizer.lr=0.002")
    m = get_method("adaptsegnet").from_config(cfg, INFO)
    over = m.optimizer_overrides()
    assert over["head"].lr == pytest.approx(0.02) and over["disc"].lr == pytest.approx(1e-4)
    assert {id(p) for p in m.param_groups()["head"]} == {id(p) for p in m.segmenter.new_parameters()}


@pytest.mark.parametrize("overrides, needle", [
    (["data=digits_seg", "method=dann"], "classification method"),
    (["data=digits_seg", "backbone=lenet"], "valid backbones: seg_small, deeplabv2, fcn8s"),
    (["method=adaptsegnet", "backbone=dann_mnist"], "needs a segmentation pair"),
    (["data=digits_seg", "method=adaptsegnet", "backbone.channels=[8]"], "at least two"),
])
def test_mismatched_task_method_and_backbone_are_clear_errors(overrides, needle):
    with pytest.raises(ConfigError, match=needle):
        validate(make_cfg(*overrides))


# ----------------------------------------------------------------------------------- end to end
SEG_SMALL = [*TINY, "trainer.max_steps=6", "trainer.batch_size=4", "trainer.eval_every=3",
             "trainer.checkpoint_every=3", "trainer.log_every=2", "trainer.progress=none",
             "trainer.eval_batch_size=32", "data.train_subset=64", "data.test_subset=32", "data.val_size=8"]


@pytest.fixture(scope="module")
def seg_reference(tmp_path_factory, mnist_root):
    d = tmp_path_factory.mktemp("seg_ref")
    return d, train(make_cfg(*ASN, *SEG_SMALL), d)


def test_adaptsegnet_run_reports_miou_per_class_ious_and_writes_colourised_grids(seg_reference):
    d, summary = seg_reference
    assert {"source_miou", "target_miou", "source_iou", "target_iou"} <= summary.keys()
    assert "target_acc" not in summary
    assert set(summary["target_iou"]) == {*map(str, range(10)), "background"}
    assert 0 <= summary["target_miou"] <= 100
    rows = [json.loads(ln) for ln in (d / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [3, 6] and "source_val_miou" in rows[0] and "target_entropy" in rows[0]
    assert summary["selected"]["source_val"]["target_miou"] in {r["target_miou"] for r in rows}
    grid = d / "images" / "seg_target_0000006.png"
    assert grid.is_file()
    from torchvision.io import read_image

    img = read_image(str(grid))
    assert img.shape[0] == 3 and img.shape[1] > 3 * 64  # rows: images, labels, predictions


@pytest.mark.parametrize("stop_after", [4])
def test_adaptsegnet_resumes_exactly(tmp_path, seg_reference, stop_after):
    with pytest.raises(TrainingInterrupted):
        train(make_cfg(*ASN, *SEG_SMALL), tmp_path, stop_after=stop_after)
    train(make_cfg(*ASN, *SEG_SMALL, "resume=true"), tmp_path)
    a = ckpt.load(tmp_path / "checkpoints" / "last.pt")
    b = ckpt.load(seg_reference[0] / "checkpoints" / "last.pt")
    assert state_equal(a["method"], b["method"])


def test_cli_source_only_on_digits_seg_prints_miou(tmp_path):
    res = run_cli("train", "method=source_only", *SEG_SMALL, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "target_miou=" in res.stdout
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["method"] == "source_only" and "target_miou" in summary
    # `uda eval` on a segmentation run re-computes the final evaluation: mIoU and per-class IoUs
    out = run_cli("eval", str(tmp_path / "run"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads((tmp_path / "run" / "eval_last_digits_seg.json").read_text())
    assert "target_acc" not in result
    for key in ("source_miou", "target_miou"):
        assert result[key] == pytest.approx(summary[key], abs=1e-6)
    assert result["target_iou"] == summary["target_iou"]
