"""The one trainer: ``train(cfg, run_dir)`` runs any method on any pair.

A method supplies its networks and ``update`` (``uda.methods.base``); everything else is the same for
every method and lives in its own part of ``uda.engine``: precision (what ``auto`` picks), runtime (device,
autocast, optimizers, ``Stepper``), batches, state (checkpoints, resume), evaluation, logging, signals, guards, summary.
``_start`` builds a run; the loop body calls the parts in a fixed order after each update:
log -> evaluate -> check ranks -> checkpoint -> stop.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from uda.data.pairs import Normalize, PairInfo, build_pair
from uda.data.streams import RareClassStream
from uda.engine import dist
from uda.engine.batches import PairBatches, SegCrop
from uda.engine.contention import Contention, default_threads
from uda.engine.evaluation import BestCheckpoint, Evaluator
from uda.engine.guards import NonFiniteGuard, NonFiniteLoss, RankCheck, check_free_space, check_writable, on_main
from uda.engine.logging import ProgressDisplay, TrainLog, tensorboard, write_images
from uda.engine.precision import Choice, choose, machine_record
from uda.engine.runtime import (
    Stepper,
    autocast,
    build_optimizers,
    lr_factors,
    plan_stages,
    resolve_device,
    seed_everything,
    stage_ends,
)
from uda.engine.signals import StopFlag, TrainingInterrupted
from uda.engine.state import Checkpointer, Counters, config_dict, resuming, trim_metrics
from uda.engine.summary import git_commit, read_metrics, selected, versions, write_summary
from uda.errors import ConfigError
from uda.methods import Method, get_method
from uda.schema import Precision, Progress, TrainConfig

__all__ = ["NonFiniteLoss", "TrainingInterrupted", "train"]

log = logging.getLogger("uda")

# summary.json's per-class results beside the metric, by metric
PER_CLASS = {"acc": ("source_mean_class_acc", "target_mean_class_acc", "source_class_acc", "target_class_acc"),
             "miou": ("source_iou", "target_iou")}


@dataclass(kw_only=True)
class Run:
    """Everything ``_start`` builds for the loop."""

    cfg: TrainConfig
    run_dir: Path
    device: torch.device
    choice: Choice  # the precision and memory layout, and why
    info: PairInfo
    method: Method
    stepper: Stepper
    opt_cfgs: dict
    spans: dict[str, tuple[int, int] | list[tuple[int, int]]]
    ends: dict[int, str]  # step -> stage that ends there (multi-stage methods only)
    start: int  # the first step this session runs
    counters: Counters
    ckpts: Checkpointer
    best: BestCheckpoint
    writer: Any  # TensorBoard on rank 0, a NullWriter elsewhere
    batches: PairBatches
    evaluator: Evaluator
    commit: str | None  # the code this run started with


def _build_method(cfg: TrainConfig, info: PairInfo, device: torch.device, channels_last: bool) -> Method:
    """The method's networks, seeded by ``seed``; under torchrun rank 0's weights everywhere."""
    seed_everything(cfg.seed)
    method = get_method(cfg.method.name).from_config(cfg, info).to(device)
    if dist.world() > 1:
        if device.type == "cuda":  # batch statistics over the global batch
            method = torch.nn.SyncBatchNorm.convert_sync_batchnorm(method)
        dist.broadcast_module(method)
        if dist.rank():  # rank 0 keeps the single-process random stream; the others get their own (dropout)
            seed_everything(cfg.seed * 1_000_003 + dist.rank())
    if channels_last:
        method = method.to(memory_format=torch.channels_last)
    return method


def source_stream(method: Method, source, info) -> Callable[[int, int, int], RareClassStream] | None:
    """The source's index stream when the method asks for rare class sampling (DAFormer), else None."""
    rcs = method.source_sampling()
    if rcs is None:
        return None
    made = partial(RareClassStream, source.class_pixels(info.num_classes), temperature=rcs.temperature,
                   min_share=rcs.min_share)
    if dist.is_main():
        probe = made(1, seed=0, stream=0)
        classes, probs = probe.classes, probe.probs
        log.info("rare class sampling (T = %g, images where the class covers > %g): P(class) %s", rcs.temperature,
                 rcs.min_share, ", ".join(f"{info.class_names[c] if info.class_names else c} {p:.3f}"
                                       for c, p in zip(classes.tolist(), probs.tolist())))
    return lambda batch, seed, stream: made(batch, seed=seed, stream=stream)


def seg_crop(data, method: Method, info) -> SegCrop | None:
    """A segmentation pair's training crops and mirrors (``data.seg_crop``, ``data.seg_flip``), or None; the crop
    must fit each domain's images (file-backed pairs are checked with the config)."""
    if not (data.seg_crop or data.seg_flip):
        return None
    size = tuple(data.seg_crop) if data.seg_crop else None
    if size and info.image_size and (size[0] > info.image_size or size[1] > info.image_size):
        raise ConfigError(f"data.seg_crop {list(size)} is larger than the {info.name} images ({info.image_size} x "
                          f"{info.image_size})")
    rcs = method.source_sampling()
    return SegCrop(size, data.seg_crop_max_share, data.seg_flip, rcs.min_crop_share if rcs else 0.0)


