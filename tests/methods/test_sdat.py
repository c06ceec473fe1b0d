"""SDAT: the sharpness-aware CDAN step against a hand computation (CDAN w/ SDAT and CDAN+MCC w/ SDAT),
which groups each sub-step moves, the phase before ``adv_start``, and the networks and optimizer the real
config builds."""
import copy

import pytest
import torch
import torch.nn.functional as F
from test_cdan import _reference_grads, tiny_cdan
from test_dann import vector_batches

from helpers import ApplySpy, build, make_cfg, sgd_stepper
from uda.errors import ConfigError
from uda.methods.mcc import class_confusion
from uda.methods.sdat import SDAT, SDATConfig
from uda.schema import Schedule, validate


def tiny_sdat(rho=0.05, mcc_weight=0.0, **cdan):
    part = tiny_cdan(**cdan)
    return SDAT(cfg=SDATConfig(rho=rho, mcc_weight=mcc_weight, cdan=part.cfg), cdan=part)


def params(c):
    return [list(m.parameters()) for m in (c.features, c.classifier, c.discriminator)]


@pytest.mark.parametrize("mcc_weight", [0.0, 0.7])
def test_sdat_update_equals_hand_computed_sam_step(mcc_weight):
    m = tiny_sdat(rho=0.3, mcc_weight=mcc_weight, grl_horizon=10)
    ref = copy.deepcopy(m.cdan)
    src, tgt = vector_batches()
    step, lr, n = 4, 0.1, len(src.x)
    lam = m.cdan.grl_lambda(step)
    fp, cp, dp = params(ref)
    # pass 1 at w: CE (+ w MCC); e = rho g / ||g|| over F and C together
    logits = ref.classifier(ref.features(torch.cat([src.x, tgt.x])))
    loss_1 = F.cross_entropy(logits[:n], src.y) + mcc_weight * class_confusion(logits[n:], 2.0)
    g_1 = torch.autograd.grad(loss_1, fp + cp)
    norm = torch.sqrt(sum((g ** 2).sum() for g in g_1))
    at = copy.deepcopy(ref)  # w + e for F and C; D as it is
    with torch.no_grad():
        for p, g in zip(params(at)[0] + params(at)[1], g_1):
            p.add_(0.3 * g / norm)
    # pass 2 at w + e: CDAN's gradients there (+ the MCC gradient into F and C)
    g_f, g_c, g_d, _, _ = _reference_grads(at, src, tgt, lam, weighted=False)
    if mcc_weight:
        fa, ca, _ = params(at)
        g_m = torch.autograd.grad(mcc_weight * class_confusion(at.classifier(at.features(tgt.x)), 2.0), fa + ca)
        g_f = [a + b for a, b in zip(g_f, g_m[:len(fa)])]
        g_c = [a + b for a, b in zip(g_c, g_m[len(fa):])]
    out = m.update(src, tgt, step, sgd_stepper(m, lr=lr, momentum=0.0))
    # the step starts from w with the gradients taken at w + e
    for p_new, p_old, g in zip(sum(params(m.cdan), []), fp + cp + dp, g_f + g_c + g_d):
        assert torch.allclose(p_new, (p_old - lr * g).detach(), atol=1e-6)
    assert ("loss/mcc" in out) == bool(mcc_weight) and out["sched/grl_lambda"].item() == pytest.approx(lam)


def test_sdat_perturbs_f_and_c_only_and_one_apply_moves_f_c_and_d():
    m = tiny_sdat()
    src, tgt = vector_batches()
    spy = ApplySpy(m)
    seen = []
    spy.perturb = lambda rho, *groups: (seen.append((rho, groups)), type(spy).perturb(spy, rho, *groups))
    m.update(src, tgt, 3, spy)
    assert seen == [(0.05, ("feat", "cls"))]
    assert spy.calls == [({"feat", "cls", "disc"}, {"feat", "cls", "disc"})]


def test_before_adv_start_d_stays_still_and_rho_zero_is_the_plain_cdan_step():
    m = tiny_sdat(adv_start=5)
    src, tgt = vector_batches()
    spy = ApplySpy(m)
    out = m.update(src, tgt, 2, spy)
    assert spy.calls == [({"feat", "cls"}, {"feat", "cls"})] and "loss/domain" not in out
    # rho = 0: w + e = w, so SDAT's step is CDAN's
    a, b = tiny_sdat(rho=0.0), tiny_cdan()
    a.update(src, tgt, 3, sgd_stepper(a, momentum=0.0))
    b.update(src, tgt, 3, sgd_stepper(b, momentum=0.0))
    assert all(torch.allclose(p, q, atol=1e-7) for p, q in zip(a.cdan.parameters(), b.parameters()))


def test_sdat_builds_from_the_real_config_with_the_official_optimizer():
    cfg = make_cfg("method=sdat")
    assert cfg.method.rho == 0.05 and cfg.method.mcc_weight == 0.0 and cfg.method.temperature == 2.0
    assert cfg.optimizer.nesterov and cfg.optimizer.weight_decay == 1e-3  # sdat.yaml: the official SGD
    m = build("method=sdat")
    assert set(m.param_groups()) == {"feat", "cls", "disc"}
    assert m.optimizer_overrides()["disc"].schedule == Schedule.dann  # D decays with the net, as SDAT's code
    linears = [layer.in_features for layer in m.cdan.discriminator if isinstance(layer, torch.nn.Linear)]
    assert linears == [7680, 500, 500]  # CDAN's digits D
    assert m.predict(torch.zeros(2, 3, 28, 28)).shape == (2, 10)
    validate(make_cfg("method=sdat", "method.cdan.entropy_weighting=true", "method.mcc_weight=1"))
    with pytest.raises(ConfigError, match=r"method\.cdan\.disc_dropout must be in \[0, 1\), got 1.5"):
        validate(make_cfg("method=sdat", "method.cdan.disc_dropout=1.5"))
