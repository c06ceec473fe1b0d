"""DANN: the single update against the paper's three updates computed by hand, the reversal's schedule,
which groups change, and the paper's MNIST networks as the real config builds them."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers import build, changed, make_cfg, sgd_stepper, snapshot
from uda.losses import grl_lambda
from uda.methods import Batch, get_method
from uda.methods.dann import DANN, DANNConfig, DomainReduction
from uda.schema import OptimizerConfig


def tiny_dann(max_steps=10, **kw):
    torch.manual_seed(0)
    return DANN(cfg=DANNConfig(**kw), features=nn.Sequential(nn.Linear(4, 3), nn.Tanh()),
                classifier=nn.Linear(3, 2), discriminator=nn.Linear(3, 1), max_steps=max_steps,
                head_optimizer=OptimizerConfig())


def vector_batches(n=5):
    """Source and target batches of 4-d vectors for ``tiny_dann`` (target shifted by 1)."""
    g = torch.Generator().manual_seed(1)
    x_s, x_t = torch.randn(n, 4, generator=g), torch.randn(n, 4, generator=g) + 1
    y_s = torch.randint(0, 2, (n,), generator=g)
    return Batch(x_s, y_s), Batch(x_t, None)


@pytest.mark.parametrize("reduction, scale", [(DomainReduction.sum, 1.0), (DomainReduction.mean, 0.5)])
def test_dann_update_equals_hand_computed_step(reduction, scale):
    m = tiny_dann(max_steps=10, adv_weight=0.7, domain_reduction=reduction)
    ref = copy.deepcopy(m)
    src, tgt = vector_batches()
    step, lr = 3, 0.1
    lam = 0.7 * (2 / (1 + torch.exp(torch.tensor(-10 * 0.3))) - 1)

    # reference: the paper's updates (Ganin et al. 2016, Eq. 13-15) without a GRL:
    # theta_f -= mu (dL_y/dtheta_f - lambda dL_d/dtheta_f); theta_y -= mu dL_y; theta_d -= mu dL_d
    f_s, f_t = ref.features(src.x), ref.features(tgt.x)
    loss_y = F.cross_entropy(ref.classifier(f_s), src.y)
    d_s, d_t = ref.discriminator(f_s).view(-1), ref.discriminator(f_t).view(-1)
    loss_d = -scale * (torch.log(1 - torch.sigmoid(d_s)).mean() + torch.log(torch.sigmoid(d_t)).mean())
    fp, cp, dp = (list(mod.parameters()) for mod in (ref.features, ref.classifier, ref.discriminator))
    gy = torch.autograd.grad(loss_y, fp + cp, retain_graph=True)
    gd = torch.autograd.grad(loss_d, fp + dp)
    want_f = [p - lr * (a - lam * b) for p, a, b in zip(fp, gy[: len(fp)], gd[: len(fp)])]
    want_c = [p - lr * a for p, a in zip(cp, gy[len(fp):])]
    want_d = [p - lr * b for p, b in zip(dp, gd[len(fp):])]

    out = m.update(src, tgt, step, sgd_stepper(m, lr=lr))  # first SGD step: momentum buffer = gradient
    for got, want in zip(
        list(m.features.parameters()) + list(m.classifier.parameters()) + list(m.discriminator.parameters()),
        want_f + want_c + want_d,
    ):
        assert torch.allclose(got, want.detach(), atol=1e-6)
    assert out["sched/grl_lambda"].item() == pytest.approx(float(lam))
    assert out["loss/cls"].item() == pytest.approx(loss_y.item(), rel=1e-6)
    assert out["loss/domain"].item() == pytest.approx(loss_d.item(), rel=1e-6)


def test_dann_lambda_follows_the_schedule():
    m = tiny_dann(max_steps=200)
    assert m.grl_lambda(0) == 0.0
    assert m.grl_lambda(100) == pytest.approx(grl_lambda(0.5))


def test_dann_changes_all_three_groups_in_its_one_step():
    m = tiny_dann()
    src, tgt = vector_batches()
    before = snapshot(m)
    m.update(src, tgt, 5, sgd_stepper(m, momentum=0.0))
    assert changed(before, m) == {"feat", "cls", "disc"}


def test_dann_features_feel_the_domain_loss_and_the_classifier_does_not():
    # with lambda > 0 the feature step differs from a source-only step on the same batch
    src, tgt = vector_batches()
    a, b = tiny_dann(), tiny_dann(adv_weight=0.0)
    a.update(src, tgt, 5, sgd_stepper(a, momentum=0.0))
    b.update(src, tgt, 5, sgd_stepper(b, momentum=0.0))
    assert not torch.allclose(a.features[0].weight, b.features[0].weight)
    assert torch.allclose(a.classifier.weight, b.classifier.weight)  # C sees only CE in both


def test_dann_discriminator_descends_its_loss():
    m = tiny_dann()
    src, tgt = vector_batches(64)
    losses = [m.update(src, tgt, 9, sgd_stepper(m, lr=0.5, momentum=0.0))["loss/domain"].item() for _ in range(3)]
    # at this lambda the D step dominates on a fixed batch; D's loss must not be ascended
    assert losses[-1] < losses[0]


def test_dann_builds_the_papers_mnist_networks_from_the_real_config():
    m = build("method=dann")
    assert set(m.param_groups()) == {"feat", "cls", "disc"}
    assert m.predict(torch.zeros(2, 3, 28, 28)).shape == (2, 10)
    # the paper's MNIST net: 768-d features, FC100-FC100-FC10, domain head FC100-1
    assert m.features(torch.zeros(1, 3, 28, 28)).shape == (1, 768)
    assert [layer.out_features for layer in m.classifier if isinstance(layer, nn.Linear)] == [100, 100, 10]
    assert [layer.out_features for layer in m.discriminator if isinstance(layer, nn.Linear)] == [100, 1]


def test_dann_office31_recipe_has_the_papers_domain_head_and_10x_on_the_new_layers():
    from uda.data.pairs import PairInfo
    from uda.engine.runtime import build_optimizers

    office = PairInfo("amazon_webcam", "amazon", "webcam", 3, 32, 31, mean=(0.5,) * 3, std=(0.5,) * 3)
    cfg = make_cfg("+experiment=dann_office31", "backbone.depth=18")
    m = get_method("dann").from_config(cfg, office)
    assert [layer.out_features for layer in m.discriminator if isinstance(layer, nn.Linear)] == [1024, 1024, 1]
    groups = m.param_groups()
    assert set(groups) == {"feat", "neck", "cls", "disc"}
    assert {id(p) for p in groups["feat"]} == {id(p) for p in m.features[0].parameters()}  # the ResNet body
    _, opts = build_optimizers(m, cfg.optimizer)
    lrs = {g: [pg["lr"] for pg in o.param_groups] for g, o in opts.items()}
    assert lrs == {"feat": [0.01], "neck": [0.1], "cls": [0.1], "disc": [0.1]}
    # the digit nets keep one learning rate
    digits = build("method=dann")
    _, opts = build_optimizers(digits, make_cfg("method=dann").optimizer)
    assert {g: o.param_groups[0]["lr"] for g, o in opts.items()} == {"feat": 0.01, "cls": 0.01, "disc": 0.01}
