"""DSN's losses against hand computations."""
import math

import pytest
import torch

from uda.losses import difference_loss, mmd_rbf, simse


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
