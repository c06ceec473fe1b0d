"""The Stepper and the learning-rate schedules: unknown groups and double steps are refused; each schedule
(a function of the step) against its formula."""

import pytest
import torch
from torch import nn

from uda.engine.runtime import Stepper, lr_factor, lr_factors
from uda.schema import OptimizerConfig, Schedule


def linear_stepper():
    net = nn.Linear(4, 2)
    return net, Stepper({"cls": torch.optim.SGD(net.parameters(), lr=0.1)}, torch.amp.GradScaler("cpu", enabled=False),
                        "cpu")


def test_stepper_rejects_an_unknown_group_naming_the_known_ones():
    net, opt = linear_stepper()
    with pytest.raises(KeyError, match="cls"):
        opt.step(net(torch.randn(5, 4)).sum(), "gen")


def test_stepper_refuses_a_second_step_of_a_group_in_one_iteration():
    net, opt = linear_stepper()
    x = torch.randn(5, 4)
    opt.step(net(x).sum(), "cls")
    with pytest.raises(RuntimeError, match="twice"):
        opt.step(net(x).sum(), "cls")
    opt.end_iteration()
    opt.step(net(x).sum(), "cls")


def test_a_new_round_lets_a_group_step_again_and_each_round_unscales_its_own_gradients():
    net, opt = linear_stepper()
    x = torch.randn(5, 4)
    w0 = net.weight.detach().clone()
    opt.step(net(x).sum(), "cls")
    opt.new_round()
    w1 = net.weight.detach().clone()
    opt.step(net(x).sum(), "cls")  # allowed after new_round
    # plain SGD, lr 0.1: d(sum net(x))/dW = 1 x^T summed over the batch, the same in both rounds
    g = x.sum(0).expand(2, 4)
    assert torch.allclose(w1, w0 - 0.1 * g) and torch.allclose(net.weight, w1 - 0.1 * g)
    with pytest.raises(RuntimeError, match="twice"):
        opt.step(net(x).sum(), "cls")


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


def test_linear_warmup_is_mmcvs_over_the_given_fraction_of_the_span():
    # DAFormer: poly power 1 after 1500 of 40k iterations of warm-up from ratio 1e-6 (mmcv's linear warm-up
    # scales the poly value at step t by 1 - (1 - t / W)(1 - ratio)); here W = 0.1 x 200 = 20 steps
    cfg = OptimizerConfig(schedule=Schedule.poly, sched_power=1.0, warmup=0.1, warmup_ratio=1e-6)
    poly = lambda t: 1 - t / 200  # noqa: E731
    assert lr_factor(cfg, 0, 200) == pytest.approx(1e-6)
    assert lr_factor(cfg, 5, 200) == pytest.approx(poly(5) * (1 - 0.75 * (1 - 1e-6)))
    assert lr_factor(cfg, 19, 200) == pytest.approx(poly(19) * (1 - 0.05 * (1 - 1e-6)))
    assert lr_factor(cfg, 20, 200) == pytest.approx(poly(20))  # warm-up over: the schedule alone
    assert lr_factor(OptimizerConfig(schedule=Schedule.poly, sched_power=1.0), 0, 200) == 1.0  # default: none


def test_adamw_decouples_weight_decay():
    from uda.engine.runtime import build_optimizer
    from uda.schema import OptimName

    p = torch.nn.Parameter(torch.ones(3))
    opt = build_optimizer([p], OptimizerConfig(name=OptimName.adamw, lr=0.1, weight_decay=0.5))
    assert isinstance(opt, torch.optim.AdamW)
    p.grad = torch.zeros(3)  # no gradient: only the decoupled decay moves w, w <- w (1 - lr wd)
    opt.step()
    assert torch.allclose(p.detach(), torch.full((3,), 0.95))


def test_a_group_with_a_span_follows_its_schedule_over_that_span_only():
    linear = OptimizerConfig(schedule=Schedule.linear, sched_decay_start=0.5)
    cfgs = {"gen": linear, "cls": linear}
    # "gen" trains over steps [10, 20): constant before and through its first half, 0.2 at its last step
    at = {s: lr_factors(cfgs, {"gen": (10, 20)}, s, 40) for s in (0, 10, 15, 16, 19, 30)}
    assert [at[s]["gen"] for s in (0, 10, 15, 16, 19, 30)] == pytest.approx([1, 1, 1, 0.8, 0.2, 0.2])
    assert at[30]["cls"] == pytest.approx(lr_factor(linear, 30, 40))  # no span: the whole run


def test_a_horizon_longer_than_the_run_stops_the_schedule_early():
    # AdaptSegNet's official poly: over NUM_STEPS 250k, stopped at 150k with the lr at 0.4^0.9 of its base
    poly = OptimizerConfig(schedule=Schedule.poly, sched_power=0.9, horizon=250)
    assert lr_factors({"seg": poly}, {}, 149, 150)["seg"] == pytest.approx((1 - 149 / 250) ** 0.9)
    plain = OptimizerConfig(schedule=Schedule.poly, sched_power=0.9)  # horizon 0: the run itself
    assert lr_factors({"seg": plain}, {}, 149, 150)["seg"] == pytest.approx((1 / 150) ** 0.9)


