"""The whole config of ``uda train`` (``configs/train.yaml``) and ``validate``, which runs every group's checks."""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from omegaconf import MISSING

from uda.errors import ConfigError
from uda.schema.backbone import backbones_for
from uda.schema.base import SEGMENTATION, positive
from uda.schema.data import DataConfig
from uda.schema.method import methods_for
from uda.schema.optimizer import OptimizerConfig
from uda.schema.trainer import TrainerConfig
from uda.selection import SEGMENTATION_SELECT


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


@dataclass
class TrainConfig:
    method: Any = MISSING  # a MethodConfig subclass (uda/methods/<name>.py)
    data: DataConfig = MISSING
    backbone: Any = MISSING  # a BackboneConfig subclass (uda/schema/backbone.py)
    optimizer: OptimizerConfig = MISSING
    trainer: TrainerConfig = MISSING
    seed: int = 0  # network initialisation, batch order and every random draw of the run
    # false: a new run (refuses a directory holding a checkpoint) | true: continue the
    # checkpoint in hydra.run.dir (error if there is none) | auto: continue if there is one,
    # else start fresh
    resume: Any = False
    device: Device = Device.auto  # auto: cuda when there is one, else cpu
    # deterministic kernels where torch has them (exact resume on CPU holds either way)
    deterministic: bool = False


def resume_problem(resume: bool | str, has_ckpt: bool, ckpt_dir: Any) -> str | None:
    """Why ``resume`` (false | true | auto) cannot go with what ``ckpt_dir`` holds (a new run over a checkpoint,
    or resume=true without one), else None: asked before Hydra writes (``uda.preflight``) and at the start."""
    if resume is False and has_ckpt:
        return f"{ckpt_dir} holds a checkpoint: pass resume=true to continue that run, or choose another hydra.run.dir"
    if resume is True and not has_ckpt:
        return (f"resume=true but there is no checkpoint in {ckpt_dir}; set hydra.run.dir to the run to continue, "
                f"or pass resume=auto to start fresh when there is none")
    return None


def validate(cfg: TrainConfig) -> None:
    """Checks a schema cannot express (ranges, cross-field consistency): each group's own, then whether
    the pair, the backbone and the method are for the same task. Raises ConfigError naming the key."""
    if cfg.resume not in (True, False, "auto"):
        raise ConfigError(f"resume must be true, false or auto, got {cfg.resume!r}")
    cfg.trainer.check()
    cfg.data.check()
    cfg.backbone.check()
    positive(cfg.backbone.head_lr_mult, "backbone.head_lr_mult")
    d, b, m = cfg.data, cfg.backbone, cfg.method
    task = d.task
    if b.TASK != task:
        raise ConfigError(f"data={d.name} is a {task} pair but backbone={b.name} is a {b.TASK} network; valid "
                          f"backbones: {', '.join(backbones_for(task))}")
    if task not in m.TASKS:
        raise ConfigError(f"method={m.name} is a {' / '.join(m.TASKS)} method but data={d.name} is a {task} pair; "
                          f"methods for {task} pairs: {', '.join(methods_for(task))}")
    if task == SEGMENTATION and cfg.trainer.select.value not in SEGMENTATION_SELECT:
        raise ConfigError(f"trainer.select={cfg.trainer.select.value} has no per-pixel reading for the segmentation "
                          f"pair data={d.name}; valid for segmentation: {', '.join(SEGMENTATION_SELECT)}")
    m.check(cfg)  # before the optimizer's: a method's own refusal (MIC's host for the task) says more
    cfg.optimizer.check("optimizer")
    if 0 < cfg.optimizer.horizon < cfg.trainer.max_steps:
        raise ConfigError(f"optimizer.horizon={cfg.optimizer.horizon} must be 0 (= trainer.max_steps) or >= "
                          f"trainer.max_steps={cfg.trainer.max_steps}: the schedule cannot end before the run")
