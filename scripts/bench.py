"""Steady-state training speed: `uda`'s loop vs the bare PyTorch step on in-memory tensors.

    python scripts/bench.py                                   # every method, fp32
    python scripts/bench.py --methods dann,dsn --settings fp32,bf16,fp32+cl,bf16+cl,auto --out bench.json
    python scripts/bench.py --methods dann --settings fp32 --compile   # + torch.compile'd bare step

For each method and setting it measures, after ``--warmup`` steps:

* bare: the method's own ``update`` (the same networks, losses and optimizer steps) called in a plain
  Python loop on one fixed, already normalised batch held in memory -- no data gathering, no
  schedules, no logging, no checkpoints. With ``--compile`` also the same with every sub-network
  ``torch.compile``'d.
* framework: ``uda.engine.loop.train`` itself on the real pair (batches gathered from the uint8
  tensors, normalised on the fly, learning-rate schedules, loss sums reduced at each logging point,
  progress display off): images/s of the wall clock between the first and the last logging point
  (``loop_images_per_s`` in summary.json; evaluations and checkpoints fall outside that window).

and prints ratio = framework / bare (1.0 = no overhead) as a table, under the CPU's model and capability
(a table from one machine is not true of another: bf16 is several times slower than fp32 on a CPU without
native bf16); ``auto`` is what ``trainer.precision=auto trainer.channels_last=auto`` pick here, and its row
says what that was. ``--out`` writes the rows as JSON.
Both run the same step indices (so a multi-stage method spends the same steps in each stage): ``METHODS``
gives each method's pair, stage lengths that end inside the untimed warm-up (the loop evaluates at each
stage end, which is not per-step overhead), and the sizes of the CPU recipes for the GAN methods.
The two are measured alternately ``--repeats`` times and the best of each is kept. Run it on a quiet
machine: a second busy process distorts CPU timings by 10x or more.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

SETTINGS = {"fp32": ("fp32", False), "bf16": ("bf16", False), "fp32+cl": ("fp32", True), "bf16+cl": ("bf16", True),
            "fp16": ("fp16", False), "fp16+cl": ("fp16", True),  # fp16 (with gradient scaling): CUDA
            "auto": ("auto", "auto")}  # what trainer.precision / channels_last = auto pick on this machine
_GAN = ["trainer.batch_size=32", "method.ngf=16", "method.n_blocks=3"]  # cycada_mnist_mnistm_cpu's translator
_SEG = ["data=digits_seg", "trainer.batch_size=16"]  # digits_seg_cpu's batch
# method -> overrides: its pair, and stage boundaries inside the untimed warm-up (the default 40 steps), so
# that the evaluation the loop runs at each stage end is not timed: ADDA's adapt stage, CyCADA's task stage
# (its translator is CycleGAN's, timed on its own) and ROAD's adapt stage are what the 200 timed steps run
METHODS = {
    "source_only": [], "dann": [], "cdan": [], "sdat": [], "mic": [], "mcc": [], "mdd": [], "mcd": [],
    "mean_teacher": [], "fixmatch": [], "dsn": [],
    # the target stage's step, IM alone: the bare step has no refresh pass over the target set
    "shot": ["method.source_steps=0", "method.beta=0"],
    "adda": ["method.pretrain_steps=20"],
    "cyclegan": _GAN, "cycada": [*_GAN, "method.source_steps=10", "method.translate_steps=10",
                                 "method.feature_adapt=true"],
    "adaptsegnet": _SEG, "advent": _SEG, "dacs": _SEG, "daformer": _SEG, "road": [*_SEG, "method.warmup_steps=20"],
    "lsd": [*_SEG, "method.ngf=16", "method.ndf=16"],
    "source_only_seg": _SEG,  # digits_seg_cpu's source-only segmenter
    "mic_daformer": [*_SEG, "method/host=daformer"],  # MIC on a segmentation host (its row "mic" is on SDAT)
}
METHOD_OF = {"source_only_seg": "source_only", "mic_daformer": "mic"}  # a row name that is not the method's own


def compose(method: str, precision: str, channels_last: bool | str, batch: int | None, steps: int, log_every: int,
            threads: int, device: str = "cpu"):
    """The method's config for ``steps`` steps with logging points every ``log_every`` (evaluation at the end)."""
    from uda.compose import compose as uda_compose
    from uda.schema import validate

    overrides = [f"method={METHOD_OF.get(method, method)}", f"trainer.precision={precision}",
                 f"trainer.channels_last={str(channels_last).lower()}", f"trainer.max_steps={steps}",
                 f"trainer.eval_every={steps}", "trainer.min_evals=0",  # one evaluation, after the timed window
                 f"trainer.checkpoint_every={steps}", f"trainer.log_every={log_every}",
                 "trainer.progress=none", f"trainer.threads={threads}", "data.test_subset=500", f"device={device}",
                 *METHODS[method]]
    if batch:
        overrides.append(f"trainer.batch_size={batch}")
    cfg = uda_compose(overrides)
    validate(cfg)
    return cfg