def test_a_horizon_shorter_than_the_run_is_a_clear_error():
    from helpers import make_cfg
    from uda.schema import ConfigError, validate
    with pytest.raises(ConfigError, match="optimizer.horizon=500 must be 0"):
        validate(make_cfg("optimizer.horizon=500", "trainer.max_steps=1000"))
    with pytest.raises(ConfigError, match="optimizer.horizon must be >= 0"):
        validate(make_cfg("optimizer.horizon=-1"))


def test_rounds_under_a_live_gradient_scaler_step_by_the_unscaled_gradients():
    # a scale of 1024 must be divided out in every round (a second step without an update would not be)
    net = nn.Linear(4, 2)
    opt = Stepper({"cls": torch.optim.SGD(net.parameters(), lr=0.1)}, torch.amp.GradScaler("cpu", init_scale=1024.0),
                  "cpu")
    x = torch.randn(5, 4)
    w0 = net.weight.detach().clone()
    for _ in range(3):
        opt.step(net(x).sum(), "cls")
        opt.new_round()
    opt.end_iteration()
    assert torch.allclose(net.weight, w0 - 3 * 0.1 * x.sum(0).expand(2, 4), atol=1e-5)


def test_perturb_moves_along_the_normalised_gradient_and_restore_keeps_the_gradient_at_w_plus_e():
    """SAM by hand on one Linear: e = rho g / ||g|| with ||g|| over weight and bias together; the
    gradient of the second loss is taken at w + e, the step starts from w."""
    net, opt = linear_stepper()
    x = torch.randn(5, 4)
    w0, b0 = net.weight.detach().clone(), net.bias.detach().clone()
    opt.zero("cls")
    opt.backward((net(x) ** 2).sum())
    g_w, g_b = 2 * net(x).detach().t() @ x, 2 * net(x).detach().sum(0)  # d sum(y^2) = 2 y
    norm = torch.sqrt((g_w ** 2).sum() + (g_b ** 2).sum())
    opt.perturb(0.05, "cls")
    assert net.weight.grad is None  # zeroed for the pass at w + e
    assert torch.allclose(net.weight, w0 + 0.05 * g_w / norm) and torch.allclose(net.bias, b0 + 0.05 * g_b / norm)
    opt.backward(net(x).sum())  # at w + e: d sum(y)/dW = 1 x^T
    with pytest.raises(RuntimeError, match="restore"):
        opt.apply("cls")
    opt.restore()
    assert torch.allclose(net.weight, w0, atol=1e-7)
    opt.apply("cls")
    assert torch.allclose(net.weight, w0 - 0.1 * x.sum(0).expand(2, 4), atol=1e-6)
    assert torch.allclose(net.bias, b0 - 0.1 * 5, atol=1e-6)


def test_perturb_under_a_gradient_scale_equals_the_unscaled_one_and_a_non_finite_gradient_skips():
    x = torch.randn(5, 4)
    moved = []
    for scaler in (torch.amp.GradScaler("cpu", enabled=False), torch.amp.GradScaler("cpu", init_scale=1024.0)):
        torch.manual_seed(0)
        net = nn.Linear(4, 2)
        opt = Stepper({"cls": torch.optim.SGD(net.parameters(), lr=0.1)}, scaler, "cpu")
        w0 = net.weight.detach().clone()
        opt.zero("cls")
        opt.backward(net(x).pow(2).sum())
        opt.perturb(0.05, "cls")
        moved.append(net.weight.detach() - w0)
        opt.restore()
    assert torch.allclose(moved[0], moved[1], atol=1e-7) and moved[0].abs().sum() > 0
    net, opt = linear_stepper()
    w0 = net.weight.detach().clone()
    opt.begin_iteration()
    opt.zero("cls")
    opt.backward(net(x).sum())
    net.weight.grad[0, 0] = float("inf")
    opt.perturb(0.05, "cls")
    assert torch.equal(net.weight, w0)  # nothing moved
    opt.backward(net(x).sum())
    opt.restore()
    opt.apply("cls")
    assert torch.equal(net.weight, w0) and opt.skipped == 1
    opt.end_iteration()
    opt.step(net(x).sum(), "cls")  # the next iteration steps again
    assert not torch.equal(net.weight, w0)


def test_a_forward_after_a_step_inside_autocast_sees_the_new_weights():
    """autocast caches its bf16 copies of the weights until the outermost autocast exits; a second forward in
    the same update (MCD's rounds, SDAT's pass at w + e) must not read the stale copies."""
    net, opt = linear_stepper()
    x = torch.randn(5, 4)

    def fresh(w, b):  # the forward at weights w, b with nothing cached (plain tensors are not cached)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return torch.nn.functional.linear(x, w.detach().clone(), b.detach().clone()).float()

    with torch.autocast("cpu", dtype=torch.bfloat16):
        opt.step(net(x).float().sum(), "cls")
        assert torch.equal(net(x).float(), fresh(net.weight, net.bias))  # after the step
        opt.zero("cls")
        opt.backward(net(x).float().pow(2).sum())
        opt.perturb(0.5, "cls")
        assert torch.equal(net(x).float(), fresh(net.weight, net.bias))  # at w + e
        opt.restore()
        assert torch.equal(net(x).float(), fresh(net.weight, net.bias))  # back at w
