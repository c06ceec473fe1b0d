"""``trainer``: the loop's budget, precision, logging, checkpoints and model selection (``configs/trainer/``)."""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from uda.errors import ConfigError
from uda.schema.base import positive
from uda.selection import LABEL_FREE


class NonFinite(str, Enum):
    skip = "skip"  # drop the update, log it; stop after `nonfinite_patience` in a row
    stop = "stop"  # stop at the first non-finite loss


# trainer.select's choices: the label-free criteria of uda.selection.TABLE (the
# segmentation ones: those with a per-pixel reading)
Select = Enum("Select", [(name, name) for name in LABEL_FREE], type=str)


class Precision(str, Enum):
    # CUDA: fp16 with gradient scaling; CPU: bf16 where the CPU runs it natively (AVX-512 BF16
    # or AMX) and it measured faster for the run's network family without losing fp32's
    # accuracy, else fp32 (uda/engine/precision.py)
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class Progress(str, Enum):
    auto = "auto"  # a live bar on a terminal, plain log lines otherwise (CI, files)
    bar = "bar"
    log = "log"
    none = "none"


@dataclass
class TrainerConfig:
    max_steps: int = 10000  # training iterations (each: one source and one target batch)
    batch_size: int = 64  # per domain: DANN's 128 = 64 source + 64 target
    eval_every: int = 1000  # steps between evaluations on both test splits and the label-free scores
    # evaluate at least this many times: eval_every lowered to max_steps // min_evals (0: off)
    min_evals: int = 5
    checkpoint_every: int = 1000  # steps between writes of checkpoints/last.pt (prev.pt keeps the one before)
    log_every: int = 50  # steps between loss lines and TensorBoard scalars
    eval_batch_size: int = 1000  # images per forward pass in evaluation
    # auto: fp16 + scaling on CUDA; on a CPU the one measured fastest for the network
    precision: Precision = Precision.auto
    # true | false | auto: on where it measured faster for the run's network family on this
    # kind of machine, off elsewhere (uda/engine/precision.py)
    channels_last: str = "auto"  # (a string: true/false on the command line arrive as "True"/"False")
    # torch intra-op threads (0 = torch's default, which honours OMP_NUM_THREADS)
    threads: int = 0
    images: bool = True  # image grids: the training images at the start, test predictions at each evaluation
    progress: Progress = Progress.auto  # auto: a live bar on a terminal, log lines otherwise | bar | log | none
    # also keep checkpoints/step_XXXXXXX.pt every N steps (0 = only last.pt)
    keep_every: int = 0
    # a non-finite loss: skip the update (stop after `nonfinite_patience` in a row) | stop
    nonfinite: NonFinite = NonFinite.skip
    nonfinite_patience: int = 20  # nonfinite=skip: stop after this many skipped updates in a row
    # which evaluation checkpoints/best.pt keeps, by a label-free criterion
    # (uda/selection.py's TABLE). entropy: the lowest measured regret of those that work for
    # both tasks, by a rule fixed before the runs (docs/notes/selection.md)
    select: Select = Select.entropy
    # under torchrun: every N steps check that all ranks hold identical parameters (0 = never;
    # a debugging aid that all-gathers the parameters)
    check_ranks_every: int = 0

    def eval_interval(self) -> int:
        """Steps between evaluations: ``eval_every``, lowered so that a short run is evaluated ``min_evals`` times
        (the criteria need evaluations to choose from); the last step is always evaluated."""
        if self.min_evals and self.max_steps // self.eval_every < self.min_evals:
            return max(1, min(self.eval_every, self.max_steps // self.min_evals))
        return self.eval_every

    def forced_channels_last(self) -> bool | None:
        """``channels_last`` as set: True or False, None for auto."""
        value = str(self.channels_last).lower()
        if value not in ("auto", "true", "false"):
            raise ConfigError(f"trainer.channels_last must be auto, true or false, got {self.channels_last!r}")
        return None if value == "auto" else value == "true"

    def check(self) -> None:
        for key in ("max_steps", "batch_size", "eval_every", "checkpoint_every", "log_every", "eval_batch_size",
                    "nonfinite_patience"):
            positive(getattr(self, key), f"trainer.{key}")
        self.forced_channels_last()  # raises unless auto, true or false
        for key in ("keep_every", "threads", "check_ranks_every", "min_evals"):
            if getattr(self, key) < 0:
                raise ConfigError(f"trainer.{key} must be >= 0, got {getattr(self, key)}")
