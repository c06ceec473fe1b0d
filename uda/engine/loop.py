"""The one training loop: device, AMP, optimizers, schedules, evaluation, logging, checkpoints.

A method only supplies networks and ``update``; everything here is the same for every method.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import uda
from uda.config import ConfigError, Device, NonFinite, Precision, Progress, TrainConfig, UserError
from uda.data.pairs import Normalize, build_pair, random_crop_flip
from uda.data.streams import IndexStream
from uda.engine import checkpoint as ckpt
from uda.engine import dist
from uda.engine.optim import Stepper, build_optimizer, lr_factor
from uda.methods.base import Batch, Method
from uda.metrics import evaluate as evaluate_scores
from uda.metrics import evaluate_segmentation
from uda.selection import LABEL_FREE, criterion_key, select
from uda.registry import get_method

log = logging.getLogger("uda")

SOURCE_STREAM, TARGET_STREAM = 1, 2


class TrainingInterrupted(UserError):
    """Raised after a requested stop (signal, or ``stop_after``) once a checkpoint is safely written."""

    def __init__(self, step: int, path: Path, signum: int | None):
        self.step, self.path, self.signum = step, path, signum
        self.exit_code = 128 + (signum or signal.SIGINT)  # 130 Ctrl-C, 143 SIGTERM, 138 SIGUSR1, 140 SIGUSR2
        super().__init__(f"stopped at step {step}; checkpoint saved to {path}. "
                         f"Continue with the same overrides plus: resume=true hydra.run.dir={path.parent.parent}")


class NonFiniteLoss(UserError):
    """Training produced non-finite losses (``trainer.nonfinite``); the last checkpoint is untouched."""

    exit_code = 3


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


def plan_stages(method: Method, max_steps: int) -> list:
    """The method's stages for this budget; ConfigError unless all are positive and fill it exactly."""
    stages = method.stages(max_steps)
    if sum(s.steps for s in stages) != max_steps or any(s.steps <= 0 for s in stages):
        raise ConfigError(f"the stages {[(s.name, s.steps) for s in stages]} must be positive and add up to "
                          f"trainer.max_steps={max_steps}")
    return stages


def check_writable(run_dir: Path) -> None:
    """Fail before training when the output directory cannot be created or written."""
    probe = run_dir / f".write_probe{os.getpid()}"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"output directory {run_dir} is not writable ({e.strerror or e}); "
                          f"choose another with hydra.run.dir=...") from e


def check_free_space(run_dir: Path, method: torch.nn.Module) -> None:
    """Enough room for the checkpoints (a temporary file, last.pt and prev.pt)?"""
    weights = sum(t.numel() * t.element_size() for t in method.state_dict().values())
    need = 3 * 3 * weights + (16 << 20)  # weights + up to two optimizer moments, three files; + logs
    free = shutil.disk_usage(run_dir).free
    if free < need:
        raise ConfigError(f"not enough free space in {run_dir}: checkpoints need about {need >> 20} MiB, "
                          f"{free >> 20} MiB free")


def resolve_device(device: Device) -> torch.device:
    if device == Device.auto:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == Device.cuda and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA device is available; valid here: auto, cpu")
    return torch.device(device.value)


def resolve_precision(precision: Precision, device: torch.device) -> Precision:
    if precision == Precision.auto:
        return Precision.fp16 if device.type == "cuda" else Precision.fp32
    return precision


def autocast(device: torch.device, precision: Precision):
    if precision == Precision.fp32:
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == Precision.bf16 else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def versions() -> dict[str, str]:
    import torchvision

    return {"uda": uda.__version__, "torch": str(torch.__version__), "torchvision": str(torchvision.__version__),
            "python": sys.version.split()[0]}