def bare_step_rate(cfg, choice, steps: int, warmup: int, compiled: bool) -> tuple[float, int]:
    """(images/s of method.update on one fixed in-memory batch (2 x batch_size images per step), in the
    precision and layout ``choice`` (``uda.engine.precision.choose``) resolved; the timed updates skipped for a
    non-finite loss, which skip the backward and the step and so would make the bare step look fast)."""
    from uda.data.pairs import Normalize, build_pair
    from uda.engine.runtime import Stepper, autocast, build_optimizers
    from uda.methods import Batch, get_method
    from uda.schema import Precision

    device = torch.device(cfg.device.value)
    source, target, info = build_pair(cfg.data)
    source, target = source.to(device), target.to(device)
    torch.manual_seed(0)
    method = get_method(cfg.method.name).from_config(cfg, info).to(device)
    mf = torch.channels_last if choice.channels_last else torch.contiguous_format
    method = method.to(memory_format=mf)
    if compiled:
        for child in method.children():
            child.compile()
    _, opts = build_optimizers(method, cfg.optimizer)
    precision = choice.precision
    scaler = torch.amp.GradScaler(device.type, enabled=precision == Precision.fp16)
    stepper = Stepper(opts, scaler, device.type)
    B = cfg.trainer.batch_size
    prepare = Normalize(info.mean, info.std, device, choice.channels_last, crop=info.image_size)
    src, tgt = Batch(prepare(source.train_x[:B]), source.train_y[:B].long()), Batch(prepare(target.train_x[:B]), None)
    method.train()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    # one batch trained on again and again drives some losses (MCC's class confusion) to saturated softmaxes
    # whose tiny values are denormal floats, several times slower on a CPU; the real stream never gets there,
    # so the bare step flushes them to zero (measured: MCC's bare step 2749 img/s, 4813 flushed)
    flush = torch.set_flush_denormal(True)
    skipped = 0
    try:
        for i in range(warmup + steps):
            if i == warmup:
                sync()
                t0 = time.perf_counter()
            stepper.begin_iteration()
            with autocast(device, precision):
                method.update(src, tgt, i, stepper)
            skipped += stepper.skipped if i >= warmup else 0
            stepper.end_iteration()
        sync()
    finally:
        if flush:
            torch.set_flush_denormal(False)
    return 2 * B * steps / (time.perf_counter() - t0), skipped


def framework_rate(cfg) -> tuple[float, float]:
    """(loop images/s between the first and last logging point, images/s of the step time alone)."""
    from uda.engine.loop import train

    with tempfile.TemporaryDirectory() as tmp:
        summary = train(cfg, Path(tmp))
    return summary["loop_images_per_s"], summary["images_per_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", default=",".join(METHODS), help=f"comma list of {', '.join(METHODS)}")
    ap.add_argument("--settings", default="fp32", help=f"comma list of {', '.join(SETTINGS)}")
    ap.add_argument("--steps", type=int, default=200, help="timed steps (after --warmup)")
    ap.add_argument("--warmup", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=0, help="per domain; 0 = the config's")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--compile", action="store_true", help="also time the bare step with torch.compile")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    settings = args.settings.split(",")
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown:
        ap.error(f"unknown setting(s) {unknown}; choose from {list(SETTINGS)}")
    bad = [m for m in args.methods.split(",") if m not in METHODS]
    if bad:
        ap.error(f"unknown method(s) {bad}; choose from {list(METHODS)}")
    if args.steps % args.warmup:
        ap.error("--steps must be a multiple of --warmup (the loop is timed between logging points)")
    torch.set_num_threads(args.threads)
    from uda.engine.precision import choose, cpu

    here = cpu()
    machine = (f"CPU: {here}, native bf16: {', '.join(here.bf16) or 'none'}; {args.threads} threads; "
               f"torch {torch.__version__}")
    if args.device == "cuda":
        machine = f"GPU: {torch.cuda.get_device_name()}; {machine}"
    print(machine, flush=True)
    rows = []
    for method in args.methods.split(","):
        for setting in settings:
            precision, cl = SETTINGS[setting]
            cfg = compose(method, precision, cl, args.batch_size, args.warmup + args.steps, args.warmup, args.threads,
                          args.device)
            choice = choose(cfg, torch.device(args.device))  # the trainer's resolution of auto (and of the rest)
            bare, loop, step_only, compiled, skipped = 0.0, 0.0, 0.0, None, 0
            for _ in range(args.repeats):
                rate, n = bare_step_rate(cfg, choice, args.steps, args.warmup, compiled=False)
                bare, skipped = max(bare, rate), skipped + n
                lo, st = framework_rate(cfg)
                loop, step_only = max(loop, lo), max(step_only, st)
            if args.compile:
                compiled = bare_step_rate(cfg, choice, args.steps, args.warmup, compiled=True)[0]
            row = {"method": method, "setting": setting, "device": args.device, "precision": choice.precision.value,
                   "channels_last": choice.channels_last, "cpu": str(here),
                   "batch_size": cfg.trainer.batch_size, "threads": args.threads, "steps": args.steps,
                   "bare_img_s": round(bare, 1), "framework_img_s": loop, "framework_step_img_s": step_only,
                   "ratio": round(loop / bare, 3), "compiled_bare_img_s": compiled and round(compiled, 1),
                   "bare_skipped_updates": skipped,  # non-finite losses in the timed bare steps: its rate is suspect
                   "torch": torch.__version__}
            rows.append(row)
            print(json.dumps(row), flush=True)

    print(f"\n{machine}\n")
    print("| method | setting | bare img/s | framework img/s | ratio |" + (" compiled bare img/s |" * args.compile))
    print("|---|---|---|---|---|" + ("---|" * args.compile))
    for r in rows:
        extra = f" {r['compiled_bare_img_s']} |" if args.compile else ""
        setting = r["setting"]
        if setting == "auto":  # what auto picked, and how it compares with the fastest row of this method
            fastest = max(o["framework_img_s"] for o in rows if o["method"] == r["method"])
            setting = (f"auto = {r['precision']}{'+cl' if r['channels_last'] else ''}, "
                       f"{r['framework_img_s'] / fastest:.2f} of the fastest")
        print(f"| {r['method']} | {setting} | {r['bare_img_s']:.0f} | {r['framework_img_s']:.0f} | "
              f"{r['ratio']:.2f} |{extra}")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
