"""The ``uda`` command: subcommands that hand their overrides to Hydra.

``uda train`` checks the whole command first (``uda.preflight``), so a rejected command exits 2 with one line
before Hydra writes anything; ``uda --help`` and ``uda train --help`` import no torch.
"""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

USAGE = """usage: uda <command> [hydra overrides...]

commands:
  train     train a method on a domain pair, e.g.
              uda train                                   (DANN on MNIST -> MNIST-M)
              uda train method=source_only seed=1 trainer.max_steps=3000
              uda train -m method=source_only,dann seed=0,1,2   (a Hydra sweep)
              uda train resume=true hydra.run.dir=outputs/<date>/<time>
            `uda train --help` lists the config groups and every setting.
  eval      re-evaluate a saved run on its pair's test splits (or another pair with the same classes):
              uda eval RUN_DIR [checkpoint=last|best|prev|PATH.pt] [data=PAIR]
  data      what data is present and where missing files go:
              uda data list [--root DIR] | uda data verify NAME | uda data prepare NAME
  report    tables over every run under the directories (sweeps included): target accuracy mean ± std
            [95% CI] over seeds for the last checkpoint, each label-free criterion and the oracle, a
            paired test against source-only, each criterion's regret and rank correlation, and the
            configuration each criterion chooses across the sweep; writes report.md, report.csv,
            criteria.csv, selection.csv and two PNGs per pair:
              uda report DIR [DIR...] [--out DIR]
            with --record NAME: write results/NAME.json instead, a row uda repro can re-run
  tune      choose a method's hyperparameters without target labels: an Optuna study over its search space,
            judged by a label-free criterion, source-only always a candidate (`uda tune --help`):
              uda tune method=dann trials=8 hydra.sweep.dir=tunes/dann   then   uda report tunes/dann
  repro     re-run a recorded row and compare, seed by seed (exit 0 reproduced, 1 not):
              uda repro --list | uda repro NAME [--seeds 0,1,2] [--out DIR]

config groups: method, data, backbone, optimizer, trainer, experiment (uda/configs/ in the package)
"""

COMMANDS = ("train", "eval", "report", "repro", "data", "tune")


def _check_launcher(overrides: list[str]) -> None:
    """A SLURM/submitit launcher without its optional package: say how to install it."""
    import importlib.util

    for o in overrides:
        key, _, value = o.partition("=")
        if key.lstrip("+") == "hydra/launcher" and (value == "slurm" or value.startswith("submitit")):
            try:
                found = importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is not None
            except ModuleNotFoundError:  # no hydra_plugins namespace at all
                found = False
            if not found:
                print(f"uda: error: {o} needs hydra-submitit-launcher: pip install -e \".[slurm]\"", file=sys.stderr)
                sys.exit(2)


def _train(argv: list[str]) -> int:
    """Check the whole command first (``uda.preflight``): a rejected one exits 2 before Hydra writes anything."""
    _check_launcher(argv)
    from uda.preflight import parse_args, preflight
    from uda.schema import UserError

    try:
        args = parse_args(argv)
        if args.help:
            from uda.train_help import train_help

            print(train_help())
            return 0
        if not (args.hydra_help or args.shell_completion or args.info):
            with _transient("uda train: loading torch and checking the command ..."):
                preflight(args)
    except UserError as e:
        print(f"uda: error: {e}", file=sys.stderr)
        return 2
    import hydra
    from omegaconf import DictConfig

    from uda.compose import CONFIG_DIR, register_configs

    register_configs()

    @hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
    def task(cfg: DictConfig) -> float:
        return run_train(cfg)

    scratch = None
    if int(os.environ.get("RANK", "0")) > 0:  # torchrun: rank 0 owns the run directory and its logs
        argv = [*argv, "hydra.output_subdir=null", "hydra/job_logging=stdout"]
        if not any(o.split("=")[0].lstrip("+") == "hydra.run.dir" for o in argv):
            import tempfile

            scratch = tempfile.mkdtemp(prefix="uda_rank")
            argv.append(f"hydra.run.dir={scratch}")
    sys.argv = ["uda train", *argv]
    try:
        task()
    finally:
        if scratch:
            import shutil

            shutil.rmtree(scratch, ignore_errors=True)
    return 0


