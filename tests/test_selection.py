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
    assert selection.dev_risk(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 1.0, 4.0])).item() == pytest.approx(-0.5)


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