def _start(cfg: TrainConfig, run_dir: Path, counters: Counters) -> Run:
    """Device, data, method, optimizers; the checkpoint to continue, if any (checked before any training)."""
    tr, commit = cfg.trainer, git_commit()  # the code this run starts with
    device = dist.local_device(resolve_device(cfg.device))
    dist.init(device)
    run_dir = Path(dist.broadcast_object(str(run_dir)))
    choice = choose(cfg, device)  # precision and memory layout: trainer.* or what measured fastest here
    if dist.is_main():
        log.info(choice.why)
    torch.set_num_threads(tr.threads or default_threads())  # 0: $OMP_NUM_THREADS, else the cores we may use
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    resume = resuming(cfg.resume, run_dir / "checkpoints")
    on_main(check_writable, run_dir)
    # data: uint8 tensors in memory (on the GPU when there is one), batches gathered by index
    source, target, info = build_pair(cfg.data)
    if cfg.data.on_device:
        source, target = source.to(device), target.to(device)
    prepare = Normalize(info.mean, info.std, device, choice.channels_last, crop=info.image_size)
    method = _build_method(cfg, info, device, choice.channels_last)
    opt_cfgs, optimizers = build_optimizers(method, cfg.optimizer)
    scaler = torch.amp.GradScaler(device.type, enabled=choice.precision == Precision.fp16)
    stages = plan_stages(method, tr.max_steps)
    ends = stage_ends(stages) if len(stages) > 1 else {}
    on_main(check_free_space, run_dir, method)
    best = BestCheckpoint(tr.select.value, info.metric)
    ckpts = Checkpointer(run_dir, method=method, optimizers=optimizers, scaler=scaler, config=config_dict(cfg),
                         counters=counters, best=best.best, keep_every=tr.keep_every,
                         numerics=choice.record())
    metrics_path, start = run_dir / "metrics.jsonl", 0
    if resume:
        state = ckpts.restore()
        start = state["step"]
        best.restore(state.get("best"))
        if dist.is_main():
            trim_metrics(metrics_path, start)
    elif dist.is_main():
        metrics_path.unlink(missing_ok=True)  # left by a run that died before its first checkpoint
    writer = tensorboard(run_dir, start, dist.is_main())
    # file-backed domains: a DataLoader reads the streams' indices (made after the resume)
    batches = PairBatches(source, target, seed=cfg.seed, batch=tr.batch_size, world=dist.world(), rank=dist.rank(),
                          start=start, end=tr.max_steps, workers=cfg.data.workers, device=device, prepare=prepare,
                          augment_size=info.image_size if cfg.data.augment else None, per_pixel=info.metric == "miou",
                          source_stream=source_stream(method, source, info), seg_crop=seg_crop(cfg.data, method, info))
    if (
        dist.is_main() and not resume and tr.images
    ):  # what the data became: one grid of training images, as the network sees them
        write_images(writer, run_dir, batches.first_images(), start)
    evaluator = Evaluator(method=method, source=source, target=target, info=info, prepare=prepare, device=device,
                          autocast=partial(autocast, device, choice.precision), batch_size=tr.eval_batch_size,
                          workers=cfg.data.workers, writer=writer, run_dir=run_dir, stage_ends=ends, best=best,
                          save_best=ckpts.save_best, images=tr.images)
    return Run(cfg=cfg, run_dir=run_dir, device=device, choice=choice, info=info, method=method,
               stepper=Stepper(optimizers, scaler, device.type), opt_cfgs=opt_cfgs,
               spans=method.schedule_spans(tr.max_steps), ends=ends, start=start, counters=counters, ckpts=ckpts,
               best=best, writer=writer, batches=batches, evaluator=evaluator, commit=commit)