@contextlib.contextmanager
def _transient(text: str):
    """A line on a terminal while ``text`` is true (the first import of torch can take a minute on a cold
    disk), erased after: logs and pipes never see it."""
    tty = sys.stderr.isatty()
    if tty:
        sys.stderr.write(text)
        sys.stderr.flush()
    try:
        yield
    finally:
        if tty:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def announce(conf, run_dir: Path) -> None:
    """The run's first lines: what runs, where its data is (and what first use prepares), where it writes."""
    import logging

    from uda.data.catalog import DOMAINS
    from uda.data.files import data_root

    log = logging.getLogger("uda")
    tr, d = conf.trainer, conf.data
    every = tr.eval_interval()
    lowered = (f" (trainer.eval_every={tr.eval_every} lowered so that it is evaluated at least "
               f"trainer.min_evals={tr.min_evals} times)" if every < tr.eval_every else "")
    log.info("%s on %s (%s -> %s), backbone %s, %d steps evaluated every %d%s, seed %d", conf.method.name, d.name,
             d.source.name, d.target.name, conf.backbone.name, tr.max_steps, every, lowered, conf.seed)
    if any(DOMAINS[n].needs_root for n in (d.source.name, d.target.name) if n in DOMAINS):
        root = data_root(d.root)
        states = []
        for name in dict.fromkeys((d.source.name, d.target.name)):
            dom = DOMAINS.get(name)
            if dom is not None and dom.listed:
                state, where = dom.status(root)
                states.append(f"{name} present ({where})" if state == "present" else
                              f"{name} missing: {dom.first_use or 'put its files in place (uda data list)'}")
        log.info("data root %s%s; %s", root, "" if root.exists() else " (created on first use)", "; ".join(states))
    log.info("run directory: %s", run_dir)


def run_train(cfg) -> float:
    """Hydra task: DictConfig -> typed TrainConfig -> the loop. User errors exit with one line."""
    import logging

    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from uda.preflight import finished
    from uda.schema import UserError, validate

    try:
        try:
            conf = OmegaConf.to_object(cfg)
        except OmegaConfBaseException as e:  # e.g. a required key left at ??? (data.source.path)
            print(f"uda: error: {str(e).strip().splitlines()[0]}", file=sys.stderr)
            sys.exit(2)
        validate(conf)
        from hydra.types import RunMode

        hc = HydraConfig.get()
        run_dir = Path(hc.runtime.output_dir)
        if int(os.environ.get("RANK", "0")) == 0:
            announce(conf, run_dir)
        from uda.engine.loop import train  # the heavy imports start here

        summary, trained = None, False
        if hc.mode == RunMode.MULTIRUN and conf.resume is not True:  # a sweep re-run skips finished runs
            summary = finished(run_dir, conf)
            if summary is not None:
                logging.getLogger("uda").info("already finished (summary.json): %s", run_dir)
        if summary is None:
            summary, trained = train(conf, run_dir), True
    except UserError as e:
        # exit: 2 bad input, 3 non-finite losses, 128+signal after a requested stop (checkpoint kept)
        code = getattr(e, "exit_code", 2)
        print(f"uda: {e}" if code >= 128 else f"uda: error: {e}", file=sys.stderr)
        sys.exit(code)
    from uda.engine import dist

    metric = "miou" if "target_miou" in summary else "acc"  # segmentation pairs report mIoU
    if not dist.is_main():
        dist.shutdown()
        return summary[f"target_{metric}"]
    dist.shutdown()
    if trained:
        logging.getLogger("uda").info("summary written to %s", run_dir / "summary.json")
    print(f"{summary['method']} {summary['data']} seed={summary['seed']} steps={summary['steps']}: "
          f"target_{metric}={summary[f'target_{metric}']:.2f}% source_{metric}={summary[f'source_{metric}']:.2f}% "
          f"({summary['wall_s']:.0f} s, {summary['images_per_s']:.0f} img/s) -> {run_dir}", flush=True)
    return summary[f"target_{metric}"]


