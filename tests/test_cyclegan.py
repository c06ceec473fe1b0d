"""CycleGAN and CyCADA: the image pool, the losses, each sub-step against a hand-computed reference,
which groups change when, f_S frozen after stage 1, stage boundaries and resume in every stage."""
import copy

import pytest
import torch
import torch.nn.functional as F

from uda.config import ConfigError, validate
from uda.data.pairs import PairInfo
from uda.engine import checkpoint as ckpt
from uda.engine.loop import TrainingInterrupted, train
from uda.losses import l1, lsgan
from uda.methods.cyclegan import ImagePool
from uda.registry import get_method

from conftest import SMALL, make_cfg, state_equal
from test_dsn_adda import SpyStepper, batches

INFO = PairInfo("mnist_mnistm", "mnist", "mnistm", 3, 28, 10, mean=(0.5,) * 3, std=(0.5,) * 3)


def build(name, *overrides, info=INFO):
    torch.manual_seed(0)
    return get_method(name).from_config(make_cfg(f"method={name}", *overrides), info)

TINY = ["method.ngf=4", "method.n_blocks=1", "method.ndf=4"]


# ------------------------------------------------------------------------------------- image pool
def test_image_pool_fills_then_swaps_half_and_round_trips_through_its_state():
    pool = ImagePool(3, (1, 2, 2))
    imgs = [torch.full((1, 1, 2, 2), float(i)) for i in range(10)]
    # filling: each fake is stored and returned as it is
    assert torch.equal(pool(torch.cat(imgs[:2])), torch.cat(imgs[:2]))
    assert int(pool.count) == 2
    torch.manual_seed(5)
    out = pool(torch.cat(imgs[2:6]))  # 1 more fills the pool, then 3 go through the coin
    torch.manual_seed(5)
    swap, slot = torch.rand(4).tolist(), torch.randint(3, (4,)).tolist()
    stored, want = [0.0, 1.0, 2.0], [2.0]
    for k in range(1, 4):  # hand model of the rule: p=1/2 return a random stored image and keep the new one
        new = float(k + 2)
        if swap[k] < 0.5:
            want.append(stored[slot[k]])
            stored[slot[k]] = new
        else:
            want.append(new)
    assert [float(v) for v in out[:, 0, 0, 0]] == want
    assert [float(v) for v in pool.images[:, 0, 0, 0]] == stored and int(pool.count) == 3
    assert any(s < 0.5 for s in swap[1:]) and any(s >= 0.5 for s in swap[1:])  # both branches exercised
    # its state (a module's buffers, hence the checkpoint) restores it exactly
    clone = ImagePool(3, (1, 2, 2))
    clone.load_state_dict(pool.state_dict())
    torch.manual_seed(9)
    a = pool(torch.cat(imgs[6:]))
    torch.manual_seed(9)
    assert torch.equal(a, clone(torch.cat(imgs[6:]))) and torch.equal(pool.images, clone.images)


def test_an_empty_pool_passes_fakes_through():
    x = torch.randn(4, 3, 2, 2)
    assert torch.equal(ImagePool(0, (3, 2, 2))(x), x)


# ------------------------------------------------------------------------------------------ losses
def test_lsgan_and_l1_equal_hand_computations():
    pred = torch.tensor([[0.5], [2.0]])
    assert lsgan(pred, True).item() == pytest.approx(((0.5 - 1) ** 2 + (2 - 1) ** 2) / 2)
    assert lsgan(pred, False).item() == pytest.approx((0.25 + 4.0) / 2)
    a, b = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.0, 1.0, 0.5])
    assert l1(a, b).item() == pytest.approx((1 + 3 + 0) / 3)


# --------------------------------------------------------------------------------- translator step
def test_translator_step_equals_a_hand_computed_reference_and_changes_only_its_group():
    lr = 0.05
    m = build("cyclegan", *TINY, "method.cycle_weight=3", "method.identity_weight=0.5")
    ref = copy.deepcopy(m)
    src, tgt = batches()
    spy = SpyStepper(m, lr=lr)
    m.translate_step(src, tgt, spy)
    assert spy.calls == [({"gen"}, {"gen"}), ({"disc"}, {"disc"})]  # G with D frozen, then D

    # reference generator update: plain autograd on the copies, SGD by hand
    g_params = [*ref.g_st.parameters(), *ref.g_ts.parameters()]
    xs, xt = src.x, tgt.x  # mean = std = 0.5: the normalised space is [-1, 1] already
    fake_t, fake_s = ref.g_st(xs), ref.g_ts(xt)
    loss_g = (((ref.d_t(fake_t) - 1) ** 2).mean() + ((ref.d_s(fake_s) - 1) ** 2).mean()
              + 3 * ((ref.g_ts(fake_t) - xs).abs().mean() + (ref.g_st(fake_s) - xt).abs().mean())
              + 0.5 * 3 * ((ref.g_st(xt) - xt).abs().mean() + (ref.g_ts(xs) - xs).abs().mean()))
    grads = torch.autograd.grad(loss_g, g_params)
    got = [*m.g_st.parameters(), *m.g_ts.parameters()]
    for p, g, q in zip(g_params, grads, got):
        torch.testing.assert_close(q, p - lr * g, rtol=1e-4, atol=1e-6)
    # reference discriminator update: real vs the (pre-update) fakes, which the filling pool returns as is
    d_params = [*ref.d_s.parameters(), *ref.d_t.parameters()]
    loss_d = (0.5 * (((ref.d_t(xt) - 1) ** 2).mean() + (ref.d_t(fake_t.detach()) ** 2).mean())
              + 0.5 * (((ref.d_s(xs) - 1) ** 2).mean() + (ref.d_s(fake_s.detach()) ** 2).mean()))
    grads = torch.autograd.grad(loss_d, d_params)
    for p, g, q in zip(d_params, grads, [*m.d_s.parameters(), *m.d_t.parameters()]):
        torch.testing.assert_close(q, p - lr * g, rtol=1e-4, atol=1e-6)
    assert int(m.pool_t.count) == src.x.shape[0] and torch.equal(m.pool_t.images[:6], fake_t.detach())


