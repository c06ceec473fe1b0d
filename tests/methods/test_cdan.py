"""CDAN: the multilinear maps by hand, the single update against the paper's gradients computed by hand
(CDAN and CDAN+E), which groups change, the ramp, and the networks the real config builds."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from test_dann import vector_batches
from torch import nn

from helpers import INFO, build, changed, make_cfg, sgd_stepper, snapshot
from uda.losses import grl_lambda
from uda.methods import get_method
from uda.methods.cdan import CDAN, CDANConfig, entropy_weights, multilinear, randomized_multilinear
from uda.schema import OptimizerConfig
from uda.schema.optimizer import Schedule


def tiny_cdan(**kw):
    torch.manual_seed(0)
    cfg = CDANConfig(**kw)
    d_in = CDAN.disc_input_dim(cfg, 3, 2)
    return CDAN(cfg=cfg, features=nn.Sequential(nn.Linear(4, 3), nn.Tanh()), classifier=nn.Linear(3, 2),
                discriminator=nn.Linear(d_in, 1), feat_dim=3, num_classes=2, head_optimizer=OptimizerConfig())


def test_multilinear_maps_by_hand():
    f, g = torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[0.25, 0.75]])
    # row-major flatten of g f^T: g_0 f, then g_1 f
    assert multilinear(f, g).tolist() == [[0.25, 0.5, 0.75, 0.75, 1.5, 2.25]]
    r_f, r_g = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), torch.tensor([[2.0, 0.0], [0.0, 4.0]])
    # f R_f = [4, 5]; g R_g = [0.5, 3]; product / sqrt(2)
    assert randomized_multilinear(f, g, r_f, r_g)[0].tolist() == pytest.approx(
        [4 * 0.5 / math.sqrt(2), 5 * 3 / math.sqrt(2)]
    )


def _reference_grads(ref, src, tgt, lam, weighted):
    """The gradients of one CDAN step written out: L_y on source; L_d on D(T(f, g)) with g detached in T;
    F gets dL_y - lam dL_d, C gets dL_y (- lam dL_d through H for CDAN+E), D gets dL_d."""
    f_s, f_t = ref.features(src.x), ref.features(tgt.x)
    lo_s, lo_t = ref.classifier(f_s), ref.classifier(f_t)
    loss_y = F.cross_entropy(lo_s, src.y)
    g_s, g_t = torch.softmax(lo_s, 1), torch.softmax(lo_t, 1)
    d = ref.discriminator(torch.cat([multilinear(f_s, g_s.detach()), multilinear(f_t, g_t.detach())])).view(-1)
    y_d = torch.cat([torch.zeros(len(f_s)), torch.ones(len(f_t))])
    bce = F.binary_cross_entropy_with_logits(d, y_d, reduction="none")
    if weighted:
        ws = []
        for g in (g_s, g_t):
            w = 1 + torch.exp((g * torch.log(g)).sum(1))  # 1 + exp(-H)
            ws.append(w / w.sum().detach())
        w = torch.cat(ws)
        loss_d = (w * bce).sum() / w.sum().detach()
    else:
        loss_d = bce.mean()
    fp, cp, dp = (list(m.parameters()) for m in (ref.features, ref.classifier, ref.discriminator))
    gy = torch.autograd.grad(loss_y, fp + cp, retain_graph=True)
    gd = torch.autograd.grad(loss_d, fp + cp + dp, allow_unused=True)
    gd = [torch.zeros_like(p) if g is None else g for p, g in zip(fp + cp + dp, gd)]
    nf, nc = len(fp), len(cp)
    return ([a - lam * b for a, b in zip(gy[:nf], gd[:nf])],
            [a - lam * b for a, b in zip(gy[nf:], gd[nf:nf + nc])],
            gd[nf + nc:], loss_y, loss_d)


@pytest.mark.parametrize("weighted", [False, True])
def test_cdan_update_equals_hand_computed_step(weighted):
    m = tiny_cdan(adv_weight=0.8, entropy_weighting=weighted, grl_horizon=10)
    ref = copy.deepcopy(m)
    src, tgt = vector_batches()
    step, lr = 4, 0.1
    lam = 0.8 * (2 / (1 + math.exp(-10 * 0.4)) - 1)
    g_f, g_c, g_d, loss_y, loss_d = _reference_grads(ref, src, tgt, lam, weighted)
    if not weighted:  # C sees only CE: g is detached in T and no entropy term
        assert all(torch.equal(a, b) for a, b in zip(g_c, torch.autograd.grad(
            F.cross_entropy(ref.classifier(ref.features(src.x)), src.y), list(ref.classifier.parameters()))))
    out = m.update(src, tgt, step, sgd_stepper(m, lr=lr))  # first SGD step: momentum buffer = gradient
    params = list(ref.features.parameters()) + list(ref.classifier.parameters()) + list(ref.discriminator.parameters())
    got = list(m.features.parameters()) + list(m.classifier.parameters()) + list(m.discriminator.parameters())
    for p_new, p_old, g in zip(got, params, g_f + g_c + g_d):
        assert torch.allclose(p_new, (p_old - lr * g).detach(), atol=1e-6)
    assert out["sched/grl_lambda"].item() == pytest.approx(lam)
    assert out["loss/cls"].item() == pytest.approx(loss_y.item(), rel=1e-6)
    assert out["loss/domain"].item() == pytest.approx(loss_d.item(), rel=1e-6)


def test_entropy_weights_by_hand_and_the_reversal_reaches_H():
    g_s = torch.tensor([[0.5, 0.5], [1.0 - 1e-9, 1e-9]], requires_grad=True)
    g_t = torch.tensor([[0.9, 0.1]], requires_grad=True)
    w = entropy_weights(g_s, g_t, lam=0.5)
    w0, w1 = 1 + math.exp(-math.log(2)), 1 + math.exp(0.0)  # H = log 2 and ~0
    assert w[:2].tolist() == pytest.approx([w0 / (w0 + w1), w1 / (w0 + w1)], rel=1e-6)
    assert w[2].item() == pytest.approx(1.0)
    # the gradient through H is reversed and scaled by lambda
    (w[0]).backward()
    grad_rev = g_s.grad.clone()
    g_s.grad = None
    w_plain = entropy_weights(g_s, g_t, lam=-1.0)  # reversal by -1 = the plain gradient
    (w_plain[0]).backward()
    assert torch.allclose(grad_rev, -0.5 * g_s.grad)


def test_cdan_changes_all_three_groups_and_the_ramp_caps_at_its_horizon():
    m = tiny_cdan(grl_horizon=100)
    src, tgt = vector_batches()
    before = snapshot(m)
    m.update(src, tgt, 5, sgd_stepper(m, momentum=0.0))
    assert changed(before, m) == {"feat", "cls", "disc"}
    assert m.grl_lambda(0) == 0.0 and m.grl_lambda(50) == pytest.approx(grl_lambda(0.5))
    assert m.grl_lambda(100) == m.grl_lambda(5000) == pytest.approx(grl_lambda(1.0))


def test_cdan_builds_from_the_real_config_full_and_randomized():
    m = build("method=cdan")
    assert set(m.param_groups()) == {"feat", "cls", "disc"}
    assert m.predict(torch.zeros(2, 3, 28, 28)).shape == (2, 10)
    # D on the 768 x 10 multilinear map: the official AdversarialNetwork(7680, 500), Linear-ReLU-Dropout(0.5)
    # twice then Linear(500, 1), xavier-normal weights (std sqrt(2 / (fan_in + fan_out))) and zero biases
    assert [type(layer).__name__ for layer in m.discriminator] == ["Linear", "ReLU", "Dropout"] * 2 + ["Linear"]
    linears = [layer for layer in m.discriminator if isinstance(layer, nn.Linear)]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [(7680, 500), (500, 500), (500, 1)]
    assert all(layer.p == 0.5 for layer in m.discriminator if isinstance(layer, nn.Dropout))
    for lin in linears:
        assert torch.count_nonzero(lin.bias) == 0
        assert lin.weight.std().item() == pytest.approx(math.sqrt(2 / sum(lin.weight.shape)), rel=0.1)
    r = build("method=cdan", "method.randomized=true", "method.random_dim=64")
    assert r.discriminator[0].in_features == 64 and r.r_f.shape == (768, 64) and r.r_g.shape == (10, 64)
    assert "r_f" in r.state_dict()  # the fixed projections travel with the checkpoint


def test_cdan_brings_the_official_weight_decay_and_keeps_d_at_a_constant_rate():
    """thuml/CDAN train_uspsmnist.py: SGD(weight_decay=0.0005) on the net and on D, and only the net's
    optimizer has its rate decayed; ``optimizer=...`` settings still win."""
    cfg = make_cfg("method=cdan")
    assert cfg.optimizer.weight_decay == 5e-4 and cfg.optimizer.schedule == Schedule.dann
    over = get_method("cdan").from_config(cfg, INFO).optimizer_overrides()
    assert over["disc"].schedule == Schedule.constant and over["disc"].weight_decay == 5e-4
    assert over["cls"].schedule == Schedule.dann  # the head anneals with the body
    assert make_cfg("method=cdan", "optimizer.weight_decay=0").optimizer.weight_decay == 0
    annealed = build("method=cdan", "method.disc_constant_lr=false").optimizer_overrides()
    assert annealed["disc"].schedule == Schedule.dann


def test_before_adv_start_only_f_and_c_learn_from_ce_and_the_ramp_starts_there():
    m = tiny_cdan(adv_start=3, grl_horizon=10)
    ref = copy.deepcopy(m)
    src, tgt = vector_batches()
    before = snapshot(m)
    out = m.update(src, tgt, 2, sgd_stepper(m, lr=0.1, momentum=0.0))
    assert changed(before, m) == {"feat", "cls"} and "loss/domain" not in out
    # the step is plain SGD on the source CE
    loss = F.cross_entropy(ref.classifier(ref.features(src.x)), src.y)
    grads = torch.autograd.grad(loss, list(ref.features.parameters()) + list(ref.classifier.parameters()))
    got = list(m.features.parameters()) + list(m.classifier.parameters())
    old = list(ref.features.parameters()) + list(ref.classifier.parameters())
    assert all(torch.allclose(p, (o - 0.1 * g).detach(), atol=1e-6) for p, o, g in zip(got, old, grads))
    assert m.grl_lambda(3) == 0.0 and m.grl_lambda(8) == pytest.approx(grl_lambda(0.5))
    before = snapshot(m)
    m.update(src, tgt, 3, sgd_stepper(m, momentum=0.0))
    assert changed(before, m) == {"feat", "cls", "disc"}
