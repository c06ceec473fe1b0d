"""Config composition and validation: the default is the paper's DANN, overrides compose typed configs,
each default is written once, every method's YAML has its class, and every mistake is one clear error."""
from pathlib import Path

import pytest

from helpers import make_cfg
from uda.compose import CONFIG_DIR
from uda.methods.dann import DANNConfig
from uda.methods.source_only import SourceOnlyConfig
from uda.schema import ConfigError, Device, Precision, validate


def test_default_config_is_dann_on_mnist_mnistm_with_paper_settings():
    cfg = make_cfg()
    assert isinstance(cfg.method, DANNConfig)
    assert cfg.data.name == "mnist_mnistm" and (cfg.data.source.name, cfg.data.target.name) == ("mnist", "mnistm")
    assert cfg.trainer.batch_size == 64  # 64 source + 64 target = the paper's 128
    assert cfg.optimizer.lr == 0.01 and cfg.optimizer.momentum == 0.9
    assert cfg.trainer.precision == Precision.auto and cfg.device == Device.auto
    assert cfg.data.mean == [0.5] * 3 and cfg.data.std == [0.5] * 3
    validate(cfg)


def test_overrides_compose_typed_configs():
    cfg = make_cfg("method=source_only", "seed=1", "trainer.max_steps=3000")
    assert isinstance(cfg.method, SourceOnlyConfig)
    assert cfg.seed == 1 and cfg.trainer.max_steps == 3000


@pytest.mark.parametrize("override, message", [
    ("trainer.max_steps=0", "trainer.max_steps must be > 0"),
    ("method.adv_weight=-1", "method.adv_weight must be >= 0"),
    ("optimizer.momentum=1.5", "optimizer.momentum"),
    ("data.channels=2", "data.channels must be 1 or 3"),
    ("data.mean=[0.5]", "data.mean needs one value per channel"),
])
def test_validate_rejects_bad_values(override, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        validate(make_cfg(override))


def test_every_method_config_has_a_registered_class_and_back():
    from uda.methods import METHODS, get_method

    get_method("dann")
    yaml_names = {p.stem for p in (Path(CONFIG_DIR) / "method").glob("*.yaml")}
    assert yaml_names == set(METHODS)
    with pytest.raises(
        ConfigError,
        match="valid methods: adaptsegnet, adda, advent, cdan, cycada, cyclegan, dacs, daformer, dann, dsn, fixmatch, "
        "lsd, mcc, mcd, mdd, mean_teacher, mic, road, sdat, shot, source_only",
    ):
        get_method("foo")


@pytest.mark.parametrize(
    "overrides, needle",
    [
        (
            ["data=digits_seg", "method=dann"],
            "method=dann is a classification method.*methods for segmentation pairs: adaptsegnet, advent, dacs, "
            "daformer, lsd, mic, road, source_only",
        ),
        (["data=digits_seg", "backbone=lenet"], "valid backbones: seg_small, deeplabv2, fcn8s"),
        (["method=adaptsegnet", "backbone=dann_mnist"], "is a segmentation method but data=mnist_mnistm"),
        (["data=digits_seg", "method=adaptsegnet", "backbone.channels=[8]"], "at least two"),
    ],
)
def test_mismatched_task_method_and_backbone_are_clear_errors(overrides, needle):
    with pytest.raises(ConfigError, match=needle):
        validate(make_cfg(*overrides))
