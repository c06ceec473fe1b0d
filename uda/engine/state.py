"""A run's state on disk: whether to resume, the checkpoint a run writes (and restores), the config
changes a resume warns about, and the metrics rows a resumed run keeps.

A checkpoint (``checkpoints/last.pt``, written by ``uda.engine.checkpoint``) holds the networks, the
optimizers, the gradient scaler, every rank's random state, the step, the config, the counters of the
summary and the best evaluation so far. Learning rates, the GRL weight, the stage and the data order are
functions of the step, so nothing else is needed to continue exactly.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from uda.engine import checkpoint as ckpt
from uda.engine import dist
from uda.engine.summary import versions
from uda.io import write_text_atomic
from uda.schema import ConfigError, TrainConfig
from uda.schema.train import resume_problem

log = logging.getLogger("uda")


def config_dict(cfg: TrainConfig) -> dict[str, Any]:
    """The typed config as plain containers (enums as strings), as a checkpoint stores it."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.structured(cfg), enum_to_str=True)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out |= _flatten(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``key: old -> new`` for every setting that differs (``resume`` itself excluded)."""
    a, b = _flatten(old), _flatten(new)
    return [f"{k}: {a.get(k, '<unset>')} -> {b.get(k, '<unset>')}"
            for k in sorted(a.keys() | b.keys()) if k != "resume" and a.get(k) != b.get(k)]


def _numerics(n: dict[str, Any]) -> str:
    return f"{n.get('precision')}{' + channels_last' if n.get('channels_last') else ''}"


def resuming(resume: bool | str, ckpt_dir: Path) -> bool:
    """``resume`` (false | true | auto) against what ``ckpt_dir`` holds: continue it? ConfigError when the
    two disagree."""
    has_ckpt = dist.broadcast_object(ckpt.exists(ckpt_dir))
    problem = resume_problem(resume, has_ckpt, ckpt_dir)
    if problem:
        raise ConfigError(problem)
    if resume == "auto" and not has_ckpt:
        log.info("resume=auto: no checkpoint in %s, starting fresh", ckpt_dir)
    return has_ckpt and resume in (True, "auto")


def trim_metrics(path: Path, upto: int) -> None:
    """Keep only the evaluations a checkpoint at step ``upto`` has seen (resume rewrites the rest), in one rename:
    a run killed meanwhile keeps the whole file. A line cut short by a kill while it was appended is dropped."""
    if not path.is_file():
        return
    keep = [ln for ln in path.read_text().splitlines() if _row(ln) is not None and _row(ln)["step"] <= upto]
    write_text_atomic("".join(ln + "\n" for ln in keep), path)


def _row(line: str) -> dict[str, Any] | None:
    """One metrics.jsonl line as a dict, None for a blank or cut-short one."""
    try:
        row = json.loads(line) if line.strip() else None
    except ValueError:
        return None
    return row if isinstance(row, dict) and "step" in row else None


@dataclass
class Counters:
    """Wall time, time inside steps and images seen, over every session of a run (in the checkpoint)."""

    t_start: float = field(default_factory=time.perf_counter)  # this session's start
    wall_before: float = 0.0  # earlier sessions' wall time
    train_s: float = 0.0
    images: int = 0

    def wall_s(self) -> float:
        return self.wall_before + time.perf_counter() - self.t_start


class Checkpointer:
    """Writes ``last.pt`` (and ``step_N.pt``, ``best.pt``) on rank 0 with every rank's random state, and
    restores a run from the newest usable checkpoint."""

    def __init__(self, run_dir: Path, *, method: torch.nn.Module, optimizers: dict[str, torch.optim.Optimizer],
                 scaler: torch.amp.GradScaler, config: dict[str, Any], counters: Counters, best: dict[str, Any],
                 keep_every: int, numerics: dict[str, Any] | None = None):
        self.dir = run_dir / "checkpoints"
        self.last = self.dir / ckpt.LAST
        self.method, self.optimizers, self.scaler, self.config = method, optimizers, scaler, config
        self.counters, self.best, self.keep_every = counters, best, keep_every
        # precision and layout as trainer.*=auto resolved here (a resume may differ)
        self.numerics = numerics or {}
        self.saved: int | None = None  # step of the newest checkpoint on disk

    def snapshot(self, done: int, rng_ranks: list | None = None) -> dict[str, Any]:
        c = self.counters
        return {
            "step": done, "method": self.method.state_dict(),
            "optimizers": {n: o.state_dict() for n, o in self.optimizers.items()},
            "scaler": self.scaler.state_dict(), "rng": ckpt.rng_state(), "config": self.config,
            "numerics": self.numerics,
            "wall_s": c.wall_s(), "train_s": c.train_s, "images": c.images,
            "versions": versions(), "best": dict(self.best), "world_size": dist.world(),
            **({"rng_ranks": rng_ranks} if rng_ranks else {}),
        }

    def save(self, done: int) -> None:
        """Called on every rank (the random states are gathered); rank 0 writes."""
        rng_ranks = dist.gather_objects(ckpt.rng_state()) if dist.world() > 1 else None
        if dist.is_main():
            state = self.snapshot(done, rng_ranks)
            ckpt.save_atomic(state, self.last)
            if self.keep_every and done % self.keep_every == 0:
                ckpt.save_atomic(state, self.dir / f"step_{done:07d}.pt", keep_previous=False)
        self.saved = done

    def save_best(self, done: int) -> None:
        ckpt.save_atomic(self.snapshot(done), self.dir / "best.pt", keep_previous=False)

    def restore(self) -> dict[str, Any]:
        """Load the newest usable checkpoint into the method, optimizers, scaler, random state and counters;
        returns it (its ``step`` is where the run continues, its ``best`` the evaluation best.pt holds)."""
        if dist.is_main():
            ckpt.cleanup_temporaries(self.dir)
        state, used = ckpt.load_latest(self.dir)  # every rank reads it (a shared run directory)
        changed = config_changes(state.get("config", {}), self.config)
        if changed:
            log.warning("resuming with a config that differs from the checkpoint's: %s", "; ".join(changed))
        before = state.get("numerics")
        if before and before != self.numerics:
            log.warning("the checkpoint trained with %s; this session runs %s (trainer.precision and "
                        "trainer.channels_last resolve on this machine; set them to continue as before)",
                        _numerics(before), _numerics(self.numerics))
        try:
            self.method.load_state_dict(state["method"])
            for name, opt in self.optimizers.items():
                opt.load_state_dict(state["optimizers"][name])
        except (RuntimeError, KeyError, ValueError) as e:
            raise ckpt.CheckpointError(f"{used} does not fit this config ({str(e).strip().splitlines()[0][:300]}); "
                                       f"resume with the run's own settings") from e
        self.scaler.load_state_dict(state["scaler"])
        world, ranks = dist.world(), state.get("rng_ranks") or [state["rng"]]
        if len(ranks) != world:
            log.warning("the checkpoint was written by %d process(es), this run has %d: random streams restart",
                        len(ranks), world)
        ckpt.set_rng_state(ranks[dist.rank()] if len(ranks) == world else state["rng"])
        c = self.counters
        c.wall_before, c.train_s, c.images = state["wall_s"], state["train_s"], state["images"]
        self.saved = state["step"]
        log.info("resumed from %s at step %d", used, state["step"])
        return state