def git_commit() -> str | None:
    """HEAD of the checkout ``uda`` runs from, with ``+dirty`` when tracked files differ from it."""
    here = Path(__file__).parent
    try:
        out = subprocess.run(["git", "rev-parse", "--verify", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if out.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


@dataclass
class _StopFlag:
    """Set by SIGINT/SIGTERM/SIGUSR1/SIGUSR2: the loop finishes the current step, checkpoints, and stops.

    SIGUSR2 is what submitit (Hydra's SLURM launcher) sends before a job's time limit; once the
    checkpoint is written it is handed on to the handler that was installed before (submitit's, which
    requeues the job; the requeued job continues from the checkpoint with ``resume=auto``).
    """

    signum: int | None = None
    previous: dict[int, Any] = field(default_factory=dict)

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGUSR1", None), getattr(signal, "SIGUSR2", None)):
            if sig is None:
                continue
            try:
                self.previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: signals stay with their owner
                pass

    def _handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.signum = signum
        log.warning("signal %d received: saving a checkpoint after this step", signum)

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def hand_over(self) -> None:
        """After restore(): pass a received SIGUSR2 on to the previous Python handler, if there was one."""
        usr2 = getattr(signal, "SIGUSR2", None)
        previous = self.previous.get(usr2)
        if usr2 is not None and self.signum == usr2 and callable(previous):
            previous(usr2, None)


class _Progress:
    """A tqdm bar on a terminal; plain log lines under CI or when output is a file."""

    def __init__(self, mode: Progress, total: int, initial: int, every: int):
        self.every = every  # plain log lines: one per `every` steps
        if mode == Progress.auto:
            mode = Progress.bar if sys.stderr.isatty() and not os.environ.get("CI") else Progress.log
        self.mode, self.total = mode, total
        self.bar = None
        if mode == Progress.bar:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, leave=True)

    def update(self, step: int, n: int, scalars: dict[str, float], img_s: float) -> None:
        if self.bar is not None:
            self.bar.update(n)
            post = {k.split("/")[-1]: f"{v:.3g}" for k, v in scalars.items() if k.startswith(("loss/", "acc/domain"))}
            self.bar.set_postfix(post | {"img/s": f"{img_s:.0f}"}, refresh=False)
        elif self.mode == Progress.log and (step % self.every == 0 or step == self.total):
            parts = " ".join(f"{k}={v:.4g}" for k, v in scalars.items() if k.startswith(("loss/", "acc/")))
            log.info("step %d/%d  %s  %.0f img/s", step, self.total, parts, img_s)

    def write(self, msg: str) -> None:
        if self.bar is not None:
            self.bar.write(msg)
        elif self.mode != Progress.none:
            log.info(msg)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class _NullWriter:
    """What ranks other than 0 log to: nothing."""

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: None


def _on_main(fn, *args):
    """Run ``fn`` on rank 0 only; a UserError it raises is raised on every rank (none waits forever)."""
    err = None
    if dist.is_main():
        try:
            fn(*args)
        except UserError as e:
            err = e
    err = dist.broadcast_object(err)
    if err is not None:
        raise err


def _config_dict(cfg: TrainConfig) -> dict[str, Any]:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.structured(cfg), enum_to_str=True)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def _trim_metrics(path: Path, upto: int) -> None:
    """Keep only the evaluations a checkpoint at step ``upto`` has seen (resume rewrites the rest)."""
    if not path.is_file():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= upto]
    path.write_text("".join(ln + "\n" for ln in keep))


def _train_size(domain) -> int:
    return domain.train_x.shape[0] if hasattr(domain, "train_x") else len(domain.train)


class _StepBatches:
    """A DataLoader batch sampler: the indices the stream gives for each remaining step (this rank's slice)."""

    def __init__(self, stream: IndexStream, start: int, end: int, batch: int, rank: int):
        self.stream, self.start, self.end, self.batch, self.rank = stream, start, end, batch, rank

    def __iter__(self):
        for step in range(self.start, self.end):
            yield self.stream.indices(step)[self.rank * self.batch:(self.rank + 1) * self.batch].tolist()

    def __len__(self) -> int:
        return self.end - self.start


