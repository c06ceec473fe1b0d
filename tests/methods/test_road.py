"""ROAD: the distillation loss, each region classifier sees only its region behind a reversal, the
teacher copied once at the stage boundary and frozen (and its batch-norm option), the adapt step against a
hand-computed reference, its config checks, and an end-to-end run that resumes exactly."""
import copy

import pytest
import torch
import torch.nn.functional as F

from helpers import (
    SEG_INFO,
    SEG_SMALL,
    TINY_SEG,
    SpyStepper,
    build,
    build_seg,
    joint,
    make_cfg,
    resumes_exactly,
    seg_batches,
    state_equal,
)
from uda.methods.road import distillation, split_regions
from uda.schema import ConfigError, validate

ROAD = ["method=road", "method.disc_hidden=4", "method.warmup_steps=2", "trainer.max_steps=10"]


def test_road_distillation_is_half_the_mean_euclidean_distance_over_positions():
    f = torch.zeros(1, 2, 1, 2)
    g = torch.tensor([[[[3.0, 0.0]], [[4.0, 1.0]]]])  # distances 5 and 1 at the two positions
    assert distillation(f, g).item() == pytest.approx(0.5 * (5 + 1) / 2)


@pytest.mark.parametrize("kernel, output", [(1, "position"), (3, "position"), (1, "region")])
def test_road_each_region_classifier_sees_only_its_region_behind_a_reversal(kernel, output):
    m = build_seg(*ROAD, "method.grid=[2,3]", f"method.disc_kernel={kernel}", f"method.region_output={output}")
    f_s = torch.randn(2, 8, 6, 7, requires_grad=True)
    f_t = torch.randn(2, 8, 6, 7)
    regions = split_regions(torch.arange(6 * 7.).view(1, 1, 6, 7), 2, 3)
    # "position": BCE on every position's score; "region": BCE on the mean score of the region, per image
    score = (lambda d, r: d(r)) if output == "position" else (lambda d, r: d(r).mean((2, 3)))
    for k, loss in enumerate(m.region_losses(f_s, f_t, lam=0.7)):
        g_rev, = torch.autograd.grad(loss, f_s, retain_graph=True)
        mask = torch.zeros(6, 7, dtype=torch.bool)
        mask.view(-1)[regions[k].flatten().long()] = True
        assert g_rev[:, :, ~mask].abs().max() == 0 and g_rev[:, :, mask].abs().max() > 0
        # the reversal: the features get -lambda x the gradient of the classifier's loss
        fs = f_s.detach().clone().requires_grad_(True)
        z_s, z_t = score(m.regions[k], split_regions(fs, 2, 3)[k]), score(m.regions[k], split_regions(f_t, 2, 3)[k])
        plain = 0.5 * (F.binary_cross_entropy_with_logits(z_s, torch.zeros_like(z_s))
                       + F.binary_cross_entropy_with_logits(z_t, torch.ones_like(z_t)))
        torch.testing.assert_close(loss, plain)
        g_plain, = torch.autograd.grad(plain, fs)
        torch.testing.assert_close(g_rev, -0.7 * g_plain, rtol=1e-5, atol=1e-8)


def test_road_teacher_is_copied_once_at_the_stage_boundary_and_never_changes():
    m = build_seg(*ROAD)
    spy = SpyStepper(m)
    src, tgt = seg_batches()
    for step in range(2):  # warm-up: source only, the teacher is not yet set
        m.update(src, tgt, step, spy)
        spy.end_iteration()
    assert spy.calls == [({"seg", "head"}, {"seg", "head"})] * 2 and not bool(m.teacher_ready)
    at_boundary = copy.deepcopy(m.segmenter.state_dict())
    for step in range(2, 5):
        m.update(src, tgt, step, spy)
        spy.end_iteration()
    assert spy.calls[2:] == [({"seg", "head", "disc"}, {"seg", "head", "disc"})] * 3
    assert bool(m.teacher_ready) and state_equal(m.teacher.state_dict(), at_boundary)
    assert not any(p.requires_grad for p in m.teacher.parameters())
    assert not state_equal(m.segmenter.state_dict(), at_boundary)


@pytest.mark.parametrize("backbone", [
    pytest.param(TINY_SEG, id="seg_small"),  # FCN-8s and DeepLab are seconds a step on a CPU: slow
    pytest.param(["data=digits_seg", "backbone=fcn8s"], id="fcn8s", marks=pytest.mark.slow),
    pytest.param(["data=digits_seg", "backbone=deeplabv2", "backbone.depth=50"], id="deeplabv2",
                 marks=pytest.mark.slow),
])
def test_road_distillation_is_exactly_zero_at_the_copy_and_then_grows(backbone):
    # the teacher runs as the student (same batch, same dropout masks and batch statistics): at the copy
    # student == teacher, so L_dist == 0 exactly (an eval-mode teacher left FCN-8s's dropout noise in it)
    torch.manual_seed(0)
    m = build(*backbone, *ROAD[:2], "method.warmup_steps=0", "method.grl_gamma=0", "trainer.max_steps=10",
              info=SEG_INFO).train()
    src, tgt = seg_batches(n=2, size=64)  # FCN-8s: 2 x 2 positions at fc7 for the 2 x 2 grid
    spy = SpyStepper(m, lr=0.05)
    first = m.update(src, tgt, 0, spy)
    spy.end_iteration()
    assert first["loss/dist"].item() == 0.0
    second = m.update(src, tgt, 1, spy)
    assert second["loss/dist"].item() > 0  # the student moved; the teacher did not