def train(cfg: TrainConfig, run_dir: Path, *, stop_after: int | None = None) -> dict[str, Any]:
    """Train ``cfg`` in ``run_dir``; returns the summary (also written to summary.json).

    ``stop_after``: stop as a signal would after that many steps (checkpoint, then
    TrainingInterrupted) -- for tests and scripted preemption.

    Under ``torchrun`` (WORLD_SIZE > 1) every rank runs this; ``trainer.batch_size`` is per rank and
    domain, rank 0's ``run_dir`` is used by all, and only rank 0 writes (see ``uda.engine.dist``).
    """
    counters = Counters()
    contention = Contention() if dist.world() == 1 else None  # torchrun's ranks share the cores on purpose
    run = _start(cfg, Path(run_dir), counters)
    tr, method, stepper, main = cfg.trainer, run.method, run.stepper, dist.is_main()
    if contention:
        contention.look("while the data loaded and the networks were built")
    images_per_step = 2 * tr.batch_size * dist.world()
    stop, guard, ranks = StopFlag(stop_after), NonFiniteGuard(tr, run.ckpts.dir), RankCheck(tr.check_ranks_every)
    stop.install()
    progress = ProgressDisplay(tr.progress if main else Progress.none, tr.max_steps, run.start, every=10 * tr.log_every)
    train_log = TrainLog(run.writer, progress, images_per_step, run.ends)
    last = None  # this session's latest evaluation
    every = tr.eval_interval()
    method.train()
    try:
        for step in range(run.start, tr.max_steps):
            t0 = time.perf_counter()
            stepper.set_lr(lr_factors(run.opt_cfgs, run.spans, step, tr.max_steps))
            src, tgt = next(run.batches)
            if method.refresh_due(step, run.batches.target_epoch_steps()):  # (SHOT: each target epoch)
                with torch.no_grad():  # in fp32, as the official pass
                    method.refresh(run.batches.target_pass(tr.eval_batch_size))
            stepper.begin_iteration()
            with autocast(run.device, run.choice.precision):
                out = method.update(src, tgt, step, stepper)
            stepper.end_iteration()
            applied = guard.after_update(step, bool(stepper.skipped), out, run.writer, run.ckpts.saved)
            train_log.add(out if applied else None)
            done = step + 1
            counters.train_s += time.perf_counter() - t0
            counters.images += images_per_step
            # after each update, in this order: log -> evaluate -> check ranks -> checkpoint -> stop
            if done % tr.log_every == 0 or done == tr.max_steps:
                train_log.write(done, stepper)
                if contention:
                    contention.look(f"by step {done}")
            if (done % every == 0 or done in run.ends or done == tr.max_steps) and main:
                last = run.evaluator(done)
                m = run.info.metric
                progress.write(
                    f"step {done}: source_{m} {last[f'source_{m}']:.2f}  target_{m} {last[f'target_{m}']:.2f}"
                )
            ranks(method, done)
            requested = stop.requested(done, run.device)
            if done % tr.checkpoint_every == 0 or done == tr.max_steps or requested:
                run.ckpts.save(done)
            if requested and done < tr.max_steps:
                raise TrainingInterrupted(done, run.ckpts.last, stop.signum)
    finally:
        stop.restore()
        progress.close()
        run.writer.flush()
        run.writer.close()
        stop.hand_over()
    if not main:
        return dist.broadcast_object(None)  # rank 0's summary
    summary = _summary(run, last, train_log.loop_images_per_s(), ranks.passed, guard, contention)
    write_summary(run.run_dir, summary)
    return dist.broadcast_object(summary)


def _summary(run: Run, last: dict[str, Any] | None, loop_images_per_s: float | None, rank_checks: int,
             guard: NonFiniteGuard, contention: Contention | None) -> dict:
    """summary.json: the final evaluation (the last checkpoint's), each criterion's pick, throughput, provenance."""
    cfg, m = run.cfg, run.info.metric
    rows = read_metrics(run.run_dir / "metrics.jsonl")
    if last is None:  # resumed a run that had already finished: reuse its final evaluation
        last = rows[-1] if rows and rows[-1]["step"] == cfg.trainer.max_steps else run.evaluator(cfg.trainer.max_steps)
        rows = read_metrics(run.run_dir / "metrics.jsonl")
    c = run.counters
    return {
        "method": cfg.method.name, "data": cfg.data.name, "seed": cfg.seed, "steps": cfg.trainer.max_steps,
        f"source_{m}": last[f"source_{m}"], f"target_{m}": last[f"target_{m}"],
        **{k: last[k] for k in PER_CLASS[m] if k in last},  # (absent from rows of runs older than them)
        # the pair as resolved: what the network saw (a custom pair's are derived)
        "pair": {"image_size": run.info.image_size, "channels": run.info.channels,
                 "num_classes": run.info.num_classes, "class_names": list(run.info.class_names)},
        "checkpoint": "last (no model selection; target labels are used only for this report)",
        # the evaluation each criterion picks; only "oracle" reads target labels (for reference)
        "selected": selected(rows, m), "select": cfg.trainer.select.value, "best_checkpoint": dict(run.best.best),
        "wall_s": round(c.wall_s(), 2), "train_s": round(c.train_s, 2),
        "images_per_s": round(c.images / max(c.train_s, 1e-9), 1),
        # wall clock, first logging point to last (evaluations and checkpoints included)
        "loop_images_per_s": loop_images_per_s,
        "device": str(run.device), **run.choice.record(),
        # the CPU the speed was measured on (its capability decides trainer.*=auto)
        **({"cpu": str(run.choice.cpu)} if run.choice.cpu else {}),
        "threads": torch.get_num_threads(),
        # the machine's kind first (what uda repro compares); whether others kept its cores busy
        "machine": machine_record(run.device, run.choice.cpu),
        **(contention.record() if contention else {"contended": None}),
        "date": time.strftime("%Y-%m-%d"),
        # updates skipped for non-finite losses in this session (all, and the longest run of them
        # in a row); fp16: the gradient scaler's final scale
        "skipped_updates": guard.total, "skipped_longest_run": guard.longest,
        "loss_scale": run.stepper.scaler.get_scale() if run.stepper.scaler.is_enabled() else None,
        "world_size": dist.world(), **({"rank_checks": rank_checks} if rank_checks else {}),
        "versions": versions(), "git_commit": run.commit,
    }
