"""``optimizer``: one optimizer and learning-rate schedule (``configs/optimizer/``; methods nest more)."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from uda.errors import ConfigError
from uda.schema.base import nonneg, positive, unit_interval


class OptimName(str, Enum):
    sgd = "sgd"
    adam = "adam"
    adamw = "adamw"  # Adam with decoupled weight decay (Loshchilov & Hutter 2019; DAFormer, MIC)


class Schedule(str, Enum):
    constant = "constant"
    dann = "dann"  # lr_p = lr / (1 + alpha p)^beta  (Ganin et al. 2016)
    step = "step"  # lr * gamma^(step // step_size)
    poly = "poly"  # lr * (1 - p)^power
    linear = "linear"  # constant until p = sched_decay_start, then linearly to 0 at p = 1 (CycleGAN)


@dataclass
class OptimizerConfig:
    name: OptimName = OptimName.sgd  # sgd | adam | adamw
    lr: float = 0.01  # the base learning rate, times the schedule's factor at each step
    momentum: float = 0.9  # SGD momentum
    nesterov: bool = False  # SGD: Nesterov momentum (Transfer-Learning-Library's runs use it)
    weight_decay: float = 0.0  # L2 penalty on every parameter the optimizer steps
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    schedule: Schedule = Schedule.dann  # constant | dann | step | poly | linear (formulas above)
    # dann schedule: lr_p = lr / (1 + sched_alpha p)^sched_beta
    sched_alpha: float = 10.0
    sched_beta: float = 0.75
    # step: lr * sched_gamma^(step // sched_step_size); poly: lr * (1 - p)^sched_power
    sched_gamma: float = 0.95
    sched_step_size: int = 20000
    sched_power: float = 0.9
    # linear schedule: the fraction of the span after which the lr decays linearly to 0
    sched_decay_start: float = 0.5
    # steps the schedule's progress p runs over (0 = the span it decays over: the run, or its
    # stage); longer than the run stops it early with the lr not yet decayed (AdaptSegNet:
    # poly over 250k, stopped at 150k)
    horizon: int = 0
    # linear warm-up over this fraction of the span (mmcv's: factor x (1 - (1 - t / W)(1 - warmup_ratio)) at
    # step t < W; DAFormer: 1500 of 40k iterations = 0.0375, ratio 1e-6); 0 = none
    warmup: float = 0.0
    warmup_ratio: float = 1e-6

    def check(self, key: str = "optimizer") -> None:
        """``key``: where this optimizer sits (``optimizer``, ``method.gan_optimizer``, ...), for the messages."""
        positive(self.lr, f"{key}.lr")
        unit_interval(self.momentum, f"{key}.momentum")
        nonneg(self.weight_decay, f"{key}.weight_decay")
        if self.nesterov and (self.name != OptimName.sgd or self.momentum <= 0):
            raise ConfigError(f"{key}.nesterov needs {key}.name=sgd with momentum > 0, got {self.name.value} with "
                              f"momentum {self.momentum}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"{key}.betas must be two numbers in [0, 1), got {self.betas}")
        positive(self.sched_step_size, f"{key}.sched_step_size")
        unit_interval(self.sched_decay_start, f"{key}.sched_decay_start")
        nonneg(self.horizon, f"{key}.horizon")
        if not 0 <= self.warmup < 1:
            raise ConfigError(f"{key}.warmup is the fraction of the schedule's span spent warming up, in [0, 1); "
                              f"got {self.warmup}")
        unit_interval(self.warmup_ratio, f"{key}.warmup_ratio")


def adam(lr: float, betas: tuple[float, float], schedule: Schedule = Schedule.constant, **kw) -> OptimizerConfig:
    """An Adam config, for the defaults of the methods' nested optimizers: ``adam(2e-4, (0.5, 0.999))``."""
    return OptimizerConfig(name=OptimName.adam, lr=lr, betas=list(betas), schedule=schedule, **kw)