def test_road_teacher_norm_target_normalises_with_each_target_batch_and_stays_frozen():
    m = build_seg(*ROAD, "method.warmup_steps=0", "method.teacher_norm=target").train()
    src, tgt = seg_batches()
    m.update(src, tgt, 0, SpyStepper(m))  # the teacher is copied at this first adapt step
    frozen = copy.deepcopy(m.teacher.state_dict())
    ref = copy.deepcopy(m.segmenter)
    ref.load_state_dict(frozen)
    with torch.no_grad():
        batch_stats = ref.train()(tgt.x).features  # a plain net in training mode: the batch's statistics
        running_stats = ref.eval()(tgt.x).features  # (ref's running statistics moved once; only a contrast)
        for mode in (True, False):  # the same whether the method is training or evaluating
            torch.testing.assert_close(m.train(mode).teacher(tgt.x).features, batch_stats)
    assert not torch.allclose(batch_stats, running_stats, atol=1e-3)
    m.train().update(src, tgt, 1, SpyStepper(m))
    assert state_equal(m.teacher.state_dict(), frozen)  # running statistics and weights untouched


def test_road_adapt_step_equals_a_hand_computed_reference():
    # an eval-mode teacher (teacher_norm=running), so the distillation term is not 0 at the copy
    lr = 0.05
    m = build_seg(
        *ROAD,
        "method.warmup_steps=0",
        "method.teacher_norm=running",
        "method.dist_weight=0.3",
        "method.spatial_weight=0.2",
        "method.region_weights=[1,2,0.5,1]",
        "method.grl_gamma=0",
    )
    ref = copy.deepcopy(m)
    src, tgt = seg_batches()
    m.update(src, tgt, 0, SpyStepper(m, lr=lr))
    net = ref.segmenter
    teacher = copy.deepcopy(net).eval()  # the copy happens before this step's forward passes
    out_s, out_t = joint(net, src.x, tgt.x)
    ce = F.cross_entropy(F.interpolate(out_s.logits, size=(32, 32), mode="bilinear", align_corners=False), src.y,
                         ignore_index=255)
    dist = 0.5 * (out_t.features - teacher(tgt.x).features.detach()).norm(dim=1).mean()
    bce = lambda z, v: F.binary_cross_entropy_with_logits(z, torch.full_like(z, float(v)))  # noqa: E731
    rs, rt = split_regions(out_s.features, 2, 2), split_regions(out_t.features, 2, 2)
    region = [0.5 * (bce(d(a), 0) + bce(d(b), 1)) for d, a, b in zip(ref.regions, rs, rt)]
    spatial = sum(w * r for w, r in zip([1, 2, 0.5, 1], region))
    g_params, d_params = list(net.parameters()), list(ref.regions.parameters())
    # segmenter: descends CE + dist, ASCENDS 0.2 x the spatial loss (lambda = 1); the classifiers descend
    # the spatial loss at full weight
    g_grads = torch.autograd.grad(ce + 0.3 * dist - 0.2 * spatial, g_params, retain_graph=True)
    d_grads = torch.autograd.grad(spatial, d_params)
    for p, g, q in zip(g_params, g_grads, m.segmenter.parameters()):
        torch.testing.assert_close(q, p - lr * g, rtol=1e-4, atol=1e-6)
    for p, g, q in zip(d_params, d_grads, m.regions.parameters()):
        torch.testing.assert_close(q, p - lr * g, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("overrides, needle", [
    (["method.region_weights=[1,2]"], "needs 4 values"),
    (["method.grid=[2]"], "exactly 2 values"),
    (["method.warmup_steps=10"], "warmup_steps must be in"),
    (["method.disc_kernel=2"], "disc_kernel must be an odd size"),
])
def test_road_bad_settings_are_clear_errors(overrides, needle):
    with pytest.raises(ConfigError, match=needle):
        validate(make_cfg(*TINY_SEG, *ROAD, *overrides))


def test_road_runs_and_resumes_exactly(tmp_path):
    summary = resumes_exactly(
        ["method=road", "method.disc_hidden=4", "method.warmup_steps=3", *SEG_SMALL, "trainer.images=true"],
        tmp_path, stop_after=4)
    assert 0 <= summary["target_miou"] <= 100 and len(summary["target_iou"]) == 4
