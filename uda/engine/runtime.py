"""What a run runs on: the device, the autocast context (``uda.engine.precision`` chooses the precision),
seeding, the method's stage plan, one optimizer per parameter group with its learning-rate schedule (a
function of the step), and ``Stepper``, what a method's ``update`` calls to step them."""
from __future__ import annotations

import contextlib
import random
from typing import TYPE_CHECKING

import torch
from torch import nn

from uda.engine import dist
from uda.schema import ConfigError, Device, OptimizerConfig, OptimName, Precision, Schedule

if TYPE_CHECKING:
    from uda.methods.base import Method, Stage


def resolve_device(device: Device) -> torch.device:
    if device == Device.auto:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == Device.cuda and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA device is available; valid here: auto, cpu")
    return torch.device(device.value)


def autocast(device: torch.device, precision: Precision):
    """The forward passes' autocast context: none for fp32, bf16 or fp16 (with gradient scaling) otherwise."""
    if precision == Precision.fp32:
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == Precision.bf16 else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def seed_everything(seed: int) -> None:
    """Python's and torch's global generators (network initialisation, dropout, the image pools)."""
    random.seed(seed)
    torch.manual_seed(seed)


def plan_stages(method: Method, max_steps: int) -> list[Stage]:
    """The method's stages for this budget; ConfigError unless all are positive and fill it exactly."""
    stages = method.stages(max_steps)
    if sum(s.steps for s in stages) != max_steps or any(s.steps <= 0 for s in stages):
        raise ConfigError(f"the stages {[(s.name, s.steps) for s in stages]} must be positive and add up to "
                          f"trainer.max_steps={max_steps}")
    return stages


def stage_ends(stages: list[Stage]) -> dict[int, str]:
    """step at which each stage ends -> its name."""
    return {sum(s.steps for s in stages[: i + 1]): s.name for i, s in enumerate(stages)}


def build_optimizer(params: list[nn.Parameter], cfg: OptimizerConfig) -> torch.optim.Optimizer:
    if cfg.name == OptimName.sgd:
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                               nesterov=cfg.nesterov)
    if cfg.name == OptimName.adam:
        return torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    if cfg.name == OptimName.adamw:
        return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.name}")


def build_optimizers(method: Method, default: OptimizerConfig) -> tuple[dict[str, OptimizerConfig],
                                                                         dict[str, torch.optim.Optimizer]]:
    """(config, optimizer) per parameter group: the method's override for the group, else ``default``."""
    groups, overrides = method.param_groups(), method.optimizer_overrides()
    cfgs = {name: overrides.get(name, default) for name in groups}
    return cfgs, {name: build_optimizer(params, cfgs[name]) for name, params in groups.items()}


def lr_factors(cfgs: dict[str, OptimizerConfig], spans: dict[str, tuple[int, int] | list[tuple[int, int]]],
               step: int, max_steps: int) -> dict[str, float]:
    """Each group's schedule factor at ``step``, over its span [a, b) (default: the whole run; CyCADA's
    translator decays over its own stage), held at the span's ends outside it; a list of spans restarts
    the schedule at each one's start (the latest begun by ``step``, else the first); a group's
    ``horizon`` > 0 replaces the span's length as the schedule's length."""
    return {name: lr_factor(c, min(max(step - a, 0), b - a - 1), c.horizon or b - a)
            for name, c in cfgs.items() for a, b in [active_span(spans.get(name, (0, max_steps)), step)]}


def active_span(span: tuple[int, int] | list[tuple[int, int]], step: int) -> tuple[int, int]:
    if not isinstance(span, list):
        return tuple(span)
    begun = [s for s in span if s[0] <= step]
    return tuple(max(begun) if begun else min(span))


