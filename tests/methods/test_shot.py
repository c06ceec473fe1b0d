"""SHOT: the centroid pseudo-labels and the information maximisation by hand, both stages' updates against
hand computations, the source-free target stage (the source batch is never read), the frozen head, the
optimizer reset and the restarted schedule, the refresh the trainer runs, and the real config."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers import SMALL, ApplySpy, build, make_cfg, sgd_stepper
from uda.engine.runtime import lr_factors
from uda.errors import ConfigError
from uda.methods import Batch
from uda.methods.shot import SHOT, Bottleneck, SHOTConfig, centroid_labels, information_maximisation
from uda.schema import OptimizerConfig, validate


def tiny_shot(source_steps=2, **kw):
    torch.manual_seed(0)
    head = nn.utils.parametrizations.weight_norm(nn.Linear(3, 2))
    return SHOT(cfg=SHOTConfig(bottleneck=3, **kw), features=nn.Sequential(nn.Linear(4, 5), nn.Tanh()),
                bottleneck=Bottleneck(5, 3, 0.0), classifier=head, head_optimizer=OptimizerConfig(),
                source_steps=source_steps)


def vectors(n=6):
    g = torch.Generator().manual_seed(1)
    return (Batch(torch.randn(n, 4, generator=g), torch.randint(0, 2, (n,), generator=g)),
            Batch(torch.randn(n, 4, generator=g) + 1, None, torch.tensor([5, 0, 3, 1, 4, 2])))


class Untouchable:
    """A source batch that fails the test if the target stage reads any of it."""

    def __getattr__(self, name):
        raise AssertionError(f"the target stage read the source batch ({name})")

    def __getitem__(self, i):
        raise AssertionError("the target stage read the source batch")


def test_centroid_labels_by_hand():
    # two tight groups of features; soft predictions that put one of group A on the wrong class
    feats = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.1, 0.9], [0.2, 0.8]])
    # f = [x, 1] / norm; soft centroids c_k = sum p_ik f_i / sum p_ik; nearest by cosine, then hard rounds
    f = torch.cat([feats, torch.ones(4, 1)], 1)
    f = f / f.norm(dim=1, keepdim=True)
    c = probs.t() @ f / probs.sum(0)[:, None]
    first = (f @ c.t() / c.norm(dim=1)).argmax(1)
    assert first.tolist() == [0, 0, 1, 1]  # the centroids recover the groups
    assert centroid_labels(feats, probs, refinements=0).tolist() == first.tolist()
    assert centroid_labels(feats, probs, refinements=1).tolist() == [0, 0, 1, 1]
    # a class left empty has a zero centroid at distance 1, not NaN
    assert centroid_labels(feats, torch.tensor([[1.0, 0.0]] * 4), refinements=1).tolist() == [0, 0, 0, 0]


def test_information_maximisation_by_hand():
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    p = torch.softmax(logits, 1)
    h = lambda q: -(q * torch.log(q + 1e-5)).sum(-1)  # noqa: E731
    assert information_maximisation(logits).item() == pytest.approx((h(p).mean() - h(p.mean(0))).item(), rel=1e-6)


def test_source_stage_is_label_smoothed_ce_on_f_b_and_c():
    m = tiny_shot()
    ref = copy.deepcopy(m)
    src, tgt = vectors()
    net = nn.Sequential(ref.features, ref.bottleneck, ref.classifier)
    logp = torch.log_softmax(net(src.x), 1)
    target = 0.9 * F.one_hot(src.y, 2) + 0.1 / 2
    loss = -(target * logp).sum(1).mean()
    grads = torch.autograd.grad(loss, list(net.parameters()))
    spy = ApplySpy(m, lr=0.1)
    m.update(src, tgt, 0, spy)
    assert spy.calls == [({"feat", "bottleneck", "cls"}, {"feat", "bottleneck", "cls"})]
    for p_new, p_old, g in zip(nn.Sequential(m.features, m.bottleneck, m.classifier).parameters(), net.parameters(),
                               grads):
        assert torch.allclose(p_new, (p_old - 0.1 * g).detach(), atol=1e-6)


def test_target_stage_by_hand_never_reads_source_and_freezes_the_head():
    m = tiny_shot(beta=0.3, im_weight=0.7)
    src, tgt = vectors()
    with torch.no_grad():
        m.refresh([Batch(tgt.x[3:], None, tgt.idx[3:]), Batch(tgt.x[:3], None, tgt.idx[:3])])  # in any order
    assert m.pseudo_labels.shape == (6,) and m.training
    ref = copy.deepcopy(m)
    ref.eval()
    with torch.no_grad():  # the refresh by hand: eval mode, the bottleneck's output, labels at each image's index
        f = ref.bottleneck(ref.features(tgt.x))
        expected = centroid_labels(f, torch.softmax(ref.classifier(f), 1))
    assert torch.equal(m.pseudo_labels[tgt.idx], expected)
    ref.train()
    logits = ref.classifier(ref.bottleneck(ref.features(tgt.x)))
    loss = 0.3 * F.cross_entropy(logits, expected) + 0.7 * information_maximisation(logits)
    fb = list(ref.features.parameters()) + list(ref.bottleneck.parameters())
    grads = torch.autograd.grad(loss, fb)
    opt = sgd_stepper(m, lr=0.1, momentum=0.0)
    before_c = [p.detach().clone() for p in m.classifier.parameters()]
    out = m.update(Untouchable(), tgt, 2, opt)
    for p_new, p_old, g in zip(list(m.features.parameters()) + list(m.bottleneck.parameters()), fb, grads):
        assert torch.allclose(p_new, (p_old - 0.1 * g).detach(), atol=1e-6)
    assert all(torch.equal(a, b) for a, b in zip(before_c, m.classifier.parameters()))
    assert set(out) == {"loss/im", "loss/pseudo"}


def test_the_target_stage_starts_a_fresh_optimizer_and_schedule_and_refreshes_each_epoch():
    m = tiny_shot(source_steps=4)
    src, tgt = vectors()
    opts = {g: torch.optim.SGD(p, lr=0.1, momentum=0.9) for g, p in m.param_groups().items()}
    spy = ApplySpy(m)
    spy.optimizers = opts
    m.update(src, tgt, 0, spy)
    assert opts["feat"].state  # momentum from the source stage
    spy.end_iteration()
    with torch.no_grad():
        m.refresh([tgt])
    spy.reset = lambda *groups: (seen.extend(groups), type(spy).reset(spy, *groups))
    seen = []
    m.update(Untouchable(), tgt, 4, spy)
    assert seen == ["feat", "bottleneck"]
    spy.end_iteration()
    seen.clear()
    m.update(Untouchable(), tgt, 5, spy)
    assert seen == []  # once, at the stage's first step
    # the schedule of F and B restarts at step 4; C's ran over the source stage
    cfgs = dict.fromkeys(m.param_groups(), OptimizerConfig())
    f = lr_factors(cfgs, m.schedule_spans(10), 4, 10)
    assert f["feat"] == f["bottleneck"] == 1.0 and f["cls"] < 1.0
    assert lr_factors(cfgs, m.schedule_spans(10), 3, 10)["feat"] < 1.0
    # refresh each target epoch from the stage's start; never with beta = 0 (SHOT-IM) nor in the source stage
    assert [s for s in range(12) if m.refresh_due(s, 3)] == [4, 7, 10]
    assert not any(tiny_shot(source_steps=4, beta=0.0).refresh_due(s, 3) for s in range(12))


def test_shot_builds_from_the_real_config_and_its_checks():
    cfg = make_cfg("method=shot")
    assert (cfg.method.beta, cfg.method.smoothing, cfg.method.im_weight) == (0.1, 0.1, 1.0)
    assert cfg.optimizer.nesterov and cfg.optimizer.weight_decay == 1e-3
    m = build("method=shot")
    assert m.source_steps == 5000 and [s.name for s in m.stages(10000)] == ["source", "target"]
    assert set(m.param_groups()) == {"feat", "bottleneck", "cls"}
    assert [type(x).__name__ for x in m.bottleneck] == ["Linear", "BatchNorm1d", "Dropout"]
    assert m.bottleneck[0].in_features == 768 and hasattr(m.classifier, "parametrizations")  # weight-normed
    assert m.predict(torch.zeros(2, 3, 28, 28)).shape == (2, 10)
    # the pseudo-labels are a buffer sized by the checkpoint it loads
    m.pseudo_labels = torch.arange(7)
    fresh = build("method=shot")
    fresh.load_state_dict(m.state_dict())
    assert torch.equal(fresh.pseudo_labels, torch.arange(7))
    with pytest.raises(ConfigError, match=r"method\.source_steps \(10\) must be in \[0, trainer\.max_steps=10\)"):
        validate(make_cfg(*SMALL, "method=shot", "trainer.max_steps=10", "method.source_steps=10"))
