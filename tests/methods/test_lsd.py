"""GAN-feature DA (LSD-seg): D's 4-way targets in each step, the warm-up stage, the generator's skip
maps, the discriminator's normalisation, its learning-rate scale, the config checks, each sub-step
against a hand-computed reference, and an end-to-end run that resumes exactly."""
import copy

import pytest
import torch
import torch.nn.functional as F

from helpers import SEG_INFO, SEG_SMALL, TINY_SEG, SpyStepper, build_seg, joint, make_cfg, resumes_exactly, seg_batches
from uda.methods import Batch
from uda.methods.lsd import SRC_FAKE, SRC_REAL, TGT_FAKE, TGT_REAL, four_way
from uda.schema import ConfigError, validate

LSD = ["method=lsd", "method.ngf=4", "method.ndf=4", "method.dropout=0"]


class LossSpy:
    """Wraps four_way to record (D's output id, label) of every 4-way loss."""

    def __init__(self, monkeypatch):
        import uda.methods.lsd as lsd

        self.labels = []
        real = lsd.four_way
        monkeypatch.setattr(lsd, "four_way", lambda logits, label: self.labels.append(label) or real(logits, label))


def test_lsd_four_way_targets_of_each_input_in_each_step(monkeypatch):
    spy = LossSpy(monkeypatch)
    m = build_seg(*LSD)
    src, tgt = seg_batches()
    m.update(src, tgt, 0, SpyStepper(m))
    # D: x_s, G(F(x_s)), x_t, G(F(x_t)); G: own-domain real; F: the other domain's real
    assert spy.labels == [SRC_REAL, SRC_FAKE, TGT_REAL, TGT_FAKE, SRC_REAL, TGT_REAL, TGT_REAL, SRC_REAL]


def test_lsd_warmup_trains_f_and_c_on_the_segmentation_loss_alone_while_d_and_g_train(monkeypatch):
    spy = LossSpy(monkeypatch)
    lr = 0.05
    m = build_seg(*LSD, "method.warmup_steps=2", "trainer.max_steps=10")
    assert [(s.name, s.steps) for s in m.stages(10)] == [("warmup", 2), ("adapt", 8)]
    ref = copy.deepcopy(m)
    src, tgt = seg_batches()
    stepper = SpyStepper(m, lr=lr)
    logs = m.update(src, tgt, 1, stepper)  # last warm-up step: D and G as always, F+C without adversarial terms
    assert spy.labels == [SRC_REAL, SRC_FAKE, TGT_REAL, TGT_FAKE, SRC_REAL, TGT_REAL] and "loss/adv" not in logs
    assert stepper.calls == [({"disc"}, {"disc"}), ({"gen"}, {"gen"}), ({"seg", "head"}, {"seg", "head"})]
    net = ref.segmenter
    loss_f = F.cross_entropy(F.interpolate(joint(net, src.x, tgt.x)[0].logits, size=(32, 32), mode="bilinear",
                                           align_corners=False), src.y, ignore_index=255)
    for q, p, g in zip(m.segmenter.parameters(), net.parameters(), torch.autograd.grad(loss_f, list(net.parameters()))):
        torch.testing.assert_close(q, p.detach() - lr * g, rtol=1e-4, atol=1e-6)
    spy.labels.clear()
    logs = m.update(src, tgt, 2, SpyStepper(m, lr=lr))  # first adapt step: the cross-domain terms reach F
    assert spy.labels[6:] == [TGT_REAL, SRC_REAL] and "loss/adv" in logs


