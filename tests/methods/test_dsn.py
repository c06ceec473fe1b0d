"""DSN: the task-only phase then all losses, which groups change, the weighted total, the similarity on
the chosen layer against a hand computation, the reversal's ramp, and its config checks."""
import math

import pytest
import torch

from helpers import SpyStepper, build, cli, digit_batches, make_cfg
from uda.losses import domain_bce, mmd_rbf
from uda.schema import ConfigError, validate


@pytest.mark.parametrize("similarity, groups", [
    ("dann", {"shared", "cls", "private", "decoder", "disc"}),
    ("mmd", {"shared", "cls", "private", "decoder"}),
])
def test_dsn_warmup_then_all_losses(similarity, groups):
    m = build("method=dsn", f"method.similarity={similarity}", "method.adapt_start=5")
    src, tgt = digit_batches()
    spy = SpyStepper(m)
    out = m.update(src, tgt, 4, spy)  # before adapt_start: task loss only
    assert spy.calls[-1] == ({"shared", "cls"}, {"shared", "cls"})
    assert set(out) == {"loss/task", "acc/source_batch"}
    spy.end_iteration()
    out = m.update(src, tgt, 5, spy)
    assert spy.calls[-1] == (groups, groups)
    assert {"loss/recon", "loss/difference", "loss/similarity"} <= set(out)


def test_dsn_total_loss_is_the_weighted_sum():
    """Each term recomputed from the networks by hand (task CE, SIMSE reconstructions, the difference of
    centred, row-normalised codes ||H_c^T H_p||_F^2 / (Dc Dp), the domain log-loss), then weighted."""
    import torch.nn.functional as F

    m = build("method=dsn", "method.adapt_start=0", "method.alpha=0.5", "method.beta=2", "method.gamma=0.3")
    src, tgt = digit_batches()
    with torch.no_grad():
        h_c = m.shared(torch.cat([src.x, tgt.x]))
        h_cs, h_ct, h_ps, h_pt = h_c[:6], h_c[6:], m.private_s(src.x), m.private_t(tgt.x)
        task = F.cross_entropy(m.classifier(h_cs), src.y)

        def simse(x, x_hat):  # (1/k) ||x - x_hat||^2 - (1/k^2) (sum(x - x_hat))^2, per image, mean
            d = (x - x_hat).flatten(1)
            k = d.shape[1]
            return ((d * d).sum(1) / k - d.sum(1) ** 2 / k**2).mean()

        def difference(a, b):
            a = F.normalize(a - a.mean(0), dim=1, eps=1e-6)
            b = F.normalize(b - b.mean(0), dim=1, eps=1e-6)
            return (a.T @ b).pow(2).sum() / (a.shape[1] * b.shape[1])

        recon = simse(src.x, m.decoder(h_cs + h_ps)) + simse(tgt.x, m.decoder(h_ct + h_pt))
        diff = difference(h_cs, h_ps) + difference(h_ct, h_pt)
        d = m.discriminator(h_c if m.cfg.similarity_layer.value == "code" else m.shared[0](torch.cat([src.x, tgt.x])))
        sim = F.binary_cross_entropy_with_logits(d.squeeze(1), torch.cat([torch.zeros(6), torch.ones(6)]))
    out = m.update(src, tgt, 0, SpyStepper(m, lr=0.0))
    for key, want in (("loss/task", task), ("loss/recon", recon), ("loss/difference", diff),
                      ("loss/similarity", sim)):
        assert out[key].item() == pytest.approx(want.item(), rel=1e-4), key
    want = task + 0.5 * recon + 2 * diff + 0.3 * sim
    assert out["loss/total"].item() == pytest.approx(want.item(), rel=1e-5)


def test_dsn_grids_show_shared_private_and_full_reconstructions_per_domain():
    m = build("method=dsn")
    src, tgt = digit_batches()
    grids = m.images(src.x[:2], tgt.x[:2])
    assert all(g.shape == (8, 3, 28, 28) for g in grids.values()) and len(grids) == 2


@pytest.mark.parametrize("layer, width", [("code", 100), ("conv", 768)])
def test_dsn_similarity_acts_on_the_chosen_layer(layer, width):
    m = build("method=dsn", "method.adapt_start=0", f"method.similarity_layer={layer}")
    assert m.discriminator[0].in_features == width
    src, tgt = digit_batches()
    with torch.no_grad():
        conv = m.shared[0](torch.cat([src.x, tgt.x]))
        feats = conv if layer == "conv" else m.shared[2](m.shared[1](conv))
        d = m.discriminator(feats)
        want = 0.5 * (domain_bce(d[:6], 0) + domain_bce(d[6:], 1))  # the official mean over all 2n
    out = m.update(src, tgt, 0, SpyStepper(m, lr=0.0))
    assert out["loss/similarity"].item() == pytest.approx(want.item(), rel=1e-5)
    mm = build("method=dsn", "method.adapt_start=0", "method.similarity=mmd", f"method.similarity_layer={layer}")
    with torch.no_grad():
        conv = mm.shared[0](torch.cat([src.x, tgt.x]))
        feats = conv if layer == "conv" else mm.shared[2](mm.shared[1](conv))
        want = mmd_rbf(feats[:6], feats[6:], mm.cfg.mmd_sigmas)
    out = mm.update(src, tgt, 0, SpyStepper(mm, lr=0.0))
    assert out["loss/similarity"].item() == pytest.approx(want.item(), rel=1e-5)


@pytest.mark.parametrize("override, message", [
    ("method.alpha=-0.1", "method.alpha must be >= 0"),
    ("method.gamma=-1", "method.gamma must be >= 0"),
    ("method.adapt_start=20000", "method.adapt_start must be in"),
])
def test_dsn_bad_values(override, message):
    with pytest.raises(ConfigError, match=message):
        validate(make_cfg("method=dsn", override))


def test_unknown_similarity_is_rejected_with_choices(tmp_path):
    res = cli("train", "method=dsn", "method.similarity=cosine", f"hydra.run.dir={tmp_path}")
    assert res.returncode != 0 and "cosine" in res.stderr and "dann, mmd" in res.stderr


def test_dsn_reversal_weight_ramps_over_the_adaptation_phase():
    m = build("method=dsn", "method.adapt_start=2000", "trainer.max_steps=10000")
    assert m.grl_lambda(2000) == 0.0
    assert m.grl_lambda(10000) == pytest.approx(math.tanh(5))
    assert m.grl_lambda(6000) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    assert build("method=dsn", "method.grl_gamma=0").grl_lambda(5000) == 1.0


@pytest.mark.parametrize("overrides, needle", [
    (["backbone=resnet50"], "method=dsn needs backbone=dann_mnist"),
    (["backbone=lenet"], "method=dsn needs backbone=dann_mnist"),
    (["method.code_size=64"], "method.code_size=64 must equal"),
])
def test_dsn_needs_the_dann_digits_net_it_is_cut_from(overrides, needle):
    with pytest.raises(ConfigError, match=needle):
        validate(make_cfg("method=dsn", *overrides))


def test_dsn_task_only_phase_is_the_papers_share_of_the_run_unless_set():
    # the paper: 10k task-only steps of the paper recipe's 30k; a shorter run keeps the same share
    assert build("method=dsn", "trainer.max_steps=10000").adapt_start == 3333
    assert build("+experiment=dsn_mnist_mnistm_paper").adapt_start == 10000
    assert build("method=dsn", "method.adapt_start=50", "trainer.max_steps=10000").adapt_start == 50
