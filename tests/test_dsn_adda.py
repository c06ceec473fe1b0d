"""DSN and ADDA: which parameter groups change in which sub-step, ADDA's stage boundary, resume."""
import json

import pytest
import torch
import torch.nn.functional as F

from uda.config import ConfigError, validate
from uda.data.pairs import PairInfo
from uda.engine import checkpoint as ckpt
from uda.engine.loop import TrainingInterrupted, train
from uda.engine.optim import Stepper
from uda.methods import Batch
from uda.methods.adda import SOURCE
from uda.registry import get_method

from conftest import SMALL, make_cfg, state_equal

INFO = PairInfo("mnist_mnistm", "mnist", "mnistm", 3, 28, 10)


class SpyStepper(Stepper):
    """Records, for each opt.step call, the groups it was asked to step and the groups that changed."""

    def __init__(self, method, lr=0.05):
        opts = {g: torch.optim.SGD(p, lr=lr) for g, p in method.param_groups().items()}
        super().__init__(opts, torch.amp.GradScaler("cpu", enabled=False), "cpu")
        self.method, self.calls = method, []

    def step(self, loss, *groups):
        before = {g: [p.detach().clone() for p in ps] for g, ps in self.method.param_groups().items()}
        super().step(loss, *groups)
        changed = {g for g, ps in self.method.param_groups().items()
                   if any(not torch.equal(a, p) for a, p in zip(before[g], ps))}
        self.calls.append((set(groups), changed))


def batches(n=6):
    g = torch.Generator().manual_seed(0)
    return (Batch(torch.randn(n, 3, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)),
            Batch(torch.randn(n, 3, 28, 28, generator=g) * 0.5 + 0.3, None))


def build(name, *overrides):
    torch.manual_seed(0)
    cfg = make_cfg(f"method={name}", *overrides)
    return get_method(name).from_config(cfg, INFO)


# ----------------------------------------------------------------------------------------- DSN
@pytest.mark.parametrize("similarity, groups", [
    ("dann", {"shared", "cls", "private", "decoder", "disc"}),
    ("mmd", {"shared", "cls", "private", "decoder"}),
])
def test_dsn_warmup_then_all_losses(similarity, groups):
    m = build("dsn", f"method.similarity={similarity}", "method.adapt_start=5")
    src, tgt = batches()
    spy = SpyStepper(m)
    out = m.update(src, tgt, 4, spy)  # before adapt_start: task loss only
    assert spy.calls[-1] == ({"shared", "cls"}, {"shared", "cls"})
    assert set(out) == {"loss/task", "acc/source_batch"}
    spy.end_iteration()
    out = m.update(src, tgt, 5, spy)
    assert spy.calls[-1] == (groups, groups)
    assert {"loss/recon", "loss/difference", "loss/similarity"} <= set(out)


def test_dsn_total_loss_is_the_weighted_sum_and_uses_private_encoders():
    m = build("dsn", "method.adapt_start=0", "method.alpha=0.5", "method.beta=2", "method.gamma=0.3")
    src, tgt = batches()
    out = m.update(src, tgt, 0, SpyStepper(m, lr=0.0))
    want = out["loss/task"] + 0.5 * out["loss/recon"] + 2 * out["loss/difference"] + 0.3 * out["loss/similarity"]
    assert out["loss/total"].item() == pytest.approx(want.item(), rel=1e-5)
    grids = m.images(src.x[:2], tgt.x[:2])
    assert all(g.shape == (8, 3, 28, 28) for g in grids.values()) and len(grids) == 2


