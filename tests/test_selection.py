"""Label-free selection scores against hand computations, and which evaluation each criterion picks."""
import math

import pytest
import torch

from uda import selection


def test_entropy_by_hand_and_only_of_distributions():
    p = torch.tensor([[0.5, 0.5], [1.0, 0.0], [0.25, 0.75]])
    hand = (math.log(2) + 0.0 - (0.25 * math.log(0.25) + 0.75 * math.log(0.75))) / 3
    assert selection.entropy(p).item() == pytest.approx(hand, abs=1e-9)
    with pytest.raises(ValueError, match="sum to 1"):
        selection.entropy(torch.tensor([[0.5, 0.2]]))


def test_snd_by_hand():
    p = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9]])
    t = 0.05
    unit = [[a / math.hypot(*r) for a in r] for r in p.tolist()]
    total = 0.0
    for i in range(3):
        sims = [sum(a * b for a, b in zip(unit[i], unit[j])) / t for j in range(3) if j != i]
        z = sum(math.exp(s) for s in sims)
        q = [math.exp(s) / z for s in sims]
        total += -sum(x * math.log(x) for x in q)
    assert selection.snd(p, t).item() == pytest.approx(total / 3, rel=1e-9)


def test_dev_risk_by_hand():
    # w = [1, 2, 3], L = [1, 1, 4]: wL = [1, 2, 12], mean 5; Cov(wL, w) = 11 / 2; Var(w) = 1
    # eta = -5.5; risk = 5 + eta * 2 - eta = -0.5
    assert selection.dev_risk(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 1.0, 4.0])).item() == pytest.approx(
        -0.5
    )


def test_dev_weights_follow_the_domain_classifier():
    g = torch.Generator().manual_seed(0)
    src = torch.randn(400, 5, generator=g)
    tgt = torch.randn(400, 5, generator=g) + torch.tensor([2.0, 0, 0, 0, 0])
    p_t = selection.fit_domain_classifier(src, tgt)
    assert p_t(tgt).mean() > 0.75 and p_t(src).mean() < 0.25
    # same distributions: weights ~1, DEV ~ the plain mean loss
    same = torch.randn(400, 5, generator=g)
    losses = torch.rand(300, generator=g)
    risk = selection.dev_score(src, same, torch.randn(300, 5, generator=g), losses)
    assert risk.item() == pytest.approx(losses.mean().item(), abs=0.05)


def test_select_directions_and_ties():
    rows = [{"step": 1, "source_val_acc": 90.0, "target_entropy": 0.5, "dev": 0.3, "snd": 2.0, "target_acc": 50.0},
            {"step": 2, "source_val_acc": 95.0, "target_entropy": 0.7, "dev": 0.1, "snd": 1.0, "target_acc": 60.0},
            {"step": 3, "source_val_acc": 95.0, "target_entropy": 0.9, "dev": 0.2, "snd": 3.0, "target_acc": 55.0}]
    assert selection.select(rows, "source_val")["step"] == 3  # tie: the later step
    assert selection.select(rows, "entropy")["step"] == 1
    assert selection.select(rows, "dev")["step"] == 2
    assert selection.select(rows, "snd")["step"] == 3
    assert selection.select(rows, "oracle")["step"] == 2
    assert selection.select([{"step": 1, "target_acc": 1.0}], "dev") is None


def _h(p):
    return -sum(x * math.log(x) for x in p if x > 0)


def test_iwcv_is_dev_without_the_control_variate():
    w, loss = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 1.0, 4.0])
    assert selection.iwcv_risk(w, loss).item() == pytest.approx((1 + 2 + 12) / 3)
    # with all weights 1 the control variate vanishes: DEV = IWCV = the mean loss
    ones = torch.ones(3)
    assert (
        selection.dev_risk(ones, loss).item()
        == pytest.approx(selection.iwcv_risk(ones, loss).item())
        == pytest.approx(2.0)
    )


def test_information_maximisation_by_hand():
    rows = [[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]]
    mean = [sum(r[k] for r in rows) / 3 for k in range(2)]
    hand = _h(mean) - sum(_h(r) for r in rows) / 3
    p = torch.tensor(rows, dtype=torch.double)
    assert selection.information_maximisation(p).item() == pytest.approx(hand, rel=1e-9)
    # confident and balanced: IM = log K; all rows alike: IM = 0
    assert selection.information_maximisation(torch.eye(3)).item() == pytest.approx(math.log(3))
    assert selection.information_maximisation(torch.tensor([[0.7, 0.3]] * 4)).item() == pytest.approx(0.0, abs=1e-12)


def test_bnm_by_hand():
    # diag(0.6, 0.8) stacked with a zero row has singular values 0.8 and 0.6; ||P||_* / N = 1.4 / 3
    p = torch.tensor([[0.6, 0.0], [0.0, 0.8], [0.0, 0.0]])
    assert selection.bnm(p).item() == pytest.approx(1.4 / 3)
    # rank one (all rows the same distribution q): ||P||_* = sqrt(N) |q|
    q = torch.tensor([[0.3, 0.7]] * 4)
    assert selection.bnm(q).item() == pytest.approx(math.sqrt(4) * math.hypot(0.3, 0.7) / 4)