def _eval(args: list[str]) -> int:
    if not args or args[0].startswith("-"):
        print("usage: uda eval RUN_DIR [checkpoint=last|best|prev|PATH.pt] [data=PAIR] [other overrides]",
              file=sys.stderr)
        return 2
    import json

    from uda.schema import UserError

    opts = {"checkpoint": "last", "data": None}
    overrides = []
    for a in args[1:]:
        key, _, value = a.partition("=")
        if key in opts and value:
            opts[key] = value
        else:
            overrides.append(a)
    try:
        from uda.eval_run import run_eval

        result = run_eval(Path(args[0]), opts["checkpoint"], opts["data"], overrides)
    except UserError as e:
        print(f"uda: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # Hydra/OmegaConf errors in the given overrides
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        if isinstance(e, (HydraException, OmegaConfBaseException)):
            print(f"uda: error: {str(e).strip().splitlines()[0]}", file=sys.stderr)
            return 2
        raise
    print(json.dumps(result, indent=2), flush=True)
    if result.get("not_written"):
        print(f"uda: warning: {result['not_written']}; the result is printed above", file=sys.stderr)
    return 0


def _data(args: list[str]) -> int:
    import argparse

    from uda.data.catalog import DOMAINS, LISTED, listed

    parser = argparse.ArgumentParser(prog="uda data", description="datasets: present, missing, checksums")
    parser.add_argument("action", choices=["list", "verify", "prepare"])
    parser.add_argument("name", nargs="?", help=f"domain (verify, prepare): {', '.join(LISTED)}")
    parser.add_argument("--root", default="", help="data root (default: $UDA_DATA or ~/.cache/uda)")
    ns = parser.parse_args(args)
    from uda.data.files import data_root
    from uda.schema import UserError

    root = data_root(ns.root)
    try:
        if ns.action == "list":
            print(f"data root: {root}")
            width = max(map(len, LISTED))
            for name in LISTED:
                state, detail = DOMAINS[name].status(root)
                print(f"  {name:{width}s} {state:8s} {detail}")
                print(f"  {'':{width}s} {'':8s} {DOMAINS[name].notes}")
            return 0
        if not ns.name:
            parser.error(f"{ns.action} needs a domain name: {', '.join(LISTED)}")
        domain = listed(ns.name)
        print((domain.verify if ns.action == "verify" else domain.prepare)(root))
        return 0
    except UserError as e:
        print(f"uda: error: {e}", file=sys.stderr)
        return 2


def _report(args: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="uda report", description="tables and figures over runs and sweeps")
    parser.add_argument("dirs", nargs="+", type=Path, help="run or sweep directories (searched recursively)")
    parser.add_argument("--out", type=Path, default=None, help="where report.md/.csv/.png go (default: first DIR)")
    parser.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    parser.add_argument("--record", metavar="NAME", help="write the runs (one command, a run per seed) as the "
                        "row RESULTS/NAME.json that `uda repro NAME` re-runs; no report")
    parser.add_argument("--results", type=Path, default=Path("results"), help="where rows go (default: results)")
    parser.add_argument("--note", default="", help="--record: a line kept with the row")
    ns = parser.parse_args(args)
    from uda.schema import UserError

    try:
        if ns.record:
            from uda.results import record

            print(f"wrote {record(ns.dirs, ns.record, ns.results, ns.note)}")
            return 0
        from uda.report import report

        res = report(ns.dirs, ns.out, figures=not ns.no_figures)
    except (FileNotFoundError, UserError) as e:
        print(f"uda: error: {e}", file=sys.stderr)
        return 2
    files = [res[k] for k in ("markdown", "csv", "criteria_csv", "selection_csv")] + res["figures"]
    print("wrote " + ", ".join(map(str, files)))
    return 0


def _repro(args: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="uda repro", description="re-run a recorded row and compare")
    parser.add_argument("name", nargs="?", help="a row of RESULTS (uda repro --list), or a row file NAME.json")
    parser.add_argument("--list", action="store_true", help="the rows, their seeds, means and cost")
    parser.add_argument("--seeds", default="", help="e.g. 0 or 0,1,2 (default: the recorded seeds)")
    parser.add_argument("--results", type=Path, default=Path("results"), help="where rows are (default: results)")
    parser.add_argument("--out", type=Path, default=Path("outputs/repro"),
                        help="where the runs go, NAME/seed_S (default: outputs/repro); a re-run skips finished seeds")
    ns = parser.parse_args(args)
    from uda.results import listing, repro
    from uda.schema import UserError

    try:
        if ns.list:
            print(listing(ns.results))
            return 0
        if not ns.name:
            parser.error("a row NAME, or --list")
        try:
            seeds = [int(s) for s in ns.seeds.split(",") if s.strip()]
        except ValueError:
            parser.error(f"--seeds takes integers separated by commas, e.g. 0,1,2; got {ns.seeds!r}")
        return repro(ns.name, seeds, ns.results, ns.out)
    except UserError as e:
        print(f"uda: error: {e}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(sys.argv[1:] if argv is None else list(argv))
    except BrokenPipeError:  # `uda data list | head`: the reader has gone, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:  # Ctrl-C before training installs its handler (loading data), or a second one
        # during training ("stop now"): checkpoints are replaced by a rename, so the last one written is whole
        print("uda: interrupted; checkpoints written before it are kept", file=sys.stderr)
        return 130  # 128 + SIGINT, as a stop after the first Ctrl-C: `uda tune` reads it as interrupted


def _main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    if argv[0] in ("-V", "--version"):
        from uda import __version__

        print(f"uda {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command == "train":
        return _train(rest)
    if command == "eval":
        return _eval(rest)
    if command == "report":
        return _report(rest)
    if command == "data":
        return _data(rest)
    if command == "repro":
        return _repro(rest)
    if command == "tune":
        from uda.tune import main as tune

        return tune(rest)
    print(f"uda: unknown command {command!r}; valid commands: {', '.join(COMMANDS)}\n", file=sys.stderr)
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
