"""Source-only, classification and segmentation: only the network's groups change, and the target batch
is never looked at."""
import copy

import torch
from torch import nn

from uda.config import OptimizerConfig
from uda.methods import Batch
from uda.methods.source_only import SourceOnly, SourceOnlyConfig

from helpers import ApplySpy, build, build_seg, changed, seg_batches, sgd_stepper, snapshot, state_equal


def test_source_only_changes_only_feature_and_classifier_and_ignores_target():
    torch.manual_seed(0)
    m = SourceOnly(cfg=SourceOnlyConfig(), features=nn.Linear(4, 3), classifier=nn.Linear(3, 2),
                   head_optimizer=OptimizerConfig())
    ref = copy.deepcopy(m)
    g = torch.Generator().manual_seed(1)
    src, tgt = Batch(torch.randn(5, 4, generator=g), torch.randint(0, 2, (5,), generator=g)), Batch(torch.randn(5, 4), None)
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