@pytest.mark.parametrize("layer, width", [("code", 100), ("conv", 768)])
def test_dsn_similarity_acts_on_the_chosen_layer(layer, width):
    from uda.losses import domain_bce, mmd_rbf

    m = build("dsn", "method.adapt_start=0", f"method.similarity_layer={layer}")
    assert m.discriminator[0].in_features == width
    src, tgt = batches()
    with torch.no_grad():
        conv = m.shared[0](torch.cat([src.x, tgt.x]))
        feats = conv if layer == "conv" else m.shared[2](m.shared[1](conv))
        d = m.discriminator(feats)
        want = domain_bce(d[:6], 0) + domain_bce(d[6:], 1)
    out = m.update(src, tgt, 0, SpyStepper(m, lr=0.0))
    assert out["loss/similarity"].item() == pytest.approx(want.item(), rel=1e-5)
    mm = build("dsn", "method.adapt_start=0", "method.similarity=mmd", f"method.similarity_layer={layer}")
    with torch.no_grad():
        conv = mm.shared[0](torch.cat([src.x, tgt.x]))
        feats = conv if layer == "conv" else mm.shared[2](mm.shared[1](conv))
        want = mmd_rbf(feats[:6], feats[6:], mm.cfg.mmd_sigmas)
    out = mm.update(src, tgt, 0, SpyStepper(mm, lr=0.0))
    assert out["loss/similarity"].item() == pytest.approx(want.item(), rel=1e-5)


# ---------------------------------------------------------------------------------------- ADDA
def test_adda_stage1_changes_only_source_encoder_and_classifier():
    m = build("adda", "method.pretrain_steps=3")
    src, tgt = batches()
    spy = SpyStepper(m)
    m.update(src, tgt, 0, spy)
    assert spy.calls == [({"src_enc", "cls"}, {"src_enc", "cls"})]
    assert not bool(m.adapted)


def test_adda_stage2_copies_once_then_d_step_then_inverted_label_step():
    m = build("adda", "method.pretrain_steps=3")
    src, tgt = batches()
    m.src_encoder.net[0].weight.data.add_(1.0)  # M_s differs from the (deep-copied) initial M_t
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
    assert 0 < dist < 0.5
    # the copy is one-time: a later step does not reset M_t to M_s
    before = m.tgt_encoder.net[0].weight.detach().clone()
    spy.end_iteration()
    m.update(src, tgt, 4, spy)
    assert not torch.equal(m.tgt_encoder.net[0].weight, m.src_encoder.net[0].weight)
    assert not torch.equal(before, m.tgt_encoder.net[0].weight)


def test_adda_target_step_is_the_inverted_label_loss():
    m = build("adda", "method.pretrain_steps=1")
    src, tgt = batches()
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
    m = build("adda", "method.disc_input=logits")
    assert m.discriminator[0].in_features == 10
    assert build("adda").discriminator[0].in_features == 500


def test_adda_resume_across_the_stage_boundary_matches(tmp_path, mnist_root):
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


@pytest.mark.parametrize("override, message", [
    ("method.alpha=-0.1", "method.alpha must be >= 0"),
    ("method.gamma=-1", "method.gamma must be >= 0"),
    ("method.adapt_start=20000", "method.adapt_start must be in"),
])
def test_dsn_bad_values(override, message):
    with pytest.raises(ConfigError, match=message):
        validate(make_cfg("method=dsn", override))


def test_adda_bad_stage_lengths():
    with pytest.raises(ConfigError, match="method.pretrain_steps must be > 0"):
        validate(make_cfg("method=adda", "method.pretrain_steps=0"))
    with pytest.raises(ConfigError, match="stage 2 needs at least one step"):
        validate(make_cfg("method=adda", "method.pretrain_steps=10000"))


def test_unknown_similarity_is_rejected_with_choices(tmp_path):
    from conftest import run_cli

    res = run_cli("train", "method=dsn", "method.similarity=cosine", f"hydra.run.dir={tmp_path}", cwd=tmp_path, timeout=60)
    assert res.returncode != 0 and "cosine" in res.stderr and "dann, mmd" in res.stderr


def test_dsn_reversal_weight_ramps_over_the_adaptation_phase():
    import math

    m = build("dsn", "method.adapt_start=2000", "trainer.max_steps=10000")
    assert m.grl_lambda(2000) == 0.0
    assert m.grl_lambda(10000) == pytest.approx(math.tanh(5))
    assert m.grl_lambda(6000) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    assert build("dsn", "method.grl_gamma=0").grl_lambda(5000) == 1.0
