"""``uda eval RUN_DIR [checkpoint=last|best|prev|PATH] [data=PAIR]``: re-evaluate a saved run.

The run's config is recomposed from its ``.hydra/overrides.yaml`` (plus ``data=`` to evaluate on
another pair with the same classes), the checkpoint's weights are loaded (verified, weights only),
and the result (test accuracies, or mIoU with per-class IoUs for segmentation pairs, and the
label-free selection scores) is printed and written as
``eval_<checkpoint>_<pair>.json`` in the run directory (a run directory that cannot be written only loses
the file: the result is printed, and a warning says where it could not be written).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uda.errors import ConfigError
from uda.io import write_durable


def run_config(run_dir: Path, data: str | None = None, overrides: list[str] | None = None):
    """A run's TrainConfig, composed again from its recorded overrides (+ ``data`` / ``overrides``), validated."""
    from omegaconf import OmegaConf

    from uda.compose import compose
    from uda.schema import validate

    run_dir = Path(run_dir)
    over_file = run_dir / ".hydra" / "overrides.yaml"
    if not over_file.is_file():
        raise ConfigError(f"{run_dir} is not a uda run directory (no .hydra/overrides.yaml)")
    run_overrides = [o for o in OmegaConf.to_container(OmegaConf.load(over_file))
                     if not o.startswith(("hydra.", "resume="))]
    extra = list(overrides or [])
    if data is not None:
        run_overrides = [o for o in run_overrides if not o.startswith("data=")]
        extra.insert(0, f"data={data}")
    cfg = compose(run_overrides + extra)
    validate(cfg)
    return cfg


@dataclass
class Evaluation:
    """What evaluating a run's checkpoints needs, built once: its config, the pair and the method."""
    cfg: Any
    device: Any
    source: Any
    target: Any
    info: Any
    method: Any
    prepare: Any
    precision: Any  # the autocast precision trainer.precision resolves to here (uda.engine.precision)


def prepare_eval(run_dir: Path, data: str | None = None, overrides: list[str] | None = None) -> Evaluation:
    """The run's config (recomposed), its pair on the device and a fresh method to load checkpoints into."""
    cfg = run_config(Path(run_dir), data, overrides)
    import torch

    from uda.data.pairs import Normalize, build_pair
    from uda.engine.precision import choose
    from uda.engine.runtime import resolve_device
    from uda.methods import get_method

    device = resolve_device(cfg.device)
    source, target, info = build_pair(cfg.data)
    method = get_method(cfg.method.name).from_config(cfg, info).to(device)
    # the run's precision and layout as resolved here (on its own machine: its recorded scores)
    choice = choose(cfg, device)
    if choice.channels_last:
        method = method.to(memory_format=torch.channels_last)
    prepare = Normalize(info.mean, info.std, device, choice.channels_last, crop=info.image_size)
    return Evaluation(cfg, device, source.to(device), target.to(device), info, method, prepare, choice.precision)


def evaluate_checkpoint(ev: Evaluation, path: Path) -> dict[str, Any]:
    """``evaluate_pair`` (test metrics and every label-free score) of the weights in ``path``; adds "step"."""
    import torch

    from uda.engine import checkpoint as ckpt
    from uda.engine.evaluation import evaluate_pair
    from uda.engine.runtime import autocast

    state = ckpt.load(path)
    trained_classes = state.get("config", {}).get("data", {}).get("num_classes")
    if trained_classes and trained_classes != ev.info.num_classes:
        raise ConfigError(f"the run was trained on {trained_classes} classes but data={ev.cfg.data.name} has "
                          f"{ev.info.num_classes}")
    ev.method.load_state_dict(state["method"])
    ev.method.eval()
    with torch.no_grad(), autocast(ev.device, ev.precision):
        scores = evaluate_pair(ev.method, ev.source, ev.target, ev.info, prepare=ev.prepare,
                               batch_size=ev.cfg.trainer.eval_batch_size, device=ev.device,
                               workers=ev.cfg.data.workers)
    return {"step": state["step"], **scores}


def run_eval(run_dir: Path, checkpoint: str = "last", data: str | None = None,
             overrides: list[str] | None = None) -> dict[str, Any]:
    run_dir = Path(run_dir)
    run_config(run_dir, data, overrides)  # a bad directory or key fails before any data is built
    path = Path(checkpoint) if checkpoint.endswith(".pt") else run_dir / "checkpoints" / f"{checkpoint}.pt"
    if not path.is_file():
        have = sorted(p.stem for p in (run_dir / "checkpoints").glob("*.pt"))
        raise ConfigError(f"no checkpoint {path}; this run has: {', '.join(have) or 'none'} (or give a .pt path)")
    ev = prepare_eval(run_dir, data, overrides)
    scores = evaluate_checkpoint(ev, path)
    result = {"run": str(run_dir), "checkpoint": str(path), "step": scores.pop("step"), "method": ev.cfg.method.name,
              "data": ev.cfg.data.name, **scores}
    out = run_dir / f"eval_{path.stem}_{ev.cfg.data.name}.json"
    try:  # the result is printed anyway; a read-only run directory only loses the file
        write_durable((json.dumps(result, indent=2) + "\n").encode(), out)
        result["written_to"] = str(out)
    except OSError as e:
        result["written_to"] = None
        result["not_written"] = f"could not write {out} ({e.strerror or e})"
    return result
