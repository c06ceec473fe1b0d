import math

import pytest
import torch

from uda.config import OptimizerConfig, Schedule
from uda.engine.optim import lr_factor
from uda.losses import binary_accuracy, domain_bce, grad_reverse, grl_lambda


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


def test_dann_learning_rate_schedule():
    cfg = OptimizerConfig(lr=0.01, schedule=Schedule.dann, sched_alpha=10, sched_beta=0.75)
    assert lr_factor(cfg, 0, 100) == 1.0
    assert lr_factor(cfg, 100, 100) == pytest.approx(11 ** -0.75)
    assert lr_factor(cfg, 30, 100) == pytest.approx(1 / (1 + 3) ** 0.75)


def test_other_schedules():
    assert lr_factor(OptimizerConfig(schedule=Schedule.constant), 50, 100) == 1.0
    step = OptimizerConfig(schedule=Schedule.step, sched_gamma=0.5, sched_step_size=10)
    assert [lr_factor(step, s, 100) for s in (0, 9, 10, 25)] == [1.0, 1.0, 0.5, 0.25]
    poly = OptimizerConfig(schedule=Schedule.poly, sched_power=0.9)
    assert lr_factor(poly, 50, 100) == pytest.approx(0.5 ** 0.9)


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
