"""The losses (uda.losses), each against a hand computation: gradient reversal and its schedule, the domain
BCE, DSN's SIMSE, difference loss and MMD, the GAN losses, L1 and the segmentation cross-entropy."""
import math

import pytest
import torch
import torch.nn.functional as F

from uda.losses import (
    binary_accuracy,
    difference_loss,
    domain_bce,
    gan_loss,
    grad_reverse,
    grl_lambda,
    mmd_rbf,
    seg_ce,
    simse,
)


def test_grad_reverse_is_identity_forward_and_minus_lambda_backward():
    x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    y = grad_reverse(x, 0.25)
    assert torch.equal(y, x.detach())
    upstream = torch.tensor([1.0, 2.0, -4.0])
    (y * upstream).sum().backward()
    assert torch.allclose(x.grad, torch.tensor([-0.25, -0.5, 1.0]))


def test_grad_reverse_lambda_zero_blocks_gradient():
    x = torch.ones(3, requires_grad=True)
    grad_reverse(x, 0.0).sum().backward()
    assert torch.equal(x.grad, torch.zeros(3))


def test_grl_lambda_schedule_matches_paper():
    # lambda_p = 2 / (1 + exp(-10 p)) - 1 : starts at 0 (the precedence bug makes it 1 from the start)
    assert grl_lambda(0.0) == 0.0
    assert grl_lambda(0.5) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    assert grl_lambda(0.5) == pytest.approx(0.986614, abs=1e-6)
    assert grl_lambda(1.0) == pytest.approx(math.tanh(5))
    assert grl_lambda(0.1, gamma=10, scale=0.5) == pytest.approx(0.5 * (2 / (1 + math.exp(-1)) - 1))
    values = [grl_lambda(p / 10) for p in range(11)]
    assert values == sorted(values)


def test_domain_bce_by_hand():
    logits = torch.tensor([0.0, 2.0, -1.0])
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    want_target = -(math.log(sig(0)) + math.log(sig(2)) + math.log(sig(-1))) / 3
    want_source = -(math.log(1 - sig(0)) + math.log(1 - sig(2)) + math.log(1 - sig(-1))) / 3
    assert domain_bce(logits, 1).item() == pytest.approx(want_target, rel=1e-6)
    assert domain_bce(logits.view(3, 1), 0).item() == pytest.approx(want_source, rel=1e-6)


def test_binary_accuracy():
    logits = torch.tensor([-1.0, 0.5, 2.0, -0.1])
    assert binary_accuracy(logits, 1).item() == 0.5
    assert binary_accuracy(logits, 0).item() == 0.5
    assert binary_accuracy(torch.tensor([3.0, 1.0, -2.0]), 1).item() == pytest.approx(2 / 3)


def test_simse_by_hand():
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    # d = x - 0; (1/k)||d||^2 - (1/k^2)(sum d)^2 = 30/4 - 100/16
    assert simse(x, torch.zeros_like(x)).item() == pytest.approx(1.25)
    # per image, then the mean over the batch
    xb = torch.stack([x[0], torch.tensor([0.0, 0.0, 0.0, 2.0])])
    assert simse(xb, torch.zeros_like(xb)).item() == pytest.approx((1.25 + (4 / 4 - 4 / 16)) / 2)


def test_simse_is_invariant_to_a_constant_shift_and_mse_is_not():
    g = torch.Generator().manual_seed(0)
    x, x_hat = torch.randn(3, 3, 5, 5, generator=g), torch.randn(3, 3, 5, 5, generator=g)
    assert simse(x, x_hat + 0.7).item() == pytest.approx(simse(x, x_hat).item(), abs=1e-5)
    assert simse(x, x + 2.0).item() == pytest.approx(0.0, abs=1e-6)  # the MINUS sign: an offset costs nothing
    assert torch.nn.functional.mse_loss(x_hat + 0.7, x) != pytest.approx(torch.nn.functional.mse_loss(x_hat, x).item())


def test_difference_loss_zero_for_orthogonal_codes():
    h_c = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    h_p = torch.tensor([[0.0, 0.0], [0.0, 1.0]])
    assert difference_loss(h_c, h_p, normalise=False).item() == 0.0
    # centred codes whose columns are orthogonal over the batch: zero after normalisation as well
    h_c = torch.tensor([[1.0], [-1.0], [1.0], [-1.0]])
    h_p = torch.tensor([[1.0], [1.0], [-1.0], [-1.0]])
    assert difference_loss(h_c, h_p, normalise=True).item() == pytest.approx(0.0, abs=1e-12)
    assert difference_loss(h_c, h_c, normalise=True).item() > 0.9


def test_difference_loss_by_hand():
    h_c = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    h_p = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # H_c^T H_p = [[1, 3], [2, 4]] -> ||.||_F^2 = 30, divided by Dc * Dp = 4
    assert difference_loss(h_c, h_p, normalise=False).item() == pytest.approx(30 / 4)
    # normalised: centre columns, L2-normalise rows, by hand
    c = [[-1.0, -1.0], [1.0, 1.0]]
    c = [[v / math.sqrt(2) for v in row] for row in c]
    p = [[0.5, -0.5], [-0.5, 0.5]]
    p = [[v / math.sqrt(0.5) for v in row] for row in p]
    corr = [[sum(c[n][i] * p[n][j] for n in range(2)) for j in range(2)] for i in range(2)]
    want = sum(v * v for row in corr for v in row) / 4
    assert difference_loss(h_c, h_p, normalise=True).item() == pytest.approx(want, rel=1e-5)


def test_mmd_by_hand_and_properties():
    x, y = torch.tensor([[0.0], [1.0]]), torch.tensor([[2.0]])
    s = 0.5  # k(a, b) = exp(-(a - b)^2 / (2 s)) = exp(-(a - b)^2)
    k = lambda d: math.exp(-(d**2))  # noqa: E731
    want = (k(0) + k(1) + k(1) + k(0)) / 4 + k(0) - 2 * (k(2) + k(1)) / 2
    assert mmd_rbf(x, y, [s]).item() == pytest.approx(want, rel=1e-5)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(64, 5, generator=g)
    assert mmd_rbf(a, a, [1.0, 10.0]).item() == pytest.approx(0.0, abs=1e-6)
    assert mmd_rbf(a, a + 3, [1.0, 10.0]).item() > mmd_rbf(a, a + 0.3, [1.0, 10.0]).item() > 0


def test_seg_ce_ignores_255_and_upsamples_to_the_labels():
    logits = torch.randn(2, 3, 2, 2)
    y = torch.randint(0, 3, (2, 4, 4))
    y[0, 0, 0] = 255
    up = F.interpolate(logits, size=(4, 4), mode="bilinear", align_corners=False)
    keep = y != 255
    hand = -(F.log_softmax(up, 1).gather(1, y.clamp(max=2)[:, None])[:, 0][keep]).mean()
    torch.testing.assert_close(seg_ce(logits, y), hand)


def test_gan_losses_equal_hand_computations():
    z = torch.tensor([[0.5, -1.0], [2.0, 0.0]])
    bce_1 = torch.log1p(torch.exp(-z)).mean()  # -log sigmoid(z)
    torch.testing.assert_close(gan_loss(z, 1, "bce"), bce_1)
    torch.testing.assert_close(gan_loss(z, 0, "bce"), torch.log1p(torch.exp(z)).mean())
    torch.testing.assert_close(gan_loss(z, 1, "ls"), ((z - 1) ** 2).mean())