def lr_factor(cfg: OptimizerConfig, step: int, max_steps: int) -> float:
    """Multiplier of the base lr at ``step`` (derived from the step, so nothing to checkpoint): the
    schedule's, times mmcv's linear warm-up 1 - (1 - t / W)(1 - warmup_ratio) for t < W = warmup x span."""
    factor = _schedule_factor(cfg, step, max_steps)
    warm = cfg.warmup * max_steps
    if step < warm:
        factor *= 1.0 - (1.0 - step / warm) * (1.0 - cfg.warmup_ratio)
    return factor


def _schedule_factor(cfg: OptimizerConfig, step: int, max_steps: int) -> float:
    p = step / max_steps
    if cfg.schedule == Schedule.constant:
        return 1.0
    if cfg.schedule == Schedule.dann:  # Ganin et al. 2016: mu_p = mu_0 / (1 + alpha p)^beta
        return 1.0 / (1.0 + cfg.sched_alpha * p) ** cfg.sched_beta
    if cfg.schedule == Schedule.step:
        return cfg.sched_gamma ** (step // cfg.sched_step_size)
    if cfg.schedule == Schedule.poly:
        return (1.0 - p) ** cfg.sched_power
    if cfg.schedule == Schedule.linear:  # CycleGAN: constant, then linearly to 0 at the end of the span
        return 1.0 if p < cfg.sched_decay_start else (1.0 - p) / (1.0 - cfg.sched_decay_start)
    raise ValueError(f"unknown schedule {cfg.schedule}")


class Stepper:
    """What a method's ``update`` calls (``uda.methods.base.Optimizers``): ``opt.step(loss, "feat", "cls")``.

    Zeroes the named groups' gradients, backpropagates ``loss`` (scaled under fp16, outside
    autocast), and steps the named groups' optimizers. Other groups are untouched; their stale
    gradients are zeroed before their own step. The loop calls ``scaler.update()`` once per
    iteration, so each group may be stepped at most once per iteration.

    A non-finite loss is not backpropagated and its update is skipped (counted in ``skipped``; the
    loop applies ``trainer.nonfinite``). Checking costs one device sync per update, which the fp16
    gradient scaler performs anyway.

    Under torch.distributed the stepped groups' gradients are averaged over the ranks before the
    step, and a non-finite loss on any rank skips the update on all of them.
    """

    def __init__(self, optimizers: dict[str, torch.optim.Optimizer], scaler: torch.amp.GradScaler, device_type: str):
        self.optimizers = optimizers
        self.scaler = scaler
        self.device_type = device_type
        self._stepped: set[str] = set()
        self._bad = False  # the loss backpropagated since the last ``zero`` was non-finite
        self._bad_ascent = False  # a ``perturb`` this iteration met a non-finite gradient
        self._ascent: list[tuple[torch.nn.Parameter, torch.Tensor]] = []  # (parameter, e) until ``restore``
        self.skipped = 0  # updates skipped for a non-finite loss in this iteration

    def _check(self, groups: tuple[str, ...]) -> None:
        unknown = [g for g in groups if g not in self.optimizers]
        if unknown or not groups:
            raise KeyError(f"unknown parameter groups {unknown or '()'}; this method has {sorted(self.optimizers)}")

    def zero(self, *groups: str) -> None:
        self._check(groups)
        for g in groups:
            self.optimizers[g].zero_grad(set_to_none=True)
        self._bad = False

    def backward(self, loss: torch.Tensor) -> None:
        with torch.autocast(self.device_type, enabled=False):
            scaled = self.scaler.scale(loss)  # (also initialises the fp16 scale on the first call)
            if not bool(torch.isfinite(loss.detach()).all()):
                self._bad = True
                return
            scaled.backward()

    def apply(self, *groups: str) -> None:
        """Step the named groups with the gradients accumulated since their ``zero``."""
        self._check(groups)
        again = self._stepped.intersection(groups)
        if again:
            raise RuntimeError(f"groups {sorted(again)} stepped twice in one iteration")
        if self._ascent:
            raise RuntimeError("apply() between perturb() and restore(): the step must start from w, not w + e")
        if dist.world() > 1:
            params = [p for g in groups for pg in self.optimizers[g].param_groups for p in pg["params"]]
            self._bad = dist.average_gradients(params, self._bad)
        if self._bad or self._bad_ascent:  # skip: parameters and optimizer state stay as they were
            for g in groups:
                self.optimizers[g].zero_grad(set_to_none=True)
            self.skipped += 1
            self._bad = False
            return
        for g in groups:
            self.scaler.step(self.optimizers[g])
        self._stepped.update(groups)
        # autocast keeps its low-precision copies of the weights until the loop's autocast exits: a forward
        # later in this update (MCD's rounds, ADDA's D, SDAT's second pass) must see the new weights
        torch.clear_autocast_cache()

    def step(self, loss: torch.Tensor, *groups: str) -> None:
        self.zero(*groups)
        self.backward(loss)
        self.apply(*groups)

    @torch.no_grad()
    def perturb(self, rho: float, *groups: str) -> None:
        """SAM's ascent (Foret et al. 2021; SDAT's ``first_step``): with the gradient g backpropagated since
        the groups' ``zero``, move their parameters to w + e, e = rho g / (||g|| + 1e-12), ||g|| the L2 norm
        over all of them together; then zero their gradients for the pass at w + e. g is unscaled first
        (fp16) and averaged over the ranks (torch.distributed); a non-finite g or loss moves nothing and
        skips this iteration's updates, as a non-finite loss does."""
        self._check(groups)
        if self._ascent:
            raise RuntimeError("perturb() twice without restore()")
        params = [p for g in groups for pg in self.optimizers[g].param_groups for p in pg["params"]]
        if dist.world() > 1:  # (every rank lists the same parameters, with or without a gradient)
            self._bad = dist.average_gradients(params, self._bad)
        params = [p for p in params if p.grad is not None]
        inv_scale = 1.0 / self.scaler.get_scale() if self.scaler.is_enabled() else 1.0
        grads = [p.grad.float() * inv_scale for p in params]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])) if grads else None
        if self._bad or (norm is not None and not bool(torch.isfinite(norm))):
            self._bad_ascent = True
        elif norm is not None:
            for p, g in zip(params, grads):
                e = (g * (rho / (norm + 1e-12))).to(p.dtype)
                p.add_(e)
                self._ascent.append((p, e))
        torch.clear_autocast_cache()  # the pass at w + e must not reuse autocast's copies of w
        self.zero(*groups)

    def reset(self, *groups: str) -> None:
        """Forget the groups' optimizer state (momentum, Adam's moments), as a new optimizer would start:
        SHOT's target stage builds its own SGD."""
        self._check(groups)
        for g in groups:
            self.optimizers[g].state.clear()

    @torch.no_grad()
    def restore(self) -> None:
        """Undo ``perturb``: w + e -> w, keeping the gradients taken at w + e for the next ``apply``."""
        for p, e in self._ascent:
            p.sub_(e)
        self._ascent.clear()
        torch.clear_autocast_cache()

    def new_round(self) -> None:
        """Let every group step again within this iteration (MCD steps its generator and classifiers in
        several rounds). The fp16 scale is updated first, as at an iteration's end, so each optimizer step
        unscales only the gradients of its own round."""
        if self._stepped:
            self.scaler.update()
        self._stepped.clear()

    def end_iteration(self) -> None:
        if self._stepped:
            self.scaler.update()
        elif self.scaler.is_enabled() and self.skipped:  # nothing stepped: back off as an overflow would
            self.scaler.update(self.scaler.get_scale() * self.scaler.get_backoff_factor())
        self._stepped.clear()
        self._bad = self._bad_ascent = False

    def begin_iteration(self) -> None:
        self.skipped = 0

    def set_lr(self, factors: dict[str, float]) -> None:
        """lr = base lr x schedule factor, per parameter group (computed from the step each iteration)."""
        for name, opt in self.optimizers.items():
            for group in opt.param_groups:
                group.setdefault("initial_lr", group["lr"])
                group["lr"] = group["initial_lr"] * factors[name]