def test_cyclegan_iteration_order_and_grids():
    m = build("cyclegan", *TINY)
    src, tgt = batches()
    spy = SpyStepper(m)
    out = m.update(src, tgt, 0, spy)
    assert spy.calls == [({"gen"}, {"gen"}), ({"disc"}, {"disc"}), ({"cls"}, {"cls"})]
    assert {"loss/gan_g", "loss/cycle", "loss/identity", "loss/d_t", "loss/d_s", "loss/cls"} <= set(out)
    with torch.no_grad():
        grids = m.images(src.x[:2], tgt.x[:2])
    assert set(grids) == {"translation/source_to_target", "translation/target_to_source"}
    assert all(g.shape == (6, 3, 28, 28) for g in grids.values())  # x, G(x), F(G(x))


def test_translation_maps_between_the_normalised_space_and_minus_one_one():
    info = PairInfo("p", "a", "b", 3, 28, 10, mean=(0.2, 0.4, 0.6), std=(0.1, 0.2, 0.3))
    m = build("cyclegan", *TINY, info=info)
    pix = torch.rand(2, 3, 4, 4)  # [0, 1]
    norm = (pix - torch.tensor(info.mean).view(1, -1, 1, 1)) / torch.tensor(info.std).view(1, -1, 1, 1)
    torch.testing.assert_close(m.to_pm1(norm), pix * 2 - 1)
    torch.testing.assert_close(m.from_pm1(pix * 2 - 1), norm)


# ----------------------------------------------------------------------------------------- CyCADA
def cycada(*overrides):
    return build("cycada", *TINY, "method.source_steps=2", "method.translate_steps=2", "trainer.max_steps=6", *overrides)


@pytest.mark.parametrize("semantic_source", ["labels", "predictions"])
def test_cycada_semantic_loss_equals_the_hand_computation(semantic_source):
    m = cycada(f"method.semantic_source={semantic_source}", "method.semantic_weight=2")
    src, tgt = batches()
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
    src, tgt = batches()
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
    from uda.engine.optim import lr_factor

    cfg = make_cfg("method=cycada").method.gan_optimizer
    assert [lr_factor(cfg, s, 10) for s in (0, 4, 5, 6, 9)] == pytest.approx([1, 1, 1, 0.8, 0.2])
    m = cycada()
    assert m.schedule_spans(6)["gen"] == (2, 4) and m.schedule_spans(6)["task_enc"] == (4, 6)


# ---------------------------------------------------------------------------- end to end, resume
CY = ["method=cycada", *TINY, "method.source_steps=4", "method.translate_steps=4", "trainer.max_steps=12",
      "trainer.eval_every=4", "trainer.checkpoint_every=4", "method.pool_size=8", "method.feature_adapt=true"]


@pytest.fixture(scope="module")
def cycada_reference(tmp_path_factory, mnist_root):
    d = tmp_path_factory.mktemp("cycada_ref")
    summary = train(make_cfg(*SMALL, *CY), d)
    return d, summary


def test_cycada_runs_its_three_stages_and_writes_translation_grids(cycada_reference):
    d, summary = cycada_reference
    assert summary["steps"] == 12
    stages = [r.get("stage_end") for r in map(__import__("json").loads, (d / "metrics.jsonl").read_text().splitlines())]
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


def test_cli_translation_run_saves_the_translator_and_grids(tmp_path):
    from conftest import run_cli

    res = run_cli("train", "method=cyclegan", *TINY, *SMALL, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    state = ckpt.load(tmp_path / "run" / "checkpoints" / "last.pt")
    assert any(k.startswith("g_st.") for k in state["method"]) and "pool_t.images" in state["method"]
    assert (tmp_path / "run" / "images" / "translation_target_to_source_0000006.png").is_file()
