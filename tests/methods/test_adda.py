"""ADDA: stage 1 changes only M_s and C; stage 2 copies M_t <- M_s once, then the D step, then the
inverted-label M_t step (against a hand computation); the discriminator's input; resume across the stage
boundary; stage-length checks."""
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers import SMALL, SpyStepper, build, digit_batches, make_cfg, state_equal
from uda.engine import checkpoint as ckpt
from uda.engine.loop import TrainingInterrupted, train
from uda.methods import Batch
from uda.methods.parts import SOURCE
from uda.schema import ConfigError, validate


def test_adda_stage1_changes_only_source_encoder_and_classifier():
    m = build("method=adda", "method.pretrain_steps=3")
    src, tgt = digit_batches()
    spy = SpyStepper(m)
    m.update(src, tgt, 0, spy)
    assert spy.calls == [({"src_enc", "cls"}, {"src_enc", "cls"})]
    assert not bool(m.adapted)


def test_adda_stage2_copies_once_then_d_step_then_inverted_label_step():
    m = build("method=adda", "method.pretrain_steps=3")
    src, tgt = digit_batches()
    m.src_encoder.net[0].weight.data.add_(0.1)  # M_s differs from the (deep-copied) initial M_t
    frozen = {k: v.clone() for k, v in m.state_dict().items() if k.startswith(("src_encoder", "classifier"))}
    spy = SpyStepper(m)
    m.train()
    m.update(src, tgt, 3, spy)
    assert bool(m.adapted)
    # (a) only D changes; (b) only M_t changes; M_s and C never change in stage 2
    assert spy.calls == [({"disc"}, {"disc"}), ({"tgt_enc"}, {"tgt_enc"})]
    assert all(torch.equal(frozen[k], v) for k, v in m.state_dict().items() if k in frozen)
    # M_t started from M_s: one SGD step away from the source encoder, not from its own init
    dist = (m.tgt_encoder.net[0].weight - m.src_encoder.net[0].weight).abs().max().item()
    assert 0 < dist < 0.05  # (without the copy it would be about the 0.1 offset)
    # the copy is one-time: a later step does not reset M_t to M_s
    before = m.tgt_encoder.net[0].weight.detach().clone()
    spy.end_iteration()
    m.update(src, tgt, 4, spy)
    assert not torch.equal(m.tgt_encoder.net[0].weight, m.src_encoder.net[0].weight)
    assert not torch.equal(before, m.tgt_encoder.net[0].weight)


def test_adda_target_step_is_the_inverted_label_loss():
    m = build("method=adda", "method.pretrain_steps=1")
    src, tgt = digit_batches()
    m.tgt_encoder.load_state_dict(m.src_encoder.state_dict())
    m.adapted.fill_(True)
    spy = SpyStepper(m, lr=0.0)  # lr 0: D is unchanged, so the loss can be recomputed by hand
    m.train()
    m.src_encoder.eval(), m.classifier.eval()
    torch.manual_seed(5)
    out = m.update(src, tgt, 1, spy)
    torch.manual_seed(5)
    f_t = m.tgt_encoder(tgt.x)  # same dropout mask as in the update
    _ = m.discriminator(m.src_encoder(src.x))
    want = F.cross_entropy(m.discriminator(f_t), torch.full((6,), SOURCE))
    assert out["loss/adv"].item() == pytest.approx(want.item(), rel=1e-5)


def test_adda_logit_discriminator_input():
    m = build("method=adda", "method.disc_input=logits")
    assert m.discriminator[0].in_features == 10
    assert build("method=adda").discriminator[0].in_features == 500


def test_adda_resume_across_the_stage_boundary_matches(tmp_path):
    args = [*SMALL, "method=adda", "method.pretrain_steps=3", "trainer.eval_every=2"]
    full = train(make_cfg(*args), tmp_path / "full")
    for stop in (2, 3, 4):  # before, exactly at, and after the boundary
        run = tmp_path / f"cut{stop}"
        with pytest.raises(TrainingInterrupted):
            train(make_cfg(*args), run, stop_after=stop)
        resumed = train(make_cfg(*args, "resume=true"), run)
        a = ckpt.load(tmp_path / "full" / "checkpoints" / "last.pt")
        b = ckpt.load(run / "checkpoints" / "last.pt")
        assert state_equal(a["method"], b["method"]), f"stop at {stop}"
        assert resumed["target_acc"] == full["target_acc"]
    lines = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [x.get("stage_end") for x in lines if x["step"] == 3] == ["pretrain"]


def test_adda_bad_stage_lengths():
    with pytest.raises(ConfigError, match="method.pretrain_steps must be > 0"):
        validate(make_cfg("method=adda", "method.pretrain_steps=0"))
    with pytest.raises(ConfigError, match="stage 2 needs at least one step"):
        validate(make_cfg("method=adda", "method.pretrain_steps=10000"))


def test_adda_lenet_is_the_official_net_without_dropout():
    m = build("method=adda")
    assert not [mod for mod in m.modules() if isinstance(mod, (nn.Dropout, nn.Dropout2d))]
    convs = [mod for mod in m.src_encoder.modules() if isinstance(mod, (nn.Conv2d, nn.Linear))]
    assert [(c.out_channels if isinstance(c, nn.Conv2d) else c.out_features) for c in convs] == [20, 50, 500]
    assert isinstance(m.src_encoder.net[-1], nn.ReLU)  # D reads the post-ReLU FC500, C = one FC10
    assert [mod.out_features for mod in m.classifier if isinstance(mod, nn.Linear)] == [10]


@pytest.mark.parametrize("dropout", ["0", "0.5"])
def test_adda_discriminator_reads_both_domains_features_in_the_same_mode(dropout):
    # old code: M_s in eval mode, M_t in train mode with dropout -- D saw dropout noise on target only
    m = build("method=adda", "method.pretrain_steps=1", f"backbone.dropout={dropout}")
    src, tgt = digit_batches()
    modes, seen = {}, []

    def mode_of(name):
        def hook(mod, inputs, output):
            modes.setdefault(name, mod.training)
        return hook
    m.src_encoder.register_forward_hook(mode_of("src"))
    m.tgt_encoder.register_forward_hook(mode_of("tgt"))
    m.discriminator.register_forward_hook(lambda mod, inputs, output: seen.append(inputs[0].detach().clone()))
    m.train()
    m.update(src, Batch(src.x.clone(), None), 1, SpyStepper(m, lr=0.0))  # the copy step: M_t == M_s
    assert modes["src"] == modes["tgt"]
    if dropout == "0":  # the same images through equal encoders: D reads equal features from both domains
        torch.testing.assert_close(seen[0], seen[1], rtol=0, atol=0)


def test_adda_source_stage_is_half_the_run_unless_set():
    # the paper: 10k source steps, then 10k adversarial steps
    assert [s.steps for s in build("method=adda", "trainer.max_steps=10000").stages(10000)] == [5000, 5000]
    assert [s.steps for s in build("method=adda", "trainer.max_steps=300").stages(300)] == [150, 150]
    assert build("method=adda", "method.pretrain_steps=7").pretrain_steps == 7
