"""Adding a method takes three places: its module (the class and its ``Config``), its YAML, and one line
in ``METHODS``. Here a tiny method is written in exactly those three (a module in a temporary directory,
a config directory searched after the shipped one, one ``METHODS`` entry) and trained end to end."""
import importlib
import json

import pytest

from helpers import SMALL
from uda.compose import compose
from uda.engine.loop import train
from uda.methods import METHODS
from uda.schema import ConfigError, validate

MODULE = '''
"""Centroid matching: CE on source plus the squared distance between the domains' mean features.

Per iteration:
  1) one step of F and C on CE(C(F(x_s)), y_s) + weight ||mean F(x_s) - mean F(x_t)||^2
"""
from dataclasses import dataclass

import torch

from uda.schema.base import nonneg
from uda.schema.method import MethodConfig
from uda.methods.base import Method
from uda.methods.parts import source_ce
from uda.methods.parts import classifier_nets


@dataclass
class CentroidConfig(MethodConfig):
    name: str = "centroid"
    weight: float = 0.5

    def check(self, cfg):
        nonneg(self.weight, "method.weight")


class Centroid(Method):
    Config = CentroidConfig

    def __init__(self, *, cfg, features, classifier):
        super().__init__()
        self.cfg, self.features, self.classifier = cfg, features, classifier

    @classmethod
    def from_config(cls, cfg, info):
        features, classifier, _ = classifier_nets(cfg, info)
        return cls(cfg=cfg.method, features=features, classifier=classifier)

    def param_groups(self):
        return {"feat": list(self.features.parameters()), "cls": list(self.classifier.parameters())}

    def update(self, src, tgt, step, opt):
        f_s, f_t = self.features(src.x), self.features(tgt.x)
        loss_cls, acc_s = source_ce(self.classifier(f_s), src.y)
        loss_mean = (f_s.mean(0) - f_t.mean(0)).pow(2).sum()
        # 1) one step of F and C
        opt.step(loss_cls + self.cfg.weight * loss_mean, "feat", "cls")
        return {"loss/cls": loss_cls.detach(), "loss/mean": loss_mean.detach(), "acc/source_batch": acc_s}

    def features_and_logits(self, x):
        f = self.features(x)
        return f, self.classifier(f)
'''
YAML = "defaults:\n  - /schema/method/centroid@_here_\n  - _self_\n"


@pytest.fixture
def centroid(tmp_path, monkeypatch):
    """The three places: the module, its YAML (in a config directory of its own), one METHODS line."""
    (tmp_path / "centroid_method.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("centroid_method")
    (tmp_path / "configs" / "method").mkdir(parents=True)
    (tmp_path / "configs" / "method" / "centroid.yaml").write_text(YAML)
    monkeypatch.setitem(METHODS, "centroid", module.Centroid)
    return tmp_path / "configs"


def test_a_method_in_its_three_places_composes_validates_and_trains(centroid, tmp_path):
    cfg = compose(["method=centroid", "method.weight=0.1", *SMALL], config_dir=centroid)
    validate(cfg)
    assert type(cfg.method).__name__ == "CentroidConfig" and cfg.method.weight == 0.1
    summary = train(cfg, tmp_path / "run")
    assert summary["method"] == "centroid" and summary["steps"] == 6
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [3, 6] and all(0 <= r["target_acc"] <= 100 for r in rows)


def test_its_config_is_typed_and_checked_like_the_others(centroid):
    with pytest.raises(ConfigError, match=r"method\.weight must be >= 0, got -1"):
        validate(compose(["method=centroid", "method.weight=-1"], config_dir=centroid))
    with pytest.raises(Exception, match="wieght"):  # a typo is Hydra's error naming the key
        compose(["method=centroid", "method.wieght=1"], config_dir=centroid)
