"""Steady-state training speed: the framework's loop vs a bare PyTorch step on in-memory tensors.

    python scripts/bench.py --method dann --steps 300 --precision fp32 [--channels-last]

Prints images/s for the bare step (the same networks and update, no loop around it) and for
`uda`'s loop (data gathering, normalisation, schedules, logging), their ratio, and writes JSON.
Run it on a quiet machine: a second busy process distorts CPU timings by 10x.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", default="dann")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--out", default="")
    args = ap.parse_args()

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from uda.cli import CONFIG_DIR
    from uda.config import Precision, register_configs
    from uda.data.pairs import build_pair
    from uda.engine.loop import autocast, train
    from uda.engine.optim import Stepper, build_optimizer
    from uda.methods import Batch
    from uda.registry import get_method

    register_configs()
    steps = args.warmup + args.steps
    overrides = [f"method={args.method}", f"trainer.precision={args.precision}",
                 f"trainer.channels_last={str(args.channels_last).lower()}", f"trainer.batch_size={args.batch_size}",
                 f"trainer.max_steps={steps}", f"trainer.eval_every={steps}", f"trainer.checkpoint_every={steps}",
                 "trainer.progress=none", "data.test_subset=1000"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = OmegaConf.to_object(compose("train", overrides=overrides))
    device = torch.device("cpu")
    precision = Precision(args.precision)

    # bare: the method's own update on fixed, pre-normalised tensors
    source, target, info = build_pair(cfg.data)
    torch.manual_seed(0)
    method = get_method(cfg.method.name).from_config(cfg, info)
    mf = torch.channels_last if args.channels_last else torch.contiguous_format
    method = method.to(memory_format=mf)
    opts = {g: build_optimizer(p, cfg.optimizer) for g, p in method.param_groups().items()}
    stepper = Stepper(opts, torch.amp.GradScaler("cpu", enabled=False), "cpu")
    B = args.batch_size
    x_s = (source.train_x[:B].float() / 127.5 - 1).contiguous(memory_format=mf)
    x_t = (target.train_x[:B].float() / 127.5 - 1).contiguous(memory_format=mf)
    src, tgt = Batch(x_s, source.train_y[:B]), Batch(x_t, None)
    for i in range(steps):
        if i == args.warmup:
            t0 = time.perf_counter()
        with autocast(device, precision):
            method.update(src, tgt, i, stepper)
        stepper.end_iteration()
    bare = 2 * B * args.steps / (time.perf_counter() - t0)

    with tempfile.TemporaryDirectory() as tmp:
        summary = train(cfg, Path(tmp))
    framework = summary["images_per_s"]  # includes the warm-up steps: a conservative figure
    res = {"method": args.method, "precision": args.precision, "channels_last": args.channels_last,
           "batch_size": B, "threads": torch.get_num_threads(), "bare_img_s": round(bare, 1),
           "framework_img_s": framework, "ratio": round(framework / bare, 3)}
    print(json.dumps(res))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