def test_mano_softmax_and_taylor_branches_by_hand():
    k = 2
    # confident logits: mean CE to uniform = mean_k -log softmax > 5, so the softmax branch
    conf = [[12.0, 0.0], [0.0, 12.0]]
    ce = sum(-sum(math.log(math.exp(a) / sum(math.exp(b) for b in r)) for a in r) / k for r in conf) / 2
    assert ce > selection.MANO_THRESHOLD
    soft = [[math.exp(a) / sum(math.exp(b) for b in r) for a in r] for r in conf]
    hand = (sum(x ** 4 for r in soft for x in r) / (2 * k)) ** 0.25
    assert selection.mano(torch.tensor(conf)).item() == pytest.approx(hand, rel=1e-9)
    # unsure logits: the Taylor branch, v = 1 + q + q^2 / 2, shifted to a row minimum of 0, L1-normalised
    unsure = [[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]]
    v = [[1 + q + q * q / 2 for q in r] for r in unsure]
    v = [[x - min(r) for x in r] for r in v]
    t = [[x / sum(r) for x in r] for r in v]
    hand = (sum(x ** 4 for r in t for x in r) / (2 * 3)) ** 0.25
    assert selection.mano(torch.tensor(unsure)).item() == pytest.approx(hand, rel=1e-9)
    # the running sums over two halves give the same score as all rows at once (the per-pixel use)
    x = torch.randn(50, 4, generator=torch.Generator().manual_seed(0)) * 3
    sums = selection.mano_sums(x[:20]) + selection.mano_sums(x[20:])
    assert selection.mano_from_sums(sums, 4).item() == pytest.approx(selection.mano(x).item(), rel=1e-12)


def test_mixval_pairs_and_score_by_hand():
    pseudo = torch.tensor([0, 1, 1, 0, 2])
    a, b, intra = selection.mixval_pairs(pseudo, batch=3)
    # inter: batches [0 1 2] and [3 4] against their reverses [2 1 0] and [4 3]: pairs with different
    # labels are 0-2 (0 vs 1), 2-0, 3-4, 4-3 (1-1 is dropped: same label)
    # intra: sorted by label (stable) [0 3 1 | 2 4], reversed per batch [1 3 0 | 4 2]: same-label pairs 3-3
    # (the middle of the first batch) only
    assert list(zip(a.tolist(), b.tolist(), intra.tolist())) == [(0, 2, False), (2, 0, False), (3, 4, False),
                                                               (4, 3, False), (3, 3, True)]
    # predictions on the mixes: right, wrong, right, wrong (inter: 1 / 2); the intra mix right (1)
    mixed = torch.tensor([0, 0, 0, 0, 0])
    assert selection.mixval_score(mixed, pseudo[a], intra).item() == pytest.approx((1.0 + 0.5) / 2)
    # no intra-cluster pair: the inter score alone
    assert selection.mixval_score(torch.tensor([1, 0]), torch.tensor([1, 1]),
                                  torch.tensor([False, False])).item() == pytest.approx(0.5)


def test_mixval_intra_pairs_share_their_label_for_sorted_batches():
    pseudo = torch.randint(0, 4, (1000,), generator=torch.Generator().manual_seed(0))
    a, b, intra = selection.mixval_pairs(pseudo)
    assert (pseudo[a[intra]] == pseudo[b[intra]]).all() and (pseudo[a[~intra]] != pseudo[b[~intra]]).all()
    assert intra.sum() > 900  # after sorting, nearly every image has a same-label partner in its batch


def test_every_criterion_is_selectable_and_the_default_reads_both_tasks():
    from uda.schema.trainer import Select, TrainerConfig

    assert [s.value for s in Select] == list(selection.LABEL_FREE)  # derived from the table
    # the default must work for segmentation pairs too (docs/notes/selection.md)
    assert TrainerConfig().select.value in selection.SEGMENTATION_SELECT
    rows = [{"step": 1, "iwcv": 0.5, "target_im": 1.0, "target_bnm": 0.2, "mixval": 0.9, "target_mano": 0.3},
            {"step": 2, "iwcv": 0.4, "target_im": 0.5, "target_bnm": 0.3, "mixval": 0.8, "target_mano": 0.4}]
    picks = {c: selection.select(rows, c)["step"] for c in ("iwcv", "im", "bnm", "mixval", "mano")}
    assert picks == {"iwcv": 2, "im": 1, "bnm": 2, "mixval": 1, "mano": 2}


@pytest.mark.parametrize("criterion", selection.TABLE, ids=lambda c: c.name)
def test_each_criterion_scores_every_task_it_declares(criterion):
    """A table entry is the whole criterion: its function for each task it names, a paper, what it reads."""
    from uda.schema import CLASSIFICATION, SEGMENTATION

    assert (criterion.classify is not None) == (CLASSIFICATION in criterion.tasks)
    assert (criterion.segment is not None) == (SEGMENTATION in criterion.tasks)
    assert criterion.paper and criterion.reads and criterion.key
