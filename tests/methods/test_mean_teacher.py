"""Self-ensembling: standardisation, the warp's geometry, the consistency + class-balance loss and the
EMA by hand; the update against a reference written out with the same augmentations; which parameters
change; the augmentations repeat for a (seed, step); the real config."""
import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers import build, changed, digit_batches, make_cfg, sgd_stepper, snapshot
from uda.data.streams import step_generator
from uda.methods.mean_teacher import (
    AUGMENT_STREAM,
    MeanTeacher,
    MeanTeacherConfig,
    random_affine,
    self_ensembling_loss,
    standardise,
    warp,
)
from uda.methods.parts import ema_update
from uda.schema import OptimizerConfig


def test_standardise_matches_numpy_per_image():
    x = torch.rand(3, 2, 4, 5) * 3 + 1
    ref = x.numpy()
    ref = (ref - ref.mean(axis=(1, 2, 3), keepdims=True)) / ref.std(axis=(1, 2, 3), keepdims=True)
    assert np.allclose(standardise(x).numpy(), ref, atol=1e-5)


def test_warp_geometry_by_hand():
    x = torch.arange(1.0, 17.0).view(1, 1, 4, 4)
    eye = torch.eye(2).unsqueeze(0)
    assert torch.allclose(warp(x, eye, torch.zeros(1, 2)), x, atol=1e-5)  # the identity
    # one pixel to the right: column j shows column j - 1, the first column is outside (0)
    right = warp(x, eye, torch.tensor([[1.0, 0.0]]))
    assert torch.allclose(right[..., 1:], x[..., :-1], atol=1e-5) and right[..., 0].abs().max() < 1e-6
    # one pixel down
    down = warp(x, eye, torch.tensor([[0.0, 1.0]]))
    assert torch.allclose(down[..., 1:, :], x[..., :-1, :], atol=1e-5)
    # A = diag(-1, 1) about the centre: the horizontal mirror
    assert torch.allclose(warp(x, torch.diag(torch.tensor([-1.0, 1.0])).unsqueeze(0), torch.zeros(1, 2)),
                          x.flip(-1), atol=1e-5)


def test_random_affine_draws_from_the_generator_and_adds_noise():
    x = torch.randn(4, 3, 8, 8)
    a = random_affine(x, torch.Generator().manual_seed(5), affine_std=0.1, translate=2.0, noise_std=0.1, hflip=False)
    b = random_affine(x, torch.Generator().manual_seed(5), affine_std=0.1, translate=2.0, noise_std=0.1, hflip=False)
    assert torch.equal(a, b) and not torch.allclose(a, x, atol=1e-2)
    # no warp: only the noise, of std 0.1
    n = random_affine(torch.zeros(64, 1, 16, 16), torch.Generator().manual_seed(0), affine_std=0.0, translate=0.0,
                      noise_std=0.1, hflip=False)
    assert n.std().item() == pytest.approx(0.1, rel=0.05)


def test_self_ensembling_loss_by_hand():
    p = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]])
    q = torch.tensor([[0.98, 0.01, 0.01], [0.5, 0.4, 0.1]])  # only the first is confident (> 0.968)
    loss, rate = self_ensembling_loss(p, q, threshold=0.968, cls_balance=0.5)
    con = (((0.7 - 0.98) ** 2 + (0.2 - 0.01) ** 2 + (0.1 - 0.01) ** 2) / 3) / 2
    avg = [0.4, 0.5, 0.1]
    bal = sum(-(math.log(a + 1e-6) / 3 + (2 / 3) * math.log(1 - a + 1e-6)) for a in avg) * 0.5
    assert rate.item() == 0.5
    assert loss.item() == pytest.approx(con + 0.5 * bal, rel=1e-5)
    none, zero = self_ensembling_loss(p, q, threshold=0.99, cls_balance=0.5)
    assert zero.item() == 0.0 and none.item() == 0.0  # nothing confident: no unsupervised signal at all


def test_ema_update_by_hand_leaves_buffers_alone():
    t, s = nn.BatchNorm1d(2), nn.BatchNorm1d(2)
    with torch.no_grad():
        t.weight.fill_(1.0)
        s.weight.fill_(3.0)
        s.running_mean.fill_(7.0)
    ema_update(t, s, 0.9)
    assert torch.allclose(t.weight, torch.full((2,), 0.9 * 1 + 0.1 * 3)) and torch.equal(t.running_mean, torch.zeros(2))


