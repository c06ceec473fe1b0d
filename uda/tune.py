"""``uda tune``: choose a method's hyperparameters on a pair without target labels.

    uda tune method=dann trials=8 hydra.sweep.dir=tunes/dann        [tune.criterion=...] [any train override]

A study (Optuna, TPE) over the method's declared search space (``Config.SEARCH``, or ``tune.space.<key>=
log[a,b]`` from the command line). Every trial is an ordinary run directory ``<dir>/trial_<k>`` trained by
``uda train`` in a child process (resumable, TensorBoard, summary.json); the first trial is the method's
default, and source-only on the same pair (``<dir>/source_only``) is always a candidate, so the study can
choose not to adapt; with ``tune.seeds=N`` each candidate is N runs ``<name>/seed_<s>`` and its score their
mean. The objective of a trial is a label-free criterion of its last evaluation
(``tune.criterion``; default: ``trainer.select``'s recommendation, or the next by measured regret where the
method's own loss optimises it) read through ``label_free``: target labels cannot reach it.

The study lives in ``<dir>/study.db`` (or ``tune.storage=<RDB URL>``, which machines running the same
command share): an interrupted study resumes with the same command, continuing a killed trial from its last
checkpoint and never re-running a finished one. ``uda report <dir>`` shows the trials, the pick, the target
metric of each (reported, never used), the oracle and the pick's regret, and writes tune.csv.
"""
from __future__ import annotations

import sys

from uda.errors import ConfigError
from uda.tune_plan import parse_args, plan, show_space
from uda.tune_study import launch_workers, run

USAGE = """usage: uda tune method=NAME [data=PAIR] [trials=N] [tune.criterion=NAME] [tune.space.KEY=DIST]
                [tune.seeds=N] [tune.storage=URL] [tune.seed=N] [tune.workers=N hydra/launcher=...]
                [hydra.sweep.dir=DIR]
                [any uda train override]

  trials=N                 trials of the method (default 10; the first is the method's default); source-only
                           on the same pair runs once more, as a candidate
  tune.criterion=NAME      the label-free objective (default: trainer.select's recommendation, or the next by
                           measured regret where the method optimises it: entropy, im, mano, source_val)
  tune.space.KEY=DIST      search KEY over DIST (log[a,b], uniform[a,b], int[a,b], choice[x,y,...]); =none drops
                           a declared key; the declared spaces: uda tune method=NAME --space
  tune.seeds=N             each candidate runs with N seeds (the command's seed and the N - 1 after it) and is
                           scored by their mean criterion (default 1): a setting on the edge of collapse on
                           some seeds scores badly, where one lucky seed would have picked it
  tune.storage=URL         an Optuna RDB URL that several machines share (default sqlite in the directory)
  tune.workers=N           N workers of the study as a Hydra multirun: hydra/launcher=slurm places them on a
                           cluster (with a shared tune.storage); the same command on several machines also works
  hydra.sweep.dir=DIR      the study's directory (default outputs/tune/<date>/<time>); the same command with the
                           same DIR resumes it
Then: uda report DIR (trials, the pick, its regret, tune.csv)."""


def main(argv: list[str]) -> int:
    from uda.errors import UserError

    if argv and argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    try:
        args = parse_args(argv)
        p = plan(args)
        if args.show_space:
            print(show_space(p))
            return 0
        try:
            import optuna  # noqa: F401
        except ModuleNotFoundError:
            raise ConfigError("uda tune needs optuna: pip install optuna") from None
        if args.workers > 1:
            launch_workers(p)
        else:
            run(p)
    except KeyboardInterrupt:
        print(f"uda tune: interrupted; the same command resumes the study in {args.directory}", file=sys.stderr)
        return 130
    except UserError as e:
        print(f"uda: error: {e}", file=sys.stderr)
        return 2
    return 0
