"""MCD: the discrepancy by hand, the three steps A, B, C against a sequential reference written out, which
groups each sub-step changes, the predictions, the real config (the official optimizer and batch)."""
import copy

import pytest
import torch
import torch.nn.functional as F
from test_dann import vector_batches
from torch import nn

from helpers import SpyStepper, build, sgd_stepper
from uda.methods.mcd import MCD, MCDConfig, discrepancy
from uda.schema import OptimizerConfig


def test_discrepancy_by_hand():
    a, b = torch.tensor([[0.0, 0.0], [2.0, 0.0]]), torch.tensor([[0.0, 0.0], [0.0, 2.0]])
    p = torch.sigmoid(torch.tensor(2.0)).item()  # softmax([2, 0])_0
    # rows: |0.5 - 0.5| twice; |p - (1 - p)| twice; mean over 4 entries
    assert discrepancy(a, b).item() == pytest.approx(2 * abs(2 * p - 1) / 4, rel=1e-6)


def tiny_mcd(**kw):
    torch.manual_seed(0)
    return MCD(cfg=MCDConfig(**kw), features=nn.Sequential(nn.Linear(4, 3), nn.Tanh()), classifier=nn.Linear(3, 2),
               classifier2=nn.Linear(3, 2), head_optimizer=OptimizerConfig())


def _sgd(params, grads, lr):
    with torch.no_grad():
        for p, g in zip(params, grads):
            p -= lr * g


def test_mcd_update_equals_the_three_steps_written_out():
    m = tiny_mcd(num_k=3)
    ref = copy.deepcopy(m)
    src, tgt = vector_batches()
    lr = 0.1
    g_p, c_p = list(ref.features.parameters()), list(ref.classifier.parameters()) + list(ref.classifier2.parameters())

    def ce(f):
        return F.cross_entropy(ref.classifier(f), src.y) + F.cross_entropy(ref.classifier2(f), src.y)

    def dis(f):
        p1, p2 = torch.softmax(ref.classifier(f), 1), torch.softmax(ref.classifier2(f), 1)
        return (p1 - p2).abs().mean()

    # A) everything on source CE
    _sgd(g_p + c_p, torch.autograd.grad(ce(ref.features(src.x)), g_p + c_p), lr)
    # B) classifiers on CE - d, the generator's gradient thrown away
    loss_b = ce(ref.features(src.x)) - dis(ref.features(tgt.x))
    _sgd(c_p, torch.autograd.grad(loss_b, c_p), lr)
    # C) the generator on d, three times
    for _ in range(3):
        _sgd(g_p, torch.autograd.grad(dis(ref.features(tgt.x)), g_p), lr)
    out = m.update(src, tgt, 0, sgd_stepper(m, lr=lr, momentum=0.0))
    for a, b in zip(m.parameters(), ref.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    assert out["loss/discrepancy_b"].item() > 0


def test_mcd_sub_steps_change_exactly_their_groups():
    m = tiny_mcd()
    spy = SpyStepper(m)
    m.update(*vector_batches(), 0, spy)
    assert spy.calls == [({"feat", "cls", "cls2"},) * 2, ({"cls", "cls2"},) * 2] + [({"feat"},) * 2] * 4


def test_mcd_predictions_are_the_chosen_classifier_or_their_sum():
    m = tiny_mcd()
    x = torch.randn(3, 4)
    f = m.features(x)
    assert torch.allclose(m.predict(x), m.classifier(f) + m.classifier2(f))
    m.cfg.predict = "c2"
    assert torch.allclose(m.predict(x), m.classifier2(f))


def test_mcd_builds_from_the_real_config_with_the_official_optimizer():
    from helpers import make_cfg

    m = build("method=mcd")
    assert set(m.param_groups()) == {"feat", "cls", "cls2"} and m.cfg.num_k == 4
    assert not torch.equal(m.classifier[0].weight, m.classifier2[0].weight)
    cfg = make_cfg("method=mcd")
    assert (cfg.optimizer.name, cfg.optimizer.lr, cfg.optimizer.weight_decay, cfg.trainer.batch_size) == \
        ("adam", 2e-4, 5e-4, 128)
    assert m.predict(torch.zeros(2, 3, 28, 28)).shape == (2, 10)
