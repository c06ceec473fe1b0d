"""Hydra composition: the config groups shipped in ``uda/configs/`` (so that a wheel runs), the typed
schemas registered in Hydra's ConfigStore, ``compose`` for code that builds a config outside the CLI, and
``explain``, which turns every error Hydra or OmegaConf raises for an override into one line that names the
override, a close match and the valid choices.

The schemas come from ``uda.schema`` (data, backbone, optimizer, trainer) and from each method's own
module (``METHODS[name].Config``), so adding a method registers its schema with no line here.
"""
from __future__ import annotations

import dataclasses
import difflib
import re
from pathlib import Path
from typing import Any

from uda.schema import BACKBONES, ConfigError, DataConfig, OptimizerConfig, TrainConfig, TrainerConfig
from uda.schema.data import benchmark_pairs

CONFIG_DIR = str(Path(__file__).resolve().parent / "configs")
GRAMMAR = "https://hydra.cc/docs/advanced/override_grammar/basic/"


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


def parse_overrides(overrides: list[str]) -> list:
    """Hydra's parsed overrides; ConfigError naming the first malformed one, or one that names no key
    ('=3', which Hydra 1.3 meets with an assertion)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser, parsed = OverridesParser.create(), []
    for o in overrides:
        try:
            p = parser.parse_overrides([o])[0]
        except OverrideParseException as e:
            why = str(e).strip().splitlines()[0]
            raise ConfigError(f"malformed override {o!r} ({why}); write key=value, a sweep as key=a,b "
                              f"(quote values with spaces or brackets; grammar: {GRAMMAR})") from None
        if not p.key_or_group:
            raise ConfigError(f"the override {o!r} names no key; write key=value, e.g. trainer.max_steps=100")
        parsed.append(p)
    return parsed


def check_overrides(overrides: list[str]) -> None:
    """ConfigError for a malformed override or one that names no key (flags like ``-m`` are skipped)."""
    parse_overrides([o for o in overrides if not o.startswith("-") and ("=" in o or o.startswith("~"))])


def compose(overrides: list[str] = (), config_dir: str | None = None) -> TrainConfig:
    """The typed config ``uda train <overrides>`` would run (not validated; ``uda.schema.validate`` does
    that). ``config_dir``: another directory of config groups searched after the shipped ones. Every
    composition error is a one-line ConfigError (``explain``)."""
    return compose_job(list(overrides), config_dir=config_dir)[0]


def compose_job(overrides: list[str], *, config_dir: str | None = None, config_name: str = "train",
                job_num: int | None = None) -> tuple[TrainConfig, dict[str, Any]]:
    """(typed config, the directories Hydra will use) of one job. ``job_num``: compose with Hydra's own node
    (``hydra.job.num`` set to it) and resolve ``run_dir``, ``sweep_dir``, ``sweep_subdir``, ``output_subdir``."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf, open_dict

    check_overrides(overrides)
    register_configs()
    extra = [f"hydra.searchpath=[file://{Path(config_dir).resolve()}]"] if config_dir else []
    with_hydra = job_num is not None
    if with_hydra:
        extra.append(f"hydra.job.num={job_num}")
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        try:
            cfg = hydra_compose(config_name, overrides=[*overrides, *extra], return_hydra_config=with_hydra)
        except Exception as e:  # noqa: BLE001 -- Hydra and OmegaConf raise many types; all become one line
            raise ConfigError(explain(e, overrides)) from None
        paths = {}
        if with_hydra:
            h = cfg.hydra
            paths = {"run_dir": str(h.run.dir), "sweep_dir": str(h.sweep.dir), "sweep_subdir": str(h.sweep.subdir),
                     "output_subdir": h.output_subdir}
            with open_dict(cfg):
                del cfg["hydra"]
        unknown = unknown_keys(cfg)
        if unknown:
            key, valid = unknown[0]
            added = _added(key, overrides)
            raise ConfigError(
                f"unknown key {added}{key}{_did_you_mean(key.rsplit('.', 1)[-1], valid, key.rpartition('.')[0])}"
                f": a + adds no setting the schema lacks; valid keys{_of(key)}: {', '.join(valid)}"
            )
        try:
            return OmegaConf.to_object(cfg), paths
        except Exception as e:  # noqa: BLE001 -- e.g. a required key left at ??? (data.source.path)
            raise ConfigError(_first_line(e)) from None


