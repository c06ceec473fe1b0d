"""Config composition and validation: every mistake is one clear message, never a traceback."""
from pathlib import Path

import pytest

from uda.cli import CONFIG_DIR, main
from uda.config import ConfigError, DANNConfig, Device, Precision, SourceOnlyConfig, validate

from conftest import make_cfg, run_cli


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
    from uda.registry import METHODS, get_method

    get_method("dann")
    yaml_names = {p.stem for p in (Path(CONFIG_DIR) / "method").glob("*.yaml")}
    assert yaml_names == set(METHODS)
    with pytest.raises(ConfigError, match="valid methods: adaptsegnet, adda, cycada, cyclegan, dann, dsn, lsd, road, source_only"):
        get_method("foo")


@pytest.mark.parametrize("override, needles", [
    ("trainer.max_stpes=3", ["max_stpes", "TrainerConfig"]),
    ("method=foo", ["method/foo", "dann", "source_only"]),
    ("trainer.max_steps=abc", ["trainer.max_steps", "abc"]),
    ("trainer.precision=fp8", ["fp8", "fp32, bf16, fp16"]),
    ("device=tpu", ["tpu", "auto, cpu, cuda"]),
    ("method.foo=1", ["foo", "DANNConfig"]),
])
def test_cli_config_errors_are_one_clear_message(tmp_path, override, needles):
    res = run_cli("train", override, f"hydra.run.dir={tmp_path}", cwd=tmp_path, timeout=60)
    assert res.returncode != 0
    for needle in needles:
        assert needle in res.stderr
    assert "Traceback" not in res.stderr


def test_cli_semantic_error_exits_2_with_one_line(tmp_path):
    res = run_cli("train", "trainer.batch_size=-4", f"hydra.run.dir={tmp_path}", cwd=tmp_path, timeout=60)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1] == "uda: error: trainer.batch_size must be > 0, got -4"
    assert "Traceback" not in res.stderr


def test_cli_help_lists_subcommands(capsys):
    assert main(["--help"]) == 0
    assert "train" in capsys.readouterr().out
    assert main(["frobnicate"]) == 2
    assert "valid commands: train" in capsys.readouterr().err


def test_cli_help_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys; from uda.cli import main; main(['--help']); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False"
