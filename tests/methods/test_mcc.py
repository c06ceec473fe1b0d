"""MCC: the class-confusion loss against a hand computation with loops, the single update against its
gradients written out, which groups change, and the networks the real config builds."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from test_dann import vector_batches
from torch import nn

from helpers import build, changed, sgd_stepper, snapshot
from uda.methods.mcc import MCC, MCCConfig, class_confusion
from uda.schema import OptimizerConfig


def _confusion_by_hand(logits, t):
    rows = [[math.exp(z / t) for z in row] for row in logits]
    y = [[e / sum(r) for e in r] for r in rows]
    h = [-sum(p * math.log(p + 1e-5) for p in r) for r in y]
    w = [1 + math.exp(-hi) for hi in h]
    w = [len(w) * wi / sum(w) for wi in w]
    k = len(logits[0])
    c = [[sum(w[i] * y[i][a] * y[i][b] for i in range(len(y))) for b in range(k)] for a in range(k)]
    col = [sum(c[a][b] for a in range(k)) for b in range(k)]
    c = [[c[a][b] / col[b] for b in range(k)] for a in range(k)]
    return (sum(map(sum, c)) - sum(c[j][j] for j in range(k))) / k


@pytest.mark.parametrize("t", [1.0, 2.5])
def test_class_confusion_equals_a_hand_computation(t):
    logits = [[2.0, -1.0, 0.5], [0.1, 0.2, 0.3], [-2.0, 3.0, 0.0], [1.0, 1.0, -1.0]]
    assert class_confusion(torch.tensor(logits), t).item() == pytest.approx(_confusion_by_hand(logits, t), rel=1e-6)


def test_class_confusion_is_zero_for_one_hot_and_the_weights_are_detached():
    # confident, distinct predictions: C is diagonal, nothing is confused
    assert class_confusion(torch.tensor([[40.0, 0.0], [0.0, 40.0]]), 1.0).item() == pytest.approx(0.0, abs=1e-6)
    # uniform predictions: C~ = 1/K everywhere, L = (K - 1) / K
    assert class_confusion(torch.zeros(5, 4), 2.5).item() == pytest.approx(0.75)
    # the gradient equals the one with w computed from a detached copy of the logits
    z = torch.tensor([[1.0, -0.5, 0.2], [0.3, 0.9, -1.0]], requires_grad=True)
    (g,) = torch.autograd.grad(class_confusion(z, 2.5), z)
    zd = z.detach()
    y = torch.softmax(z / 2.5, 1)
    yd = torch.softmax(zd / 2.5, 1)
    w = 1 + torch.exp((yd * torch.log(yd + 1e-5)).sum(1))
    w = 2 * w / w.sum()
    c = (y * w[:, None]).t() @ y
    c = c / c.sum(0, keepdim=True)
    (g_ref,) = torch.autograd.grad((c.sum() - c.trace()) / 3, z)
    assert torch.allclose(g, g_ref, atol=1e-7)


def tiny_mcc(**kw):
    torch.manual_seed(0)
    return MCC(cfg=MCCConfig(**kw), features=nn.Sequential(nn.Linear(4, 3), nn.Tanh()), classifier=nn.Linear(3, 2),
               head_optimizer=OptimizerConfig())


def test_mcc_update_equals_hand_computed_step():
    m = tiny_mcc(mcc_weight=0.7, temperature=2.0)
    ref = copy.deepcopy(m)
    src, tgt = vector_batches()
    loss_y = F.cross_entropy(ref.classifier(ref.features(src.x)), src.y)
    loss_mcc = class_confusion(ref.classifier(ref.features(tgt.x)), 2.0)
    params = list(ref.parameters())
    grads = torch.autograd.grad(loss_y + 0.7 * loss_mcc, params)
    lr = 0.1
    out = m.update(src, tgt, 0, sgd_stepper(m, lr=lr))
    for p_new, p_old, g in zip(m.parameters(), params, grads):
        assert torch.allclose(p_new, (p_old - lr * g).detach(), atol=1e-6)
    assert out["loss/mcc"].item() == pytest.approx(loss_mcc.item(), rel=1e-6)
    assert out["loss/cls"].item() == pytest.approx(loss_y.item(), rel=1e-6)


def test_mcc_changes_features_and_classifier_and_the_target_moves_them():
    m = tiny_mcc()
    src, tgt = vector_batches()
    before = snapshot(m)
    m.update(src, tgt, 0, sgd_stepper(m, momentum=0.0))
    assert changed(before, m) == {"feat", "cls"}
    # with mcc_weight 0 the step is source-only's: the target batch changes nothing
    a, b = tiny_mcc(mcc_weight=0.0), tiny_mcc(mcc_weight=0.0)
    a.update(src, tgt, 0, sgd_stepper(a))
    b.update(src, type(tgt)(tgt.x + 5, None), 0, sgd_stepper(b))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_mcc_builds_from_the_real_config():
    m = build("method=mcc")
    assert set(m.param_groups()) == {"feat", "cls"}
    assert m.cfg.temperature == 2.5 and m.cfg.mcc_weight == 1.0
    assert m.predict(torch.zeros(2, 3, 28, 28)).shape == (2, 10)