def tiny_mt(**kw):
    torch.manual_seed(0)
    features = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU(), nn.Flatten())
    return MeanTeacher(cfg=MeanTeacherConfig(**kw), features=features, classifier=nn.Linear(2 * 26 * 26, 10),
                       head_optimizer=OptimizerConfig(), seed=4)


def test_mean_teacher_update_equals_a_reference_with_the_same_augmentations():
    m = tiny_mt(confidence_thresh=0.1, cls_balance=0.2, unsup_weight=2.0, teacher_alpha=0.9)
    ref = copy.deepcopy(m)
    src, tgt = digit_batches()
    step, lr = 11, 0.1
    gen = step_generator(4, step, stream=AUGMENT_STREAM)
    aug = dict(affine_std=0.1, translate=2.0, noise_std=0.1, hflip=False)
    x_s = random_affine(standardise(src.x), gen, **aug)
    x_t1, x_t2 = random_affine(standardise(tgt.x), gen, **aug), random_affine(standardise(tgt.x), gen, **aug)
    student = nn.Sequential(ref.features, ref.classifier)
    p = torch.softmax(student(x_t1), 1)
    q = torch.softmax(ref.teacher(x_t2), 1).detach()
    mask = (q.max(1).values > 0.1).float()
    avg = p.mean(0)
    bal = (-(torch.log(avg + 1e-6) / 10 + 0.9 * torch.log(1 - avg + 1e-6))).sum() * mask.mean()
    loss = F.cross_entropy(student(x_s), src.y) + 2.0 * ((((p - q) ** 2).mean(1) * mask).mean() + 0.2 * bal)
    params = list(student.parameters())
    grads = torch.autograd.grad(loss, params)
    out = m.update(src, tgt, step, sgd_stepper(m, lr=lr))
    new_student = list(m.features.parameters()) + list(m.classifier.parameters())
    for p_new, p_old, g in zip(new_student, params, grads):
        assert torch.allclose(p_new, (p_old - lr * g).detach(), atol=1e-6)
    # the teacher started as the student: 0.9 old + 0.1 new
    for p_t, p_old, p_new in zip(m.teacher.parameters(), params, new_student):
        assert torch.allclose(p_t, 0.9 * p_old.detach() + 0.1 * p_new.detach(), atol=1e-6)
    unsup = (loss - F.cross_entropy(student(x_s), src.y)) / 2
    assert out["loss/unsup"].item() == pytest.approx(unsup.item(), rel=1e-5)


def test_mean_teacher_groups_the_teacher_moves_only_by_ema_and_augmentations_follow_the_step():
    m = tiny_mt()
    src, tgt = digit_batches()
    before, teacher = snapshot(m), [p.clone() for p in m.teacher.parameters()]
    assert set(m.param_groups()) == {"feat", "cls"}  # the teacher is in no optimizer
    assert not any(p.requires_grad for p in m.teacher.parameters())
    m.update(src, tgt, 0, sgd_stepper(m, momentum=0.0))
    assert changed(before, m) == {"feat", "cls"}
    assert any(not torch.equal(a, b) for a, b in zip(teacher, m.teacher.parameters()))
    # the same state at the same step gives the same update; another step draws other augmentations
    a, b, c = tiny_mt(), tiny_mt(), tiny_mt()
    for net, step in ((a, 3), (b, 3), (c, 4)):
        net.update(src, tgt, step, sgd_stepper(net))
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert any(not torch.equal(x, y) for x, y in zip(a.parameters(), c.parameters()))


def test_mean_teacher_predicts_with_the_teacher_on_standardised_images():
    m = tiny_mt()
    with torch.no_grad():
        for p in m.teacher.parameters():
            p.add_(0.5)
    x = torch.rand(2, 3, 28, 28)
    assert torch.allclose(m.predict(x), m.teacher(standardise(x)))
    m.cfg.predict = "student"
    assert torch.allclose(m.predict(x), m.classifier(m.features(standardise(x))))


def test_mean_teacher_builds_from_the_real_config_with_the_official_optimizer():
    m = build("method=mean_teacher")
    assert m.seed == 0 and m.cfg.teacher_alpha == 0.99 and m.cfg.unsup_weight == 3.0
    assert all(torch.equal(a, b) for a, b in zip(m.teacher.parameters(),
                                                 list(m.features.parameters()) + list(m.classifier.parameters())))
    assert any(k.startswith("teacher.") for k in m.state_dict())  # the teacher travels with the checkpoint
    cfg = make_cfg("method=mean_teacher", "seed=3")
    assert (cfg.optimizer.name, cfg.optimizer.lr, cfg.trainer.batch_size) == ("adam", 1e-3, 256)