def test_lsd_generator_skips_join_at_their_own_resolution_and_are_released_after_each_pass():
    from uda.methods.lsd import LSD as LSDMethod

    # digits_seg's net [16, 32, 64, 64] on 64 x 64: embedding 64 ch at 16 x 16; skips: block 2 (32 ch, 32 x 32,
    # after G's first upsampling) and block 3 (64 ch, 16 x 16, with the embedding)
    torch.manual_seed(0)
    cfg = make_cfg("data=digits_seg", "method=lsd", "method.ngf=4", "method.gen_skips=true")
    m = LSDMethod.from_config(cfg, SEG_INFO)
    assert m.skip_modules == [m.segmenter.blocks[1], m.segmenter.blocks[2]] and m.generator.levels == [1, 0]
    convs = [mod for mod in m.generator.net if isinstance(mod, torch.nn.Conv2d)]
    assert [c.in_channels for c in convs] == [64 + 64 + 32, 8, 4]  # embedding + block 3, upsampled, + block 2
    plain = LSDMethod.from_config(make_cfg("data=digits_seg", "method=lsd", "method.ngf=4"), SEG_INFO)
    assert [c.in_channels for c in plain.generator.net if isinstance(c, torch.nn.Conv2d)] == [64, 8, 4]
    x = torch.randn(2, 3, 64, 64)
    m.update(Batch(x, torch.zeros(2, 64, 64, dtype=torch.long)), Batch(x.flip(0), None), 0, SpyStepper(m))
    m.features_and_logits(x)
    assert not any("lsd_output" in vars(mod) for mod in m.modules())
    # G reads the skip maps: changing one changes the image
    (_, f), _ = m.embed_pair(x, x)
    g = m.generator.eval()
    assert not torch.allclose(g(f[0], (64, 64), f[1]), g(f[0], (64, 64), [f[1][0], torch.zeros_like(f[1][1])]))


def test_lsd_instance_norm_discriminator_scores_each_image_independently_of_its_batch():
    torch.manual_seed(0)
    x = torch.randn(3, 3, 32, 32)
    for norm, independent in (("instance", True), ("batch", False)):
        D = build_seg(*LSD, f"method.disc_norm={norm}").disc.train()
        alone, in_batch = D(x[:1])[0], D(x)[0][:1]
        assert torch.allclose(alone, in_batch, atol=1e-5) == independent
    kinds = {type(mod) for mod in build_seg(*LSD, "method.disc_norm=instance").disc.modules()}
    assert torch.nn.InstanceNorm2d in kinds and torch.nn.BatchNorm2d not in kinds


def test_lsd_disc_lr_scale_slows_only_the_discriminator():
    m = build_seg(*LSD, "method.gan_optimizer.lr=0.002", "method.disc_lr_scale=0.25")
    over = m.optimizer_overrides()
    assert over["disc"].lr == pytest.approx(0.0005) and over["gen"].lr == pytest.approx(0.002)
    assert over["disc"].betas == over["gen"].betas and over["disc"].schedule == over["gen"].schedule
    paper = build_seg(*LSD).optimizer_overrides()
    assert paper["disc"].lr == paper["gen"].lr == pytest.approx(2e-4)  # the paper: G and D alike


def test_lsd_bad_settings_are_clear_errors():
    with pytest.raises(ConfigError, match=r"method\.disc_lr_scale must be > 0"):
        validate(make_cfg(*TINY_SEG, *LSD, "method.disc_lr_scale=0"))
    with pytest.raises(ConfigError, match=r"method\.gen_adv_weight must be >= 0"):
        validate(make_cfg(*TINY_SEG, *LSD, "method.gen_adv_weight=-1"))
    with pytest.raises(ConfigError, match=r"method\.warmup_steps must be in \[0, trainer\.max_steps=10\), got 10"):
        validate(make_cfg(*TINY_SEG, *LSD, "trainer.max_steps=10", "method.warmup_steps=10"))
    with pytest.raises(ConfigError, match=r"method\.disc_norm=layer is not a valid method\.disc_norm; valid: batch, "
                                          r"instance"):
        make_cfg(*TINY_SEG, *LSD, "method.disc_norm=layer")


def test_four_way_is_cross_entropy_against_one_class_everywhere():
    z = torch.randn(2, 4, 3, 3)
    hand = -F.log_softmax(z, 1)[:, 2].mean()
    torch.testing.assert_close(four_way(z, 2), hand)


