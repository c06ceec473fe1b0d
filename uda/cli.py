"""The ``uda`` command: subcommands that hand their overrides to Hydra.

Kept free of torch/torchvision imports until a run actually starts, so ``uda --help`` and config
errors answer at once.
"""
from __future__ import annotations

import sys
from pathlib import Path

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "configs")

USAGE = """usage: uda <command> [hydra overrides...]

commands:
  train     train a method on a domain pair, e.g.
              uda train                                   (DANN on MNIST -> MNIST-M)
              uda train method=source_only seed=1 trainer.max_steps=3000
              uda train -m method=source_only,dann seed=0,1,2   (a Hydra sweep)
              uda train resume=true hydra.run.dir=outputs/<date>/<time>
            `uda train --help` lists the config groups and every setting.

config groups: method, data, backbone, optimizer, trainer (configs/ in the repository)
"""

COMMANDS = ("train",)


def _train(overrides: list[str]) -> int:
    import hydra
    from omegaconf import DictConfig

    from uda.config import register_configs

    register_configs()

    @hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
    def task(cfg: DictConfig) -> float:
        return run_train(cfg)

    sys.argv = ["uda train", *overrides]
    task()
    return 0


def run_train(cfg) -> float:
    """Hydra task: DictConfig -> typed TrainConfig -> the loop. User errors exit with one line."""
    import logging
    import signal

    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from uda.config import UserError, validate

    try:
        conf = OmegaConf.to_object(cfg)
        validate(conf)
        from uda.engine.loop import train  # the heavy imports start here

        run_dir = Path(HydraConfig.get().runtime.output_dir)
        summary = train(conf, run_dir)
    except UserError as e:
        if hasattr(e, "signum"):  # TrainingInterrupted: the checkpoint is safe
            print(f"uda: {e}", file=sys.stderr)
            sys.exit(128 + (e.signum or signal.SIGINT))
        print(f"uda: error: {e}", file=sys.stderr)
        sys.exit(2)
    logging.getLogger("uda").info("summary written to %s", run_dir / "summary.json")
    print(f"{summary['method']} {summary['data']} seed={summary['seed']} steps={summary['steps']}: "
          f"target_acc={summary['target_acc']:.2f}% source_acc={summary['source_acc']:.2f}% "
          f"({summary['wall_s']:.0f} s, {summary['images_per_s']:.0f} img/s) -> {run_dir}", flush=True)
    return summary["target_acc"]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
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
    print(f"uda: unknown command {command!r}; valid commands: {', '.join(COMMANDS)}\n", file=sys.stderr)
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
