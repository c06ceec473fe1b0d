"""CycleGAN's translator (uda.methods.translator): the image pool, the LSGAN and L1 losses, its step against
a hand-computed reference (generators with the discriminators frozen, then the discriminators), the
maps between the normalised space and [-1, 1]; the CycleGAN method's iteration order, grids and CLI run."""
import copy

import pytest
import torch

from helpers import SMALL, SpyStepper, build, digit_batches, run_cli
from uda.data.pairs import PairInfo
from uda.engine import checkpoint as ckpt
from uda.losses import l1, lsgan
from uda.methods.translator import ImagePool

TINY = ["method.ngf=4", "method.n_blocks=1", "method.ndf=4"]


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


def test_lsgan_equals_the_hand_computation():
    pred = torch.tensor([[0.5], [2.0]])
    assert lsgan(pred, True).item() == pytest.approx(((0.5 - 1) ** 2 + (2 - 1) ** 2) / 2)
    assert lsgan(pred, False).item() == pytest.approx((0.25 + 4.0) / 2)


def test_l1_equals_the_hand_computation():
    a, b = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.0, 1.0, 0.5])
    assert l1(a, b).item() == pytest.approx((1 + 3 + 0) / 3)


def test_translator_step_equals_a_hand_computed_reference_and_changes_only_its_group():
    lr = 0.05
    m = build("method=cyclegan", *TINY, "method.cycle_weight=3", "method.identity_weight=0.5")
    ref = copy.deepcopy(m)
    src, tgt = digit_batches()
    spy = SpyStepper(m, lr=lr)
    m.translator.step(src, tgt, spy)
    assert spy.calls == [({"gen"}, {"gen"}), ({"disc"}, {"disc"})]  # G with D frozen, then D

    # reference generator update: plain autograd on the copies, SGD by hand
    g_params = [*ref.translator.g_st.parameters(), *ref.translator.g_ts.parameters()]
    xs, xt = src.x, tgt.x  # mean = std = 0.5: the normalised space is [-1, 1] already
    fake_t, fake_s = ref.translator.g_st(xs), ref.translator.g_ts(xt)
    loss_g = (((ref.translator.d_t(fake_t) - 1) ** 2).mean() + ((ref.translator.d_s(fake_s) - 1) ** 2).mean()
              + 3 * ((ref.translator.g_ts(fake_t) - xs).abs().mean() + (ref.translator.g_st(fake_s) - xt).abs().mean())
              + 0.5 * 3 * ((ref.translator.g_st(xt) - xt).abs().mean() + (ref.translator.g_ts(xs) - xs).abs().mean()))
    grads = torch.autograd.grad(loss_g, g_params)
    got = [*m.translator.g_st.parameters(), *m.translator.g_ts.parameters()]
    for p, g, q in zip(g_params, grads, got):
        torch.testing.assert_close(q, p - lr * g, rtol=1e-4, atol=1e-6)
    # reference discriminator update: real vs the (pre-update) fakes, which the filling pool returns as is
    d_params = [*ref.translator.d_s.parameters(), *ref.translator.d_t.parameters()]
    loss_d = (0.5 * (((ref.translator.d_t(xt) - 1) ** 2).mean() + (ref.translator.d_t(fake_t.detach()) ** 2).mean())
              + 0.5 * (((ref.translator.d_s(xs) - 1) ** 2).mean() + (ref.translator.d_s(fake_s.detach()) ** 2).mean()))
    grads = torch.autograd.grad(loss_d, d_params)
    for p, g, q in zip(d_params, grads, [*m.translator.d_s.parameters(), *m.translator.d_t.parameters()]):
        torch.testing.assert_close(q, p - lr * g, rtol=1e-4, atol=1e-6)
    assert int(m.translator.pool_t.count) == src.x.shape[0] and torch.equal(
        m.translator.pool_t.images[:6], fake_t.detach()
    )


def test_cyclegan_iteration_order_and_grids():
    m = build("method=cyclegan", *TINY)
    src, tgt = digit_batches()
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
    m = build("method=cyclegan", *TINY, info=info)
    pix = torch.rand(2, 3, 4, 4)  # [0, 1]
    norm = (pix - torch.tensor(info.mean).view(1, -1, 1, 1)) / torch.tensor(info.std).view(1, -1, 1, 1)
    torch.testing.assert_close(m.translator.to_pm1(norm), pix * 2 - 1)
    torch.testing.assert_close(m.translator.from_pm1(pix * 2 - 1), norm)


def test_cli_translation_run_saves_the_translator_and_grids(tmp_path):
    res = run_cli("train", "method=cyclegan", *TINY, *SMALL, "trainer.images=true", f"hydra.run.dir={tmp_path / 'run'}",
                  cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    state = ckpt.load(tmp_path / "run" / "checkpoints" / "last.pt")
    assert (
        any(k.startswith("translator.g_st.") for k in state["method"]) and "translator.pool_t.images" in state["method"]
    )
    assert (tmp_path / "run" / "images" / "translation_target_to_source_0000006.png").is_file()
