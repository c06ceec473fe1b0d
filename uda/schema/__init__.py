"""Typed config schemas, one module per config group (mirroring ``uda/configs/``), each with its own checks.

Every YAML file under ``uda/configs/`` names its schema in ``defaults``, so a typo or a wrong type on the
command line fails at composition with Hydra's message naming the key; ``validate`` then runs the checks
a schema cannot express. Each default is written once, in the dataclass; a YAML file says only what
differs. The method schemas live next to their methods (``uda/methods/<name>.py``); ``uda.compose``
registers them all. This package imports neither torch nor torchvision.
"""
from uda.errors import ConfigError, UserError
from uda.schema.backbone import (
                                 BACKBONES,
                                 BackboneConfig,
                                 DAFormerNetConfig,
                                 DANNDigitsConfig,
                                 DeepLabV2Config,
                                 FCN8sConfig,
                                 LeNetConfig,
                                 ResNetConfig,
                                 SegSmallConfig,
                                 TimmConfig,
)
from uda.schema.base import CLASSIFICATION, SEGMENTATION
from uda.schema.data import DataConfig, DomainConfig
from uda.schema.method import MethodConfig
from uda.schema.optimizer import OptimizerConfig, OptimName, Schedule
from uda.schema.train import Device, TrainConfig, validate
from uda.schema.trainer import NonFinite, Precision, Progress, Select, TrainerConfig

__all__ = [
    "BACKBONES", "BackboneConfig", "CLASSIFICATION", "ConfigError", "DAFormerNetConfig", "DANNDigitsConfig",
    "DataConfig", "DeepLabV2Config", "Device", "DomainConfig", "FCN8sConfig", "LeNetConfig", "MethodConfig",
    "NonFinite", "OptimName", "OptimizerConfig", "Precision", "Progress", "ResNetConfig", "SEGMENTATION", "Schedule",
    "TimmConfig", "Select", "SegSmallConfig", "TrainConfig", "TrainerConfig", "UserError", "validate",
]
