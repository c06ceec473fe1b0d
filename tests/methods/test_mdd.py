"""MDD: log(1 - softmax) and the margin disparity by hand, the single update against its gradients written
out (f on CE only, f' on the disparity, F on CE minus eta x the disparity), the ramp, the real config."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from test_dann import vector_batches
from torch import nn

from helpers import build, changed, sgd_stepper, snapshot
from uda.methods.mdd import MDD, MDDConfig, log_one_minus_softmax, margin_disparity
from uda.schema import OptimizerConfig


def test_log_one_minus_softmax_is_exact_and_finite_where_the_naive_form_is_not():
    z = torch.tensor([[1.0, 2.0, -0.5], [0.0, 0.0, 0.0]])
    y = torch.tensor([1, 2])
    p = torch.softmax(z, 1)
    naive = torch.log(1 - p[torch.arange(2), y])
    assert torch.allclose(log_one_minus_softmax(z, y), naive, atol=1e-6)
    # a confident logit: 1 - p underflows to 0 in fp32, the exact form gives log(e^-60 * 2) ~ -59.31
    sure = log_one_minus_softmax(torch.tensor([[60.0, 0.0, 0.0]]), torch.tensor([0]))
    assert torch.isfinite(sure).all() and sure.item() == pytest.approx(math.log(2) - 60, rel=1e-5)


def test_margin_disparity_by_hand():
    adv_s, adv_t = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0], [1.0, 1.0]])
    y_s, y_t = torch.tensor([0]), torch.tensor([1, 0])
    ce_s = -math.log(math.e / (math.e + 1))
    l1p_t = [math.log(1 - math.exp(2) / (1 + math.exp(2))), math.log(0.5)]
    expect = 3.0 * ce_s - sum(l1p_t) / 2
    assert margin_disparity(adv_s, adv_t, y_s, y_t, margin=3.0).item() == pytest.approx(expect, rel=1e-6)


def tiny_mdd(**kw):
    torch.manual_seed(0)
    return MDD(cfg=MDDConfig(**kw), features=nn.Sequential(nn.Linear(4, 3), nn.Tanh()), classifier=nn.Linear(3, 2),
               adv_classifier=nn.Linear(3, 2), head_optimizer=OptimizerConfig())


def test_mdd_update_equals_hand_computed_step():
    m = tiny_mdd(margin=2.0, trade_off=0.5, grl_horizon=10)
    ref = copy.deepcopy(m)
    src, tgt = vector_batches()
    step, lr = 7, 0.1
    eta = 0.5 * (2 / (1 + math.exp(-0.7)) - 1)
    f_s, f_t = ref.features(src.x), ref.features(tgt.x)
    lo_s, lo_t = ref.classifier(f_s), ref.classifier(f_t)
    loss_y = F.cross_entropy(lo_s, src.y)
    yh_s, yh_t = lo_s.argmax(1), lo_t.argmax(1)
    a_s, a_t = ref.adv_classifier(f_s), ref.adv_classifier(f_t)
    p_t = torch.softmax(a_t, 1)[torch.arange(len(yh_t)), yh_t]
    bracket = 2.0 * F.cross_entropy(a_s, yh_s) - torch.log(1 - p_t).mean()
    fp, cp, ap = (list(x.parameters()) for x in (ref.features, ref.classifier, ref.adv_classifier))
    gy = torch.autograd.grad(loss_y, fp + cp, retain_graph=True)
    gb = torch.autograd.grad(bracket, fp + ap)
    want = ([a - eta * b for a, b in zip(gy[:len(fp)], gb[:len(fp)])] + list(gy[len(fp):]) + list(gb[len(fp):]))
    out = m.update(src, tgt, step, sgd_stepper(m, lr=lr))
    got = list(m.features.parameters()) + list(m.classifier.parameters()) + list(m.adv_classifier.parameters())
    for p_new, p_old, g in zip(got, fp + cp + ap, want):
        assert torch.allclose(p_new, (p_old - lr * g).detach(), atol=1e-6)
    assert out["sched/grl_lambda"].item() == pytest.approx(eta)
    assert out["loss/mdd"].item() == pytest.approx(bracket.item(), rel=1e-6)


def test_mdd_changes_all_three_groups_and_the_official_ramp():
    m = tiny_mdd()
    src, tgt = vector_batches()
    before = snapshot(m)
    m.update(src, tgt, 500, sgd_stepper(m, momentum=0.0))
    assert changed(before, m) == {"feat", "cls", "adv"}
    # 0.2 / (1 + exp(-i / 1000)) - 0.1: 0 at the start, 0.1 in the limit, never capped
    assert m.grl_lambda(0) == 0.0
    assert m.grl_lambda(1000) == pytest.approx(0.2 / (1 + math.exp(-1)) - 0.1)
    assert m.grl_lambda(3000) > m.grl_lambda(1000) and m.grl_lambda(100000) == pytest.approx(0.1)


def test_mdd_builds_from_the_real_config_with_its_own_adversarial_head():
    m = build("method=mdd")
    assert set(m.param_groups()) == {"feat", "cls", "adv"}
    assert m.cfg.margin == 4.0 and m.cfg.trade_off == 0.1
    shapes = [p.shape for p in m.classifier.parameters()]
    assert [p.shape for p in m.adv_classifier.parameters()] == shapes
    assert not torch.equal(m.classifier[0].weight, m.adv_classifier[0].weight)  # initialised on its own
    assert m.predict(torch.zeros(2, 3, 28, 28)).shape == (2, 10)