def recipe_without_method(name: str) -> str | None:
    """The shipped recipe ``experiment/<name>.yaml`` less its method (its ``override /method...`` defaults and
    its ``method:`` block), as YAML text, for a run of another method on the recipe's pair and budget (uda
    tune's source-only candidate); None where the recipe sets nothing of the method or is not a shipped one."""
    import yaml

    path = Path(CONFIG_DIR) / "experiment" / f"{name}.yaml"
    if not path.is_file():
        return None
    text = path.read_text()
    node = yaml.safe_load(text) or {}

    def of_method(entry: Any) -> bool:  # "override /method: dann", "override /method/host: sdat"
        keys = entry if isinstance(entry, dict) else {entry: None}
        return any(str(k).removeprefix("override").strip().lstrip("/").split("/")[0] == "method" for k in keys)

    defaults = node.get("defaults", [])
    kept = [d for d in defaults if not of_method(d)]
    if "method" not in node and len(kept) == len(defaults):
        return None
    node = {k: v for k, v in node.items() if k != "method"}
    if kept:
        node["defaults"] = kept
    else:
        node.pop("defaults", None)
    package = [line for line in text.splitlines() if line.startswith("# @package")]
    return "\n".join([*package[:1], f"# uda tune: {name}.yaml less its method", yaml.safe_dump(node, sort_keys=False)])


# ---------- errors as one line
def unknown_keys(cfg, prefix: str = "") -> list[tuple[str, list[str]]]:
    """(key, the schema's keys there) for every key of a typed node that its dataclass lacks: what ``+key=v``
    (or ``++``) adds past the schema, which Hydra accepts and uda refuses."""
    from omegaconf import DictConfig, OmegaConf

    out = []
    schema = OmegaConf.get_type(cfg)
    names = [f.name for f in dataclasses.fields(schema)] if dataclasses.is_dataclass(schema) else None
    for key in cfg.keys():
        if names is not None and key not in names:
            out.append((f"{prefix}{key}", names))
            continue
        child = cfg._get_node(key)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            out += unknown_keys(child, f"{prefix}{key}.")
    return out


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _of(key: str) -> str:
    parent = key.rpartition(".")[0]
    return f" of {parent}" if parent else ""


def _did_you_mean(name: str, valid: list[str], parent: str = "") -> str:
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    if not close:
        return ""
    return f" (did you mean {parent + '.' if parent else ''}{close[0]}?)"


def _added(key: str, overrides: list[str]) -> str:
    """The ``+`` or ``++`` the override of ``key`` was written with."""
    written = next((o.split("=")[0] for o in overrides if o.split("=")[0].lstrip("+") == key), key)
    return written[: len(written) - len(written.lstrip("+"))]


def _override_for(key: str, overrides: list[str]) -> str:
    """The override that sets ``key`` (as written), else ``key``."""
    for o in overrides:
        if o.split("=", 1)[0].lstrip("+~") == key:
            return o
    return key


def _group_options(group: str) -> list[str]:
    from hydra.core.global_hydra import GlobalHydra

    try:
        return sorted(GlobalHydra.instance().config_loader().get_group_options(group))
    except Exception:  # noqa: BLE001 -- no such group
        return []


def _groups() -> list[str]:
    return sorted(p.name for p in Path(CONFIG_DIR).iterdir() if p.is_dir() and p.name != "hydra")


def _field_type(schema: Any, name: str) -> str | None:
    if dataclasses.is_dataclass(schema):
        for f in dataclasses.fields(schema):
            if f.name == name:
                return f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    return None


