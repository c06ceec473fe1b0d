"""Source-only, classification and segmentation: its update against a hand computation, only the network's
groups change, and the target batch is never looked at."""
import copy

import pytest
import torch
from torch import nn

from helpers import ApplySpy, build, build_seg, changed, seg_batches, sgd_stepper, snapshot, state_equal
from uda.methods import Batch
from uda.methods.source_only import SourceOnly, SourceOnlyConfig
from uda.schema import OptimizerConfig


def test_source_only_changes_only_feature_and_classifier_and_ignores_target():
    torch.manual_seed(0)
    m = SourceOnly(cfg=SourceOnlyConfig(), features=nn.Linear(4, 3), classifier=nn.Linear(3, 2),
                   head_optimizer=OptimizerConfig())
    ref = copy.deepcopy(m)
    g = torch.Generator().manual_seed(1)
    src, tgt = (
        Batch(torch.randn(5, 4, generator=g), torch.randint(0, 2, (5,), generator=g)),
        Batch(torch.randn(5, 4), None),
    )
    before = snapshot(m)
    m.update(src, tgt, 0, sgd_stepper(m))
    assert changed(before, m) == {"feat", "cls"}
    ref.update(src, Batch(torch.randn(5, 4) * 100, None), 0, sgd_stepper(ref))
    assert all(torch.equal(a, b) for a, b in zip(m.parameters(), ref.parameters()))


def test_source_only_builds_the_dann_mnist_net_from_the_real_config():
    m = build("method=source_only")
    assert set(m.param_groups()) == {"feat", "cls"}
    assert m.predict(torch.zeros(2, 3, 28, 28)).shape == (2, 10)
    assert m.features(torch.zeros(1, 3, 28, 28)).shape == (1, 768)


def test_segmentation_source_only_steps_the_segmenter_on_source_alone():
    m = build_seg("method=source_only")
    assert type(m).__name__ == "SegSourceOnly" and set(m.param_groups()) == {"seg", "head"}
    src, tgt = seg_batches()
    a, b = copy.deepcopy(m), copy.deepcopy(m)
    spy = ApplySpy(a)
    a.update(src, tgt, 0, spy)
    assert spy.calls == [({"seg", "head"}, {"seg", "head"})]
    b.update(src, Batch(torch.zeros_like(tgt.x), None), 0, ApplySpy(b))  # the target batch is never looked at
    assert state_equal(a.state_dict(), b.state_dict())


def test_source_only_update_against_a_hand_computation():
    """One SGD step (lr 0.1, no momentum) on W x + b with a linear classifier: the gradient of the mean
    cross-entropy written out by hand, dL/dz = (softmax(z) - onehot(y)) / N, back through both layers."""
    torch.manual_seed(0)
    m = SourceOnly(cfg=SourceOnlyConfig(), features=nn.Linear(4, 3), classifier=nn.Linear(3, 2),
                   head_optimizer=OptimizerConfig())
    W1, b1 = m.features.weight.detach().clone(), m.features.bias.detach().clone()
    W2, b2 = m.classifier.weight.detach().clone(), m.classifier.bias.detach().clone()
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(5, 4, generator=g), torch.tensor([0, 1, 1, 0, 1])
    h = x @ W1.T + b1
    z = h @ W2.T + b2
    dz = (torch.softmax(z, 1) - torch.eye(2)[y]) / 5
    dW2, db2 = dz.T @ h, dz.sum(0)
    dh = dz @ W2
    dW1, db1 = dh.T @ x, dh.sum(0)
    loss = -torch.log_softmax(z, 1)[torch.arange(5), y].mean()
    out = m.update(Batch(x, y), Batch(torch.randn(5, 4), None), 0, sgd_stepper(m, lr=0.1, momentum=0.0))
    assert out["loss/cls"].item() == pytest.approx(loss.item(), rel=1e-6)
    for got, want in ((m.features.weight, W1 - 0.1 * dW1), (m.features.bias, b1 - 0.1 * db1),
                      (m.classifier.weight, W2 - 0.1 * dW2), (m.classifier.bias, b2 - 0.1 * db2)):
        assert torch.allclose(got, want, atol=1e-6)