@pytest.mark.parametrize("norm, skips", [("batch", False), ("instance", False), ("batch", True)])
def test_lsd_sub_steps_change_only_their_groups_and_equal_a_hand_computed_reference(norm, skips):
    lr = 0.05
    m = build_seg(*LSD, "method.adv_weight=0.3", "method.aux_weight=0.5", "method.recon_weight=2",
              "method.gen_adv_weight=0.4", f"method.disc_norm={norm}", f"method.gen_skips={skips}")
    ref = copy.deepcopy(m)
    src, tgt = seg_batches()
    spy = SpyStepper(m, lr=lr)
    m.update(src, tgt, 0, spy)
    assert spy.calls == [({"disc"}, {"disc"}), ({"gen"}, {"gen"}), ({"seg", "head"}, {"seg", "head"})]
    assert all(p.requires_grad for p in m.parameters())  # everything unfrozen again

    net, G, D = ref.segmenter, ref.generator, ref.disc
    xs, xt, ys = src.x, tgt.x, src.y
    up = lambda t: F.interpolate(t, size=(32, 32), mode="bilinear", align_corners=False)  # noqa: E731
    ce_seg = lambda lo: F.cross_entropy(up(lo), ys, ignore_index=255)  # noqa: E731
    fw = lambda z, c: F.cross_entropy(z, torch.full((z.shape[0], *z.shape[2:]), c))  # noqa: E731
    sgd = lambda params, grads: [p.detach() - lr * g for p, g in zip(params, grads)]  # noqa: E731

    def embed():
        """Per domain (SegOut, (embedding, skip maps)); TINY's net has two blocks, so G's skip is block 0."""
        outs = joint(net, xs, xt)
        k = net.blocks[0](torch.cat([xs, xt])) if skips else None
        return [(o, (o.features, [] if k is None else [k[sl]])) for o, sl in zip(outs, (slice(0, 3), slice(3, 6)))]

    def assign(module, values):
        with torch.no_grad():
            for p, v in zip(module.parameters(), values):
                p.copy_(v)

    # 1) D on real and detached reconstructions (0 src-real, 1 src-fake, 2 tgt-real, 3 tgt-fake) + aux
    with torch.no_grad():
        (_, es), (_, et) = embed()
        fs, ft = G(es[0], (32, 32), es[1]), G(et[0], (32, 32), et[1])
    loss_d = fw(D(xs)[0], 0) + fw(D(fs)[0], 1) + fw(D(xt)[0], 2) + fw(D(ft)[0], 3) + 0.5 * ce_seg(D(xs)[1])
    d_new = sgd(list(D.parameters()), torch.autograd.grad(loss_d, list(D.parameters())))
    for q, v in zip(m.disc.parameters(), d_new):
        torch.testing.assert_close(q, v, rtol=1e-4, atol=1e-6)
    assign(D, d_new)
    # 2) G against the updated D: own-domain real, aux CE, L1 reconstruction
    with torch.no_grad():
        (_, es), (_, et) = embed()
    gs, gt = G(es[0], (32, 32), es[1]), G(et[0], (32, 32), et[1])
    loss_g = (0.4 * (fw(D(gs)[0], 0) + fw(D(gt)[0], 2)) + 0.5 * ce_seg(D(gs)[1])
              + 2 * ((gs - xs).abs().mean() + (gt - xt).abs().mean()))
    g_new = sgd(list(G.parameters()), torch.autograd.grad(loss_g, list(G.parameters())))
    for q, v in zip(m.generator.parameters(), g_new):
        torch.testing.assert_close(q, v, rtol=1e-4, atol=1e-6)
    assign(G, g_new)
    # 3) F + C against the updated G and D: CE + 0.3 (cross-domain + aux)
    (os_, es), (_, et) = embed()
    ds, segs = D(G(es[0], (32, 32), es[1]))
    loss_f = ce_seg(os_.logits) + 0.3 * (fw(ds, 2) + fw(D(G(et[0], (32, 32), et[1]))[0], 0) + 0.5 * ce_seg(segs))
    f_new = sgd(list(net.parameters()), torch.autograd.grad(loss_f, list(net.parameters())))
    for q, v in zip(m.segmenter.parameters(), f_new):
        torch.testing.assert_close(q, v, rtol=1e-4, atol=1e-6)


def test_lsd_runs_and_resumes_exactly(tmp_path):
    summary = resumes_exactly(
        ["method=lsd", "method.ngf=4", "method.ndf=4", "method.warmup_steps=2", *SEG_SMALL, "trainer.images=true"],
        tmp_path, stop_after=4)
    assert 0 <= summary["target_miou"] <= 100 and len(summary["target_iou"]) == 4
    assert (tmp_path / "ref" / "images" / "reconstruction_target_0000006.png").is_file()