def explain(e: BaseException, overrides: list[str]) -> str:
    """One line for a composition error: which override, what is wrong, a close match and the valid choices."""
    from hydra.errors import MissingConfigException

    cause, text = e.__cause__, str(e).strip()
    if isinstance(e, MissingConfigException):
        return _missing_option(text, getattr(e, "options", None), overrides)
    key = getattr(cause, "full_key", None)
    if key and type(cause).__name__ in ("ConfigAttributeError", "ConfigKeyError"):
        name, parent = key.rsplit(".", 1)[-1], key.rpartition(".")[0]
        schema = getattr(cause, "object_type", None)
        valid = [f.name for f in dataclasses.fields(schema)] if dataclasses.is_dataclass(schema) else []
        return (f"unknown key {key}{_did_you_mean(name, valid, parent)}"
                + (f"; valid keys{_of(key)}: {', '.join(valid)}" if valid else ""))
    if m := re.search(r"In '([^']+)': Config(?:Key|Attribute)Error raised while composing config:\s*"
                      r"Key '([^']+)' not in '([^']+)'", text):  # a config file (a recipe) sets a key the schema lacks
        where, name, schema = m.groups()
        full = re.search(r"full_key: (\S+)", text)
        key = full.group(1) if full else name
        valid = _schema_fields(schema)
        close = _did_you_mean(name, valid, key.rpartition(".")[0])
        return (f"{where}.yaml sets {key}, which {schema} has no key for{close}"
                + (f"; valid keys{_of(key)}: {', '.join(valid)}" if valid else ""))
    if key and type(cause).__name__ == "ValidationError":
        return _bad_value(key, str(cause), getattr(cause, "object_type", None), overrides)
    if m := re.search(r"Could not override '([^']+)'\. No match in the defaults list", text):
        group = m.group(1)
        opts = _group_options(group)
        return (f"{_override_for(group, overrides)}: {group} is not chosen by default, so it is added with a +: "
                f"+{_override_for(group, overrides)}" + (f" (valid: {', '.join(opts)})" if opts else ""))
    if m := re.search(r"Multiple values for (\S+)\.", text):
        group = m.group(1)
        return f"{_override_for(group, overrides)}: {group} is already chosen; set it without the +"
    if m := re.search(r"An item is already at '([^']+)'", text):
        key = m.group(1)
        return f"{_override_for(key, overrides)}: {key} already exists; set it without the +"
    if m := re.search(r"Could not (?:delete|override) '([^']+)'", text):
        return f"{_override_for(m.group(1), overrides)}: {_first_line(cause or e)}"
    return _first_line(e)


def _schema_fields(class_name: str) -> list[str]:
    """The keys of the registered schema named ``class_name`` ("SourceOnlyConfig"), [] if none is."""
    from uda.methods import METHODS

    schemas = [*(cls.Config for cls in METHODS.values()), *BACKBONES.values(), DataConfig, OptimizerConfig,
               TrainerConfig]
    return next(([f.name for f in dataclasses.fields(s)] for s in schemas if s.__name__ == class_name), [])


def _missing_option(text: str, options: list[str] | None, overrides: list[str]) -> str:
    """``method=foo``: an option (or a group) that does not exist."""
    m = re.search(r"Could not (?:find|load) '([^']+)'", text)
    if not m or "/" not in m.group(1):
        return text.splitlines()[0]
    group, _, name = m.group(1).rpartition("/")
    opts = sorted(options) if options else _group_options(group)
    if not opts:
        return (
            f"unknown config group {group!r} in {_override_for(group, overrides)}; valid groups: {', '.join(_groups())}"
        )
    return f"unknown {group}={name}{_did_you_mean(name, opts)}; valid {group} choices: {', '.join(opts)}"


def _bad_value(key: str, why: str, schema: Any, overrides: list[str]) -> str:
    """``trainer.max_steps=abc``, ``trainer.precision=fp8``: a value of the wrong type or not among an enum's."""
    written = _override_for(key, overrides)
    if m := re.search(r"expected one of \[([^\]]*)\]", why):
        return f"{written} is not a valid {key}; valid: {m.group(1)}"
    kind = _field_type(schema, key.rsplit(".", 1)[-1])
    got = written.split("=", 1)[1] if "=" in written else "?"
    return f"{written}: {key} takes {('a value of type ' + kind) if kind else 'another type'}, not {got!r}"
