"""MIC: the block mask and the masked target by hand, the update on an MCC host against a hand computation
(teacher EMA, pseudo-labels, confidence-weighted CE on the masked image added to the host's loss), the terms
SDAT's two passes receive, the groups that change, and the real config's host group."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers import SEG_SMALL, ApplySpy, build, build_seg, make_cfg, resumes_exactly, seg_batches, sgd_stepper
from uda.data.streams import step_generator
from uda.errors import ConfigError
from uda.methods import Batch
from uda.methods.mcc import MCC, MCCConfig, class_confusion
from uda.methods.mic import MASK_STREAM, MIC, AddedTerms, MICConfig, PseudoWeight, block_mask
from uda.schema import OptimizerConfig, validate


def tiny_mic(**kw):
    """MIC on an MCC host over 3 x 8 x 8 images (block 64 x 8 / 224 -> 2 px, a 4 x 4 grid), no colour aug."""
    torch.manual_seed(0)
    host = MCC(cfg=MCCConfig(temperature=2.0), features=nn.Sequential(nn.Flatten(), nn.Linear(192, 3), nn.Tanh()),
               classifier=nn.Linear(3, 2), head_optimizer=OptimizerConfig())
    cfg = MICConfig(host=host.cfg, **({"jitter": 0.0, "blur": False} | kw))
    return MIC(cfg=cfg, host=host, seed=7, image_size=8, mean=(0.5,) * 3, std=(0.5,) * 3)


def image_batches(n=4):
    g = torch.Generator().manual_seed(2)
    return (Batch(torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 2, (n,), generator=g)),
            Batch(torch.randn(n, 3, 8, 8, generator=g) + 0.5, None))


def test_block_mask_by_hand():
    cells = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    m = block_mask(2, (8, 8), 2, 0.7, torch.Generator().manual_seed(3))
    assert m.shape == (2, 1, 8, 8)
    # each cell of the 4 x 4 grid covers 2 x 2 pixels, kept (1) where its draw is above r
    assert torch.equal(m[:, :, ::2, ::2], (cells > 0.7).float()) and torch.equal(m[:, :, 1::2, 1::2], m[:, :, ::2, ::2])
    assert block_mask(1, (28, 28), 8, 0.7, torch.Generator()).shape == (1, 1, 28, 28)  # round(28 / 8) = 4 cells


@pytest.mark.parametrize("weight", [PseudoWeight.prob, PseudoWeight.none])
def test_mic_update_on_mcc_equals_hand_computed_step(weight):
    m = tiny_mic(pseudo_weight=weight, ema=0.9, mask_weight=0.6)
    src, tgt = image_batches()
    step, lr = 3, 0.1
    with torch.no_grad():  # a teacher apart from the student, as after some steps
        for p in m.teacher.parameters():
            p.add_(0.1)
    ref = copy.deepcopy(m)
    student, teacher = ref.student, ref.teacher
    # 1) the masked target: the step's generator, blocks of 2 px, r = 0.7
    mask = block_mask(4, (8, 8), 2, 0.7, step_generator(7, step, stream=MASK_STREAM))
    x_tm = tgt.x * mask
    # 2) teacher <- alpha teacher + (1 - alpha) student, alpha = min(1 - 1/4, 0.9) = 0.75
    with torch.no_grad():
        for p_t, p_s in zip(teacher.parameters(), student.parameters()):
            p_t.copy_(0.75 * p_t + 0.25 * p_s)
        q, y_hat = torch.softmax(teacher(tgt.x), 1).max(1)
    w = q if weight == PseudoWeight.prob else torch.ones(4)
    # 3) MCC's loss plus 0.6 mean(w CE(student(x_tm), y^)), one SGD step of F and C
    logits = student(torch.cat([src.x, tgt.x]))
    loss = (F.cross_entropy(logits[:4], src.y) + class_confusion(logits[4:], 2.0)
            + 0.6 * (w * F.cross_entropy(student(x_tm), y_hat, reduction="none")).mean())
    grads = torch.autograd.grad(loss, list(student.parameters()))
    out = m.update(src, tgt, step, sgd_stepper(m, lr=lr, momentum=0.0))
    for p_new, p_old, g in zip(m.student.parameters(), student.parameters(), grads):
        assert torch.allclose(p_new, (p_old - lr * g).detach(), atol=1e-6)
    assert all(torch.allclose(a, b) for a, b in zip(m.teacher.parameters(), teacher.parameters()))
    assert out["acc/pseudo_confidence"].item() == pytest.approx(q.mean().item(), rel=1e-6)
    assert out["loss/mask"].item() == pytest.approx(
        0.6 * (w * F.cross_entropy(student(x_tm), y_hat, reduction="none")).mean().item(), rel=1e-5)


def test_the_teacher_is_not_averaged_at_step_zero_and_only_f_and_c_step():
    m = tiny_mic()
    src, tgt = image_batches()
    before = copy.deepcopy(m.teacher.state_dict())
    spy = ApplySpy(m)
    m.update(src, tgt, 0, spy)
    assert all(torch.equal(before[k], v) for k, v in m.teacher.state_dict().items())
    assert spy.calls == [({"feat", "cls"}, {"feat", "cls"})]


def test_added_terms_weighted_in_the_first_pass_plain_after_and_the_rest_passes_through():
    seen = []

    class Opt:
        def backward(self, loss):
            seen.append(("backward", loss.item()))

        def zero(self, *groups):
            seen.append(("zero", groups))

        def apply(self, *groups):
            seen.append(("apply", groups))

        def perturb(self, rho, *groups):
            seen.append(("perturb", groups))

        def restore(self):
            seen.append(("restore",))

    opt = AddedTerms(Opt(), [lambda: torch.tensor(0.5), lambda: torch.tensor(2.0)])
    # SDAT's order: zero, backward (pass 1), perturb, backward (pass 2), restore, apply
    opt.zero("feat", "cls", "disc")
    opt.backward(torch.tensor(1.0))
    opt.perturb(0.05, "feat", "cls")
    opt.backward(torch.tensor(10.0))
    opt.restore()
    opt.apply("feat", "cls", "disc")
    assert seen == [("zero", ("feat", "cls", "disc")), ("backward", 1.5), ("perturb", ("feat", "cls")),
                    ("backward", 12.0), ("restore",), ("apply", ("feat", "cls", "disc"))]
    assert [t.item() for t in opt.added] == [0.5, 2.0]


def test_mic_on_sdat_runs_two_passes_and_steps_f_c_and_d_once():
    m = build("method=mic")
    assert type(m.host).__name__ == "SDAT" and m.host.cfg.mcc_weight == 1.0  # CDAN+MCC w/ SDAT
    assert set(m.param_groups()) == {"feat", "cls", "disc"} and m.block == 8  # 64 px at 224 -> 8 px at 28
    src = Batch(torch.randn(4, 3, 28, 28), torch.randint(0, 10, (4,)))
    tgt = Batch(torch.randn(4, 3, 28, 28), None)
    m.train()
    spy = ApplySpy(m)
    out = m.update(src, tgt, 1, spy)
    assert spy.calls == [({"feat", "cls", "disc"}, {"feat", "cls", "disc"})]
    assert {"loss/mask", "loss/domain", "loss/mcc", "acc/pseudo_confidence"} <= set(out)


def test_the_host_group_and_its_settings_and_the_checks():
    cfg = make_cfg("method=mic")
    assert cfg.method.ema == 0.9 and cfg.method.mask_ratio == 0.7 and cfg.method.mask_block == 64
    assert cfg.method.pseudo_weight == PseudoWeight.prob
    assert cfg.optimizer.nesterov and cfg.optimizer.weight_decay == 1e-3
    cdan = make_cfg("method=mic", "method/host=cdan", "method.host.entropy_weighting=true")
    assert type(cdan.method.host).__name__ == "CDANConfig" and cdan.method.host.entropy_weighting
    assert cdan.optimizer.weight_decay == 5e-4 and not cdan.optimizer.nesterov
    validate(make_cfg("method=mic", "method/host=mcc"))
    with pytest.raises(ConfigError, match="valid method/host choices: cdan, dacs, daformer, mcc, sdat"):
        make_cfg("method=mic", "method/host=dann")
    with pytest.raises(ConfigError, match=r"method\.host\.cdan\.disc_dropout"):
        validate(make_cfg("method=mic", "method.host.cdan.disc_dropout=2"))
    with pytest.raises(ConfigError, match=r"method\.mask_ratio must be in \[0, 1\)"):
        validate(make_cfg("method=mic", "method.mask_ratio=1"))
    # the colour switches are drawn once per run from the seed: U > 0.2 for jitter, U > 0.5 for blur
    switches = {(m.jitter_on, m.blur_on) for m in (tiny_mic(jitter=0.2, blur=True) for _ in range(2))}
    assert len(switches) == 1


def test_mic_on_a_segmentation_host_adds_the_masked_ce_with_the_hosts_labels_and_weights():
    m = build_seg("method=mic", "method/host=dacs", "method.host.confidence=0.2", "method.mask_weight=0.5")
    assert type(m.host).__name__ == "DACS" and not hasattr(m, "teacher")  # no teacher of MIC's own
    assert m.block == 2 and set(m.param_groups()) == {"seg", "head"}  # 32 px at 512 -> 2 px at 32
    ref = copy.deepcopy(m)
    (src, tgt), step, lr = seg_batches(), 5, 0.05
    m.update(src, tgt, step, sgd_stepper(m, lr=lr, momentum=0.0))
    # reference: the masked target drawn first from MIC's stream, then DACS's loss + 0.5 x the masked CE
    gen = step_generator(0, step, stream=MASK_STREAM)
    with torch.no_grad():
        u = torch.rand(2, generator=gen).tolist()
        jitter_on, blur_on = u[0] > 0.2, u[1] > 0.5
        x_tm = tgt.x
        if jitter_on or blur_on:
            from uda.methods.parts import strong_augment
            x_tm = strong_augment(x_tm, gen, mean=ref.mean, std=ref.std, jitter=0.2, jitter_p=float(jitter_on),
                                  blur_p=float(blur_on), blur_sigma=[0.15, 1.15])
        x_tm = x_tm * block_mask(3, (32, 32), 2, 0.7, gen)
    host = ref.host
    host_opt = sgd_stepper(host, lr=lr, momentum=0.0)
    terms = []

    class Recorder:  # DACS's own update on the reference, with the masked term computed from its pseudo-labels
        def step(self, loss, *groups):
            y_hat, w_t = host.pseudo
            up = F.interpolate(host.segmenter(x_tm).logits, size=(32, 32), mode="bilinear", align_corners=False)
            term = 0.5 * (w_t * F.cross_entropy(up, y_hat, ignore_index=255, reduction="none")).mean()
            terms.append(term.detach())
            host_opt.step(loss + term, *groups)

    host.update(src, tgt, step, Recorder())
    for got, want in zip(m.parameters(), ref.parameters()):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    assert terms[0] > 0


def test_mic_refuses_a_host_of_the_other_task():
    with pytest.raises(ConfigError, match="method/host=sdat is not a host for the segmentation pair.*dacs, daformer"):
        validate(make_cfg("method=mic", "data=synthetic_seg"))
    with pytest.raises(ConfigError, match="method/host=dacs is not a host for the classification pair"):
        validate(make_cfg("method=mic", "method/host=dacs"))


@pytest.mark.parametrize("host", ["daformer", "dacs"])
def test_mic_on_a_segmentation_host_runs_end_to_end_and_resumes_exactly(tmp_path, host):
    summary = resumes_exactly(["method=mic", f"method/host={host}", *SEG_SMALL], tmp_path, stop_after=4)
    assert 0 <= summary["target_miou"] <= 100