def _file_loader(domain, stream: IndexStream, start: int, end: int, batch: int, rank: int, workers: int):
    """Batches of a file-backed domain in step order (None for in-memory domains)."""
    if hasattr(domain, "train_x"):
        return None
    from torch.utils.data import DataLoader

    loader = DataLoader(domain.train, batch_sampler=_StepBatches(stream, start, end, batch, rank),
                        num_workers=workers, pin_memory=torch.cuda.is_available(),
                        persistent_workers=False, prefetch_factor=4 if workers else None)
    return iter(loader)


def first_test_images(domain, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` test images (uint8) and labels of an in-memory or file-backed domain."""
    if hasattr(domain, "test_x"):
        return domain.test_x[:n], domain.test_y[:n]
    items = [domain.test[i] for i in range(min(n, len(domain.test)))]
    return torch.stack([a for a, _ in items]), torch.stack([b for _, b in items])


def seg_grid(method: Method, domain, prepare: Normalize, num_classes: int, n: int = 4) -> torch.Tensor:
    """[3n, 3, H, W] in [0, 1]: n test images, their colourised labels, the colourised predictions."""
    from torchvision.transforms.v2 import functional as TF
    from torchvision.utils import draw_segmentation_masks

    from uda.nets.segmentation import palette, upsample

    x, y = first_test_images(domain, n)
    x = x.to(prepare.scale.device)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    y = TF.resize(y.to(x.device)[:, None], list(x.shape[-2:]), interpolation=TF.InterpolationMode.NEAREST)[:, 0]
    pred = upsample(method.predict(prepare(x)).float(), tuple(x.shape[-2:])).argmax(1)
    colours = palette(num_classes)
    classes = torch.arange(num_classes, device=x.device)[:, None, None]

    def paint(labels: torch.Tensor) -> torch.Tensor:
        canvas = torch.zeros_like(x[0])  # ignore (255) stays black
        return torch.stack([draw_segmentation_masks(canvas, lab[None] == classes, alpha=1.0, colors=colours)
                            for lab in labels])

    return torch.cat([x, paint(y), paint(pred)]).float() / 255.0


def train(cfg: TrainConfig, run_dir: Path, *, stop_after: int | None = None) -> dict[str, Any]:
    """Train ``cfg`` in ``run_dir``; returns the summary (also written to summary.json).

    ``stop_after``: stop as a signal would after that many steps (checkpoint, then
    TrainingInterrupted) -- for tests and scripted preemption.

    Under ``torchrun`` (WORLD_SIZE > 1) every rank runs this; ``trainer.batch_size`` is per rank and
    domain, rank 0's ``run_dir`` is used by all, and only rank 0 writes (see ``uda.engine.dist``).
    """
    t_start = time.perf_counter()
    commit = git_commit()  # the code this run starts with
    tr = cfg.trainer
    device = dist.local_device(resolve_device(cfg.device))
    dist.init(device)
    world, rank, main = dist.world(), dist.rank(), dist.is_main()
    run_dir = Path(dist.broadcast_object(str(run_dir)))
    precision = resolve_precision(tr.precision, device)
    if tr.threads:
        torch.set_num_threads(tr.threads)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    ckpt_dir = run_dir / "checkpoints"
    ckpt_path = ckpt_dir / ckpt.LAST
    has_ckpt = dist.broadcast_object(ckpt.exists(ckpt_dir))
    if cfg.resume is False and has_ckpt:
        raise ConfigError(f"{ckpt_dir} holds a checkpoint: pass resume=true to continue that run, "
                          f"or choose another hydra.run.dir")
    if cfg.resume is True and not has_ckpt:
        raise ConfigError(f"resume=true but there is no checkpoint in {ckpt_dir}; set hydra.run.dir to the run "
                          f"to continue, or pass resume=auto to start fresh when there is none")
    resuming = has_ckpt and cfg.resume in (True, "auto")
    if cfg.resume == "auto" and not has_ckpt:
        log.info("resume=auto: no checkpoint in %s, starting fresh", ckpt_dir)
    _on_main(check_writable, run_dir)

    # data: uint8 tensors in memory (on the GPU when there is one), batches gathered by index
    source, target, info = build_pair(cfg.data)
    if cfg.data.on_device:
        source, target = source.to(device), target.to(device)
    prepare = Normalize(info.mean, info.std, device, tr.channels_last, crop=info.image_size)
    augment = cfg.data.augment
    seg, metric = info.task == "segmentation", info.metric  # metric: "acc" | "miou"
    if seg and augment:
        raise ConfigError("data.augment (random crop + flip of images only) is not available for segmentation pairs")

    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    method: Method = get_method(cfg.method.name).from_config(cfg, info).to(device)
    if world > 1:
        if device.type == "cuda":  # batch statistics over the global batch
            method = torch.nn.SyncBatchNorm.convert_sync_batchnorm(method)
        dist.broadcast_module(method)
        if rank:  # rank 0 keeps the single-process random stream; the others get their own (dropout)
            random.seed(cfg.seed * 1_000_003 + rank)
            torch.manual_seed(cfg.seed * 1_000_003 + rank)
    if tr.channels_last:
        method = method.to(memory_format=torch.channels_last)
    groups = method.param_groups()
    overrides = method.optimizer_overrides()
    opt_cfgs = {name: overrides.get(name, cfg.optimizer) for name in groups}
    optimizers = {name: build_optimizer(params, opt_cfgs[name]) for name, params in groups.items()}
    scaler = torch.amp.GradScaler(device.type, enabled=precision == Precision.fp16)
    stepper = Stepper(optimizers, scaler, device.type)
    stages = plan_stages(method, tr.max_steps)
    spans = method.schedule_spans(tr.max_steps)
    stage_ends = {sum(s.steps for s in stages[: i + 1]): s.name for i, s in enumerate(stages)}
    _on_main(check_free_space, run_dir, method)
    config_dict = _config_dict(cfg)

    start, wall_before, train_s_before, images_before = 0, 0.0, 0.0, 0
    best: dict[str, Any] = {}  # the evaluation checkpoints/best.pt holds (trainer.select)
    metrics_path = run_dir / "metrics.jsonl"
    if resuming:
        if main:
            ckpt.cleanup_temporaries(ckpt_dir)
        state, used = ckpt.load_latest(ckpt_dir)  # every rank reads it (a shared run directory)
        changed = config_changes(state.get("config", {}), config_dict)
        if changed:
            log.warning("resuming with a config that differs from the checkpoint's: %s", "; ".join(changed))
        try:
            method.load_state_dict(state["method"])
            for name, opt in optimizers.items():
                opt.load_state_dict(state["optimizers"][name])
        except (RuntimeError, KeyError, ValueError) as e:
            raise ckpt.CheckpointError(f"{used} does not fit this config ({str(e).strip().splitlines()[0][:300]}); "
                                       f"resume with the run's own settings") from e
        scaler.load_state_dict(state["scaler"])
        ranks = state.get("rng_ranks") or [state["rng"]]
        if len(ranks) != world:
            log.warning("the checkpoint was written by %d process(es), this run has %d: random streams restart",
                        len(ranks), world)
        ckpt.set_rng_state(ranks[rank] if len(ranks) == world else state["rng"])
        start = state["step"]
        wall_before, train_s_before, images_before = state["wall_s"], state["train_s"], state["images"]
        if state.get("best", {}).get("criterion") == tr.select.value:
            best.update(state["best"])
        if main:
            _trim_metrics(metrics_path, start)
        log.info("resumed from %s at step %d", used, start)
    elif main:
        metrics_path.unlink(missing_ok=True)  # left by a run that died before its first checkpoint

    if main:
        from torch.utils.tensorboard import SummaryWriter

        run_dir.mkdir(parents=True, exist_ok=True)
        writer = SummaryWriter(str(run_dir / "tb"), purge_step=start + 1 if start else None)
    else:
        writer = _NullWriter()
    # each global batch of world x batch_size is drawn as in one process; rank r takes the r-th slice
    B = tr.batch_size
    src_stream = IndexStream(_train_size(source), B * world, seed=cfg.seed, stream=SOURCE_STREAM)
    tgt_stream = IndexStream(_train_size(target), B * world, seed=cfg.seed, stream=TARGET_STREAM)
    images_per_step = 2 * B * world
    # file-backed domains (large segmentation sets): a DataLoader reads the same indices the streams give
    src_files = _file_loader(source, src_stream, start, tr.max_steps, B, rank, cfg.data.workers)
    tgt_files = _file_loader(target, tgt_stream, start, tr.max_steps, B, rank, cfg.data.workers)

    def state_at(done: int, rng_ranks: list | None = None) -> dict[str, Any]:
        return {
            "step": done, "method": method.state_dict(),
            "optimizers": {n: o.state_dict() for n, o in optimizers.items()},
            "scaler": scaler.state_dict(), "rng": ckpt.rng_state(), "config": config_dict,
            "wall_s": wall_before + time.perf_counter() - t_start, "train_s": train_s, "images": images,
            "versions": versions(), "best": dict(best), "world_size": world,
            **({"rng_ranks": rng_ranks} if rng_ranks else {}),
        }

    def save(done: int) -> None:
        """Called on every rank (the random states are gathered); rank 0 writes."""
        rng_ranks = dist.gather_objects(ckpt.rng_state()) if world > 1 else None
        if not main:
            saved[0] = done
            return
        state = state_at(done, rng_ranks)
        ckpt.save_atomic(state, ckpt_path)
        if tr.keep_every and done % tr.keep_every == 0:
            ckpt.save_atomic(state, ckpt_dir / f"step_{done:07d}.pt", keep_previous=False)
        saved[0] = done

    def evaluate(done: int) -> dict[str, float]:
        method.eval()
        with autocast(device, precision):
            if seg:
                res = {"step": done} | evaluate_segmentation(
                    method, source, target, prepare=prepare, batch_size=tr.eval_batch_size,
                    num_classes=info.num_classes, class_names=info.class_names, device=device,
                    workers=cfg.data.workers)
            else:
                res = {"step": done} | evaluate_scores(method, source, target, prepare=prepare,
                                                       batch_size=tr.eval_batch_size)
            if done in stage_ends and len(stages) > 1:
                res["stage_end"] = stage_ends[done]
            with torch.no_grad():
                if seg:  # [0, 1] images: input, colourised labels, colourised predictions
                    pictures = {f"seg/{role}": seg_grid(method, dom, prepare, info.num_classes)
                                for role, dom in (("source", source), ("target", target))}
                    grids = method.images(*(prepare(first_test_images(d, 4)[0].to(device)) for d in (source, target)))
                else:
                    pictures = {}
                    grids = method.images(prepare(source.test_x[:8]), prepare(target.test_x[:8]))
        method.train()
        for k, v in res.items():
            if k in (f"source_{metric}", f"target_{metric}"):
                writer.add_scalar(f"eval/{k}", v, done)
            elif k.endswith("_iou") and isinstance(v, dict):
                for name, value in v.items():
                    if value is not None:
                        writer.add_scalar(f"iou_{k[: -len('_iou')]}/{name}", value, done)
            elif k != "step" and isinstance(v, float):
                writer.add_scalar(f"select/{k}", v, done)
        key, higher = criterion_key(tr.select.value, metric)
        score = res.get(key)
        if score is not None and math.isfinite(score) and (
                best.get("score") is None or (score >= best["score"] if higher else score <= best["score"])):
            best.update(criterion=tr.select.value, step=done, score=score)
            ckpt.save_atomic(state_at(done), ckpt_dir / "best.pt", keep_previous=False)
        for name, imgs in grids.items():  # back from the normalised space to [0, 1]
            pictures[name] = ((imgs.float() + prepare.shift) / (255.0 * prepare.scale)).clamp(0, 1)
        for name, imgs in pictures.items():
            writer.add_images(name, imgs, done)
            from torchvision.utils import save_image  # rows of 8: e.g. x, G(x), F(G(x))

            (run_dir / "images").mkdir(exist_ok=True)
            save_image(imgs.cpu(), run_dir / "images" / f"{name.replace('/', '_')}_{done:07d}.png",
                       nrow=4 if name.startswith("seg/") else 8)
        with open(metrics_path, "a") as f:
            f.write(json.dumps(res) + "\n")
        return res

    stop = _StopFlag()
    stop.install()
    progress = _Progress(tr.progress if main else Progress.none, tr.max_steps, start, every=10 * tr.log_every)
    train_s, images = train_s_before, images_before
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    n_sum, t_int, last = 0, time.perf_counter(), None
    marks: list[tuple[int, float]] = []  # (step, wall clock) at each logging point
    rank_checks = 0  # trainer.check_ranks_every checks passed
    saved = [start if resuming else None]  # step of the newest checkpoint on disk
    bad_run, skipped_total = 0, 0  # consecutive / total updates skipped for non-finite losses
    method.train()
    try:
        for step in range(start, tr.max_steps):
            t0 = time.perf_counter()
            stepper.set_lr({name: lr_factor(c, min(max(step - a, 0), b - a - 1), b - a)
                            for name, c in opt_cfgs.items() for a, b in [spans.get(name, (0, tr.max_steps))]})
            if src_files is not None:
                x_s, y_s = next(src_files)
            if tgt_files is not None:
                x_t, _ = next(tgt_files)
            if src_files is None or tgt_files is None:
                idx_s, idx_t = src_stream.indices(step), tgt_stream.indices(step)
                if world > 1:
                    idx_s, idx_t = idx_s[rank * B:(rank + 1) * B], idx_t[rank * B:(rank + 1) * B]
                if cfg.data.on_device:
                    idx_s, idx_t = idx_s.to(device, non_blocking=True), idx_t.to(device, non_blocking=True)
                if src_files is None:
                    x_s, y_s = source.train_x[idx_s], source.train_y[idx_s]
                if tgt_files is None:
                    x_t = target.train_x[idx_t]
            if augment:  # crops and flips drawn from (seed, step): a resumed run sees the same ones
                gen = torch.Generator().manual_seed((cfg.seed * 1_000_003 + step) * world + rank)
                x_s, x_t = random_crop_flip(x_s, info.image_size, gen), random_crop_flip(x_t, info.image_size, gen)
            y_s = y_s.to(device, non_blocking=True)
            src = Batch(prepare(x_s.to(device, non_blocking=True)), y_s.long() if seg else y_s)
            tgt = Batch(prepare(x_t.to(device, non_blocking=True)), None)  # target labels never enter training
            stepper.begin_iteration()
            with autocast(device, precision):
                out = method.update(src, tgt, step, stepper)
            stepper.end_iteration()
            if stepper.skipped:
                bad_run, skipped_total = bad_run + 1, skipped_total + 1
                terms = [k for k, v in out.items() if not bool(torch.isfinite(v).all())] or ["(unlogged term)"]
                log.warning("step %d: non-finite %s; update skipped (%d in a row)", step + 1, ", ".join(terms), bad_run)
                writer.add_scalar("perf/nonfinite_skipped", skipped_total, step + 1)
                if tr.nonfinite == NonFinite.stop or bad_run >= tr.nonfinite_patience:
                    where = f"{ckpt_path.parent} (step {saved[0]})" if saved[0] is not None else "none written yet"
                    why = ("trainer.nonfinite=stop" if tr.nonfinite == NonFinite.stop
                           else f"{bad_run} consecutive steps, trainer.nonfinite_patience={tr.nonfinite_patience}")
                    raise NonFiniteLoss(f"non-finite loss at step {step + 1} in {', '.join(terms)} ({why}); "
                                        f"last checkpoint: {where}. Lower the learning rate or loss weights, "
                                        f"or use trainer.precision=fp32")
            else:
                bad_run = 0
                for k, v in out.items():
                    sums[k] = sums[k] + v if k in sums else v.clone()
                    counts[k] = counts.get(k, 0) + 1
            n_sum += 1
            done = step + 1
            train_s += time.perf_counter() - t0
            images += images_per_step

            if done % tr.log_every == 0 or done == tr.max_steps:
                scalars = {k: v.item() / counts[k] for k, v in sums.items()}  # the interval's one sync for logging
                now = time.perf_counter()
                img_s = n_sum * images_per_step / max(now - t_int, 1e-9)
                for k, v in scalars.items():
                    writer.add_scalar(k, v, done)
                for name, opt in optimizers.items():
                    writer.add_scalar(f"lr/{name}", opt.param_groups[0]["lr"], done)
                writer.add_scalar("perf/images_per_s", img_s, done)
                if len(stages) > 1:
                    writer.add_scalar("sched/stage", sum(done > end for end in stage_ends), done)
                bad = [k for k, v in scalars.items() if not math.isfinite(v)]
                if bad:
                    log.warning("non-finite values at step %d: %s", done, ", ".join(bad))
                progress.update(done, n_sum, scalars, img_s)
                sums, counts, n_sum, t_int = {}, {}, 0, now
                marks.append((done, now))
            if (done % tr.eval_every == 0 or done in stage_ends) and main:
                last = evaluate(done)
                progress.write(f"step {done}: source_{metric} {last[f'source_{metric}']:.2f}  "
                               f"target_{metric} {last[f'target_{metric}']:.2f}")
            if world > 1 and tr.check_ranks_every and done % tr.check_ranks_every == 0:
                diff = dist.max_param_difference(method)
                if diff > 0:
                    raise RuntimeError(f"ranks disagree on the parameters after step {done} (max |diff| {diff:.3g})")
                rank_checks += 1
            requested = stop.signum is not None or (stop_after is not None and done >= stop_after)
            if world > 1:  # every rank stops at the same step
                requested = dist.any_flag(requested, device)
            if done % tr.checkpoint_every == 0 or done == tr.max_steps or requested:
                save(done)
            if requested and done < tr.max_steps:
                raise TrainingInterrupted(done, ckpt_path, stop.signum)
    finally:
        stop.restore()
        progress.close()
        writer.flush()
        writer.close()
        stop.hand_over()

    if not main:
        return dist.broadcast_object(None)  # rank 0's summary
    rows = read_metrics(metrics_path)
    if last is None:  # resumed a run that had already finished: reuse its final evaluation
        last = rows[-1] if rows and rows[-1]["step"] == tr.max_steps else evaluate(tr.max_steps)
        rows = read_metrics(metrics_path)
    selected = {}
    s_key, t_key = f"source_{metric}", f"target_{metric}"
    for crit in (*LABEL_FREE, "oracle"):
        row = select(rows, crit)
        if row is not None:
            selected[crit] = {"step": row["step"], t_key: row[t_key], s_key: row[s_key]}
    wall = wall_before + time.perf_counter() - t_start
    summary = {
        "method": cfg.method.name, "data": cfg.data.name, "seed": cfg.seed, "steps": tr.max_steps,
        s_key: last[s_key], t_key: last[t_key],
        **({"source_iou": last["source_iou"], "target_iou": last["target_iou"]} if seg else {}),
        "checkpoint": "last (no model selection; target labels are used only for this report)",
        # the evaluation each criterion picks; only "oracle" reads target labels (for reference)
        "selected": selected, "select": tr.select.value, "best_checkpoint": dict(best),
        "wall_s": round(wall, 2), "train_s": round(train_s, 2),
        "images_per_s": round(images / max(train_s, 1e-9), 1),
        # wall clock from the first logging point to the last (logging, evaluations, checkpoints included)
        "loop_images_per_s": (round((marks[-1][0] - marks[0][0]) * images_per_step / (marks[-1][1] - marks[0][1]), 1)
                              if len(marks) > 1 and marks[-1][1] > marks[0][1] else None),
        "device": str(device), "precision": precision.value, "threads": torch.get_num_threads(),
        "world_size": world, **({"rank_checks": rank_checks} if rank_checks else {}),
        "versions": versions(), "git_commit": commit,
    }
    # written last and atomically: its presence marks the run as finished (a sweep re-run skips it)
    tmp = run_dir / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(tmp, run_dir / "summary.json")
    return dist.broadcast_object(summary)
