"""Hydra composition: the config groups shipped in ``uda/configs/`` (so that a wheel runs), the typed
schemas registered in Hydra's ConfigStore, and ``compose`` for code that builds a config outside the CLI.

The schemas come from ``uda.config`` (data, backbone, optimizer, trainer) and from each method's own
module (``METHODS[name].Config``), so adding a method registers its schema with no line here.
"""
from __future__ import annotations

from pathlib import Path

from uda.config import BACKBONES, ConfigError, DataConfig, OptimizerConfig, TrainConfig, TrainerConfig
from uda.config.data import benchmark_pairs

CONFIG_DIR = str(Path(__file__).resolve().parent / "configs")


def register_configs() -> None:
    """Put every schema in Hydra's ConfigStore (the YAML files extend them by name)."""
    from hydra.core.config_store import ConfigStore

    from uda.methods import METHODS

    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    for name, cls in METHODS.items():
        cs.store(group="schema/method", name=name, node=cls.Config)
    for name, schema in BACKBONES.items():
        cs.store(group="schema/backbone", name=name, node=schema)
    cs.store(group="schema/data", name="data", node=DataConfig)
    for name, pair in benchmark_pairs().items():  # data=officehome_art_clipart, data=domainnet_real_sketch, ...
        cs.store(group="data", name=name, node=pair)
    cs.store(group="schema/optimizer", name="optimizer", node=OptimizerConfig)
    cs.store(group="schema/trainer", name="trainer", node=TrainerConfig)


def check_overrides(overrides: list[str]) -> None:
    """ConfigError for an override that names no key ('=', '+=', '~'), which Hydra 1.3 meets with an
    assertion (a traceback); every other malformed override is Hydra's own one-line error."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    candidates = [o for o in overrides if not o.startswith("-") and ("=" in o or o.startswith("~"))]
    try:
        parsed = OverridesParser.create().parse_overrides(candidates)
    except OverrideParseException:
        return
    empty = [o for o, p in zip(candidates, parsed) if not p.key_or_group]
    if empty:
        raise ConfigError(f"the override {empty[0]!r} names no key; write key=value, e.g. trainer.max_steps=100")


def compose(overrides: list[str] = (), config_dir: str | None = None) -> TrainConfig:
    """The typed config ``uda train <overrides>`` would run (not validated; ``uda.config.validate`` does
    that). ``config_dir``: another directory of config groups searched after the shipped ones."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    check_overrides(list(overrides))
    register_configs()
    extra = [f"hydra.searchpath=[file://{Path(config_dir).resolve()}]"] if config_dir else []
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return OmegaConf.to_object(hydra_compose("train", overrides=[*overrides, *extra]))
