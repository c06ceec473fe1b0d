"""CyCADA: the semantic consistency loss against a hand computation, which groups each stage steps, f_S
frozen after stage 1 and the one-time copy to the task network, the stage checks and schedules, and
end-to-end runs that resume exactly in any stage."""
import json

import pytest
import torch
import torch.nn.functional as F

from helpers import SMALL, SpyStepper, build, digit_batches, make_cfg, state_equal
from uda.engine import checkpoint as ckpt
from uda.engine.loop import TrainingInterrupted, train
from uda.engine.runtime import lr_factor
from uda.schema import ConfigError, validate

TINY = ["method.ngf=4", "method.n_blocks=1", "method.ndf=4"]


def cycada(*overrides):
    return build(
        "method=cycada", *TINY, "method.source_steps=2", "method.translate_steps=2", "trainer.max_steps=6", *overrides
    )


@pytest.mark.parametrize("semantic_source", ["labels", "predictions"])
def test_cycada_semantic_loss_equals_the_hand_computation(semantic_source):
    m = cycada(f"method.semantic_source={semantic_source}", "method.semantic_weight=2")
    src, tgt = digit_batches()
    fake_t, fake_s = torch.tanh(torch.randn(6, 3, 28, 28)), torch.tanh(torch.randn(6, 3, 28, 28))
    (weight, sem), = m.semantic_loss(fake_t, fake_s, src, tgt).values()
    f_s = lambda x: m.src_classifier(m.src_encoder(x))  # noqa: E731
    y_s = src.y if semantic_source == "labels" else f_s(src.x).argmax(1)
    want = F.cross_entropy(f_s(fake_t), y_s) + F.cross_entropy(f_s(fake_s), f_s(tgt.x).argmax(1))
    assert weight == 2 and sem.item() == pytest.approx(want.item(), rel=1e-5)


@pytest.mark.parametrize("feature_adapt, task_groups", [
    (False, [({"task_enc", "task_cls"}, {"task_enc", "task_cls"})]),
    (True, [({"feat_disc"}, {"feat_disc"}), ({"task_enc", "task_cls"}, {"task_enc", "task_cls"})]),
])
def test_cycada_stages_step_their_groups_and_f_s_never_changes_after_stage_one(feature_adapt, task_groups):
    m = cycada(f"method.feature_adapt={str(feature_adapt).lower()}")
    src, tgt = digit_batches()
    spy = SpyStepper(m)
    for step in range(2):  # stage 1: f_S
        m.update(src, tgt, step, spy)
        spy.end_iteration()
    assert spy.calls == [({"src_enc", "src_cls"}, {"src_enc", "src_cls"})] * 2
    f_s = {k: v.clone() for k, v in m.state_dict().items() if k.startswith("src_")}
    assert not bool(m.task_started)
    stale = [p.grad.clone() for p in m.src_encoder.parameters()]  # left by stage 1's last step
    for step in range(2, 4):  # stage 2: translator (the semantic loss backpropagates through f_S)
        spy.calls.clear()
        out = m.update(src, tgt, step, spy)
        spy.end_iteration()
        assert spy.calls == [({"gen"}, {"gen"}), ({"disc"}, {"disc"})] and "loss/semantic" in out
        # no new gradient reaches f_S (its parameters do not require one)
        assert all(not p.requires_grad and torch.equal(p.grad, g) for p, g in zip(m.src_encoder.parameters(), stale))
    spy.calls.clear()
    m.update(src, tgt, 4, spy)  # stage 3, first step: task network <- f_S once, then trained
    spy.end_iteration()
    assert bool(m.task_started) and spy.calls == task_groups
    task_after_first = {k: v.clone() for k, v in m.task_encoder.state_dict().items()}
    m.update(src, tgt, 5, spy)  # no second copy: the task network keeps training from where it was
    assert any(not torch.equal(task_after_first[k], v) for k, v in m.task_encoder.state_dict().items())
    assert state_equal(f_s, {k: v for k, v in m.state_dict().items() if k.startswith("src_")})
    x = src.x[:2]
    torch.testing.assert_close(m.predict(x), m.task_classifier(m.task_encoder(x)))


def test_cycada_rejects_stages_that_leave_no_task_steps():
    cfg = make_cfg("method=cycada", "method.source_steps=5", "method.translate_steps=5", "trainer.max_steps=10")
    with pytest.raises(ConfigError, match="method.source_steps.*translate_steps.*trainer.max_steps"):
        validate(cfg)


def test_linear_schedule_runs_over_the_translation_stage_only(tmp_path):
    cfg = make_cfg("method=cycada").method.gan_optimizer
    assert [lr_factor(cfg, s, 10) for s in (0, 4, 5, 6, 9)] == pytest.approx([1, 1, 1, 0.8, 0.2])
    m = cycada()
    assert m.schedule_spans(6)["gen"] == (2, 4) and m.schedule_spans(6)["task_enc"] == (4, 6)


CY = ["method=cycada", *TINY, "method.source_steps=4", "method.translate_steps=4", "trainer.max_steps=12",
      "trainer.eval_every=4", "trainer.checkpoint_every=4", "method.pool_size=8", "method.feature_adapt=true"]


@pytest.fixture(scope="module")
def cycada_reference(tmp_path_factory):
    d = tmp_path_factory.mktemp("cycada_ref")
    summary = train(make_cfg(*SMALL, *CY, "trainer.images=true"), d)
    return d, summary


def test_cycada_runs_its_three_stages_and_writes_translation_grids(cycada_reference):
    d, summary = cycada_reference
    assert summary["steps"] == 12
    stages = [r.get("stage_end") for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines())]
    assert stages == ["source", "translate", "task"]
    pngs = sorted(p.name for p in (d / "images").glob("*.png"))
    assert "translation_source_to_target_0000008.png" in pngs


@pytest.mark.parametrize("stop_after", [6, 10])  # inside the translation stage, inside the task stage
def test_cycada_resumes_exactly_in_any_stage(tmp_path, cycada_reference, stop_after):
    with pytest.raises(TrainingInterrupted):
        train(make_cfg(*SMALL, *CY), tmp_path, stop_after=stop_after)
    train(make_cfg(*SMALL, *CY, "resume=true"), tmp_path)
    a = ckpt.load(tmp_path / "checkpoints" / "last.pt")["method"]
    b = ckpt.load(cycada_reference[0] / "checkpoints" / "last.pt")["method"]
    assert state_equal(a, b)  # pools, translator, f_S and the one-time copy included
