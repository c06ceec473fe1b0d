"""What ``uda train`` checks before Hydra writes anything into a run directory.

Every job of the command (one, or each of a ``-m`` sweep's) is composed and validated, its data root must
exist, its run directory must be writable, and its ``resume`` setting must agree with what the directory
holds. A command that fails any of these exits with one line and status 2, and leaves every run directory
as it was: Hydra writes ``.hydra/`` and ``train.log`` only for a command that passed.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uda.compose import compose_job, parse_overrides
from uda.schema import ConfigError, TrainConfig, validate
from uda.schema.train import resume_problem

# Hydra flags after which nothing is trained or written: composition is checked (so --cfg
# job shows what a recipe composes to, valid or not), the settings and the directories are
# not
DRY = ("cfg", "info", "hydra_help", "shell_completion")


@dataclass
class Job:
    overrides: list[str]
    cfg: TrainConfig
    run_dir: Path
    finished: bool = False  # a sweep re-run skips it (summary.json with the same settings)


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Hydra's own command line (overrides and flags such as ``-m``, ``--cfg job``); ConfigError if malformed."""
    from hydra._internal.utils import get_args_parser

    parser = get_args_parser()

    def error(message: str):
        raise ConfigError(f"uda train: {message}; see uda train --help")

    parser.error = error
    return parser.parse_args(argv)


def job_overrides(overrides: list[str], multirun: bool) -> list[list[str]]:
    """The overrides of each job, in Hydra's order (``hydra.job.num``): a sweep expanded by Hydra's basic
    sweeper, Hydra's own overrides (``hydra.*``, ``hydra/launcher=...``) given to every job."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.errors import HydraException

    parsed = parse_overrides(overrides)
    own = [o for o, p in zip(overrides, parsed) if p.key_or_group.startswith(("hydra.", "hydra/"))]
    task = [(o, p) for o, p in zip(overrides, parsed) if o not in own]
    sweeps = [o for o, p in task if p.is_sweep_override()]
    if not multirun:
        if sweeps:
            raise ConfigError(f"{sweeps[0]} is a sweep: add -m to run one job per value (uda train -m {sweeps[0]}), "
                              f"or write a list as key=[a,b]")
        return [overrides]
    try:
        jobs = BasicSweeper.split_arguments([p for _, p in task], None)[0]
    except HydraException as e:
        raise ConfigError(f"{' '.join(sweeps)}: {e}") from None
    return [[*job, *own] for job in jobs]


def preflight(args: argparse.Namespace) -> list[Job]:
    """Every job composed, validated and checked against its run directory; ConfigError (one line) otherwise."""
    dry = any(getattr(args, flag, None) for flag in DRY)
    jobs = []
    for num, overrides in enumerate(job_overrides(list(args.overrides), bool(args.multirun))):
        cfg, paths = compose_job(overrides, config_dir=args.config_dir, config_name=args.config_name or "train",
                                 job_num=num)
        if not dry:
            validate(cfg)
        run_dir = Path(paths["sweep_dir"]) / paths["sweep_subdir"] if args.multirun else Path(paths["run_dir"])
        job = Job(overrides, cfg, run_dir)
        if not dry:
            check_job(job, multirun=bool(args.multirun), output_subdir=paths["output_subdir"])
        jobs.append(job)
    return jobs


def check_job(job: Job, *, multirun: bool, output_subdir: str | None) -> None:
    """The data root exists, the run directory is writable, ``resume`` agrees with what it holds."""
    cfg = job.cfg
    from uda.data.catalog import DOMAINS
    from uda.data.files import checked_root

    for role in (cfg.data.source, cfg.data.target):
        if role.name in DOMAINS and DOMAINS[role.name].needs_root:
            checked_root(cfg.data.root, role.name)
    check_writable(job.run_dir, [d for d in (output_subdir, "checkpoints") if d])
    if multirun and cfg.resume is not True:
        job.finished = finished(job.run_dir, cfg) is not None
        if job.finished:
            return
    ckpt_dir = job.run_dir / "checkpoints"
    has_ckpt = False
    if ckpt_dir.is_dir():  # (torch is imported only where there may be a checkpoint)
        from uda.engine import checkpoint as ckpt

        has_ckpt = ckpt.exists(ckpt_dir)
    problem = resume_problem(cfg.resume, has_ckpt, ckpt_dir)
    if problem:
        raise ConfigError(problem)


def check_writable(run_dir: Path, subdirs: list[str]) -> None:
    """ConfigError unless ``run_dir`` (and the parts of it that exist) can be written, tried by creating and
    removing a probe: an existing directory and its ``subdirs``, or the nearest ancestor that exists."""
    where = [run_dir, *(run_dir / s for s in subdirs if (run_dir / s).is_dir())] if run_dir.exists() else []
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"the run directory {run_dir} is a file; choose another with hydra.run.dir=... "
                          f"(hydra.sweep.dir=... for -m)")
    if not where:
        ancestor = run_dir.absolute()
        while not ancestor.exists():
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise ConfigError(f"cannot create the run directory {run_dir}: {ancestor} is a file; choose another "
                              f"with hydra.run.dir=... (hydra.sweep.dir=... for -m)")
        where = [ancestor]
    for d in where:
        try:
            os.rmdir(tempfile.mkdtemp(prefix=".uda_probe", dir=d))
        except OSError as e:
            verb = "write the run directory" if run_dir.exists() else "create the run directory"
            raise ConfigError(f"cannot {verb} {run_dir}: {d} is not writable ({e.strerror or e}); choose another "
                              f"with hydra.run.dir=... (hydra.sweep.dir=... for -m)") from None


def finished(run_dir: Path, cfg: TrainConfig) -> dict[str, Any] | None:
    """The summary of a finished run in ``run_dir`` with this config (a sweep re-run skips it), else None;
    ConfigError if it finished with other settings."""
    done = run_dir / "summary.json"
    if not done.is_file():
        return None
    from uda.engine.state import config_changes, config_dict

    last = run_dir / "checkpoints" / "last.pt"
    if last.is_file():
        from uda.engine import checkpoint as ckpt

        state = ckpt.load(last)
        changed = config_changes(state.get("config", {}), config_dict(cfg))
    else:  # checkpoints deleted: the summary alone marks the run as done
        changed = []
    if changed:
        raise ConfigError(f"{run_dir} holds a finished run with other settings ({'; '.join(changed[:5])}); "
                          f"choose another hydra.sweep.dir")
    return json.loads(done.read_text())
