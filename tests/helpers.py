"""What the tests share: the real configs composed then shrunk (lightning-hydra-template style), the CLI
in a subprocess, tiny batches, and steppers that record which parameter groups each sub-step changes."""
from __future__ import annotations

import bz2
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from uda.compose import compose
from uda.data.pairs import PairInfo
from uda.engine.runtime import Stepper
from uda.methods import Batch, get_method
from uda.schema import SEGMENTATION, TrainConfig

# a few steps on the synthetic pair generated in memory (no data root, no download): what `+debug=fast` runs
SMALL = ["data=synthetic", "+debug=fast"]
# the same on a small subset of the real MNIST -> MNIST-M (tests that take it need the mnist_root fixture)
MNIST_SMALL = ["+debug=fast", "data.test_subset=128"]
# a 40-step run that checkpoints every step: what the kill / preemption tests interrupt
KILL_ARGS = [*SMALL, "trainer.max_steps=40", "trainer.checkpoint_every=1", "trainer.eval_every=20", "trainer.threads=1"]

# the pair a method's networks are built for, without loading data: MNIST -> MNIST-M, and a 4-class
# segmentation pair of 32 x 32 images with digits_seg's tiny segmenter
INFO = PairInfo("mnist_mnistm", "mnist", "mnistm", 3, 28, 10, mean=(0.5,) * 3, std=(0.5,) * 3)
K = 4
SEG_INFO = PairInfo(
    "synthetic_seg",
    "synthetic_seg_source",
    "synthetic_seg_target",
    3,
    32,
    K,
    mean=(0.5,) * 3,
    std=(0.5,) * 3,
    task=SEGMENTATION,
    class_names=tuple("abcd"),
)
TINY_SEG = ["data=synthetic_seg", "backbone.channels=[4,8]"]


def make_cfg(*overrides: str) -> TrainConfig:
    """The typed config ``uda train <overrides>`` composes (not validated)."""
    return compose(list(overrides))


def build(*overrides: str, info: PairInfo = INFO):
    """The method ``overrides`` configure, seeded, built for ``info`` (no data is loaded)."""
    torch.manual_seed(0)
    cfg = make_cfg(*overrides)
    return get_method(cfg.method.name).from_config(cfg, info)


def run_cli(*args: str, cwd: Path, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, "-m", "uda.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, **kw)


def cli(*args: str, **_) -> subprocess.CompletedProcess:
    """``uda args`` in this process (seconds faster than ``run_cli``): for commands that train nothing (``uda
    data``, ``uda report``, a ``uda train`` refused before Hydra runs). Same result type as ``run_cli``."""
    import contextlib
    import io

    from uda.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as e:  # argparse's own errors
            code = e.code if isinstance(e.code, int) else 2
    return subprocess.CompletedProcess(["uda", *args], code, out.getvalue(), err.getvalue())


def spawn_train(*args: str, run_dir: Path, cwd: Path) -> subprocess.Popen:
    """``uda train`` in the background (1 thread), to be signalled or killed by a test."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "uda.cli", "train", *args, f"hydra.run.dir={run_dir}"],
                            cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def state_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def digit_batches(n: int = 6) -> tuple[Batch, Batch]:
    """A random labelled source batch and an unlabelled target batch of 3 x 28 x 28 images."""
    g = torch.Generator().manual_seed(0)
    return (Batch(torch.randn(n, 3, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)),
            Batch(torch.randn(n, 3, 28, 28, generator=g) * 0.5 + 0.3, None))


def seg_batches(n: int = 3, size: int = 32) -> tuple[Batch, Batch]:
    """A source batch with per-pixel labels (its top two rows 255 = ignored) and a target batch."""
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, K, (n, size, size), generator=g)
    y[:, :2] = 255
    return (Batch(torch.randn(n, 3, size, size, generator=g), y),
            Batch(torch.randn(n, 3, size, size, generator=g) * 0.5 + 0.3, None))


def joint(net, a, b):
    """Reference for ``forward_pair``: one pass over both batches, split back."""
    out, n = net(torch.cat([a, b])), a.shape[0]
    return tuple(type(out)(*(None if t is None else t[sl] for t in out)) for sl in (slice(None, n), slice(n, None)))


def snapshot(method) -> dict[str, list[torch.Tensor]]:
    return {g: [p.detach().clone() for p in ps] for g, ps in method.param_groups().items()}


def changed(before: dict[str, list[torch.Tensor]], method) -> set[str]:
    """The parameter groups of ``method`` that differ from ``before`` (a ``snapshot``)."""
    return {g for g, ps in method.param_groups().items() if any(not torch.equal(a, p) for a, p in zip(before[g], ps))}


def sgd_stepper(method, lr: float = 0.1, momentum: float = 0.9) -> Stepper:
    opts = {g: torch.optim.SGD(p, lr=lr, momentum=momentum) for g, p in method.param_groups().items()}
    return Stepper(opts, torch.amp.GradScaler("cpu", enabled=False), "cpu")


class SpyStepper(Stepper):
    """Plain SGD per group; records, for each ``step`` call, the groups it was asked to step and the
    groups whose parameters changed."""

    def __init__(self, method, lr: float = 0.05):
        opts = {g: torch.optim.SGD(p, lr=lr) for g, p in method.param_groups().items()}
        super().__init__(opts, torch.amp.GradScaler("cpu", enabled=False), "cpu")
        self.method, self.calls = method, []

    def step(self, loss, *groups):
        before = snapshot(self.method)
        super().step(loss, *groups)
        self.calls.append((set(groups), changed(before, self.method)))


class ApplySpy(Stepper):
    """Plain SGD per group; records the groups of each ``apply`` and which groups' parameters changed
    (for methods that call zero / backward / apply themselves, as AdaptSegNet does)."""

    def __init__(self, method, lr: float = 0.05):
        opts = {g: torch.optim.SGD(p, lr=lr) for g, p in method.param_groups().items()}
        super().__init__(opts, torch.amp.GradScaler("cpu", enabled=False), "cpu")
        self.method, self.calls = method, []

    def apply(self, *groups):
        before = snapshot(self.method)
        super().apply(*groups)
        self.calls.append((set(groups), changed(before, self.method)))


def build_seg(*overrides: str):
    """A segmentation method on ``SEG_INFO`` with digits_seg's tiny segmenter (``TINY_SEG``)."""
    return build(*TINY_SEG, *overrides, info=SEG_INFO)


# a few steps on the synthetic segmentation pair with the tiny segmenter
SEG_SMALL = [*TINY_SEG, "+debug=fast", "trainer.batch_size=4", "trainer.eval_batch_size=32", "data.train_subset=64",
             "data.test_subset=32", "data.val_size=8"]


def write_usps(d, n_train=40, n_test=20):
    """The libsvm bz2 release: 'label idx:value ...', labels 1..10, 256 values in [-1, 1]."""
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for fn, n in (("usps.bz2", n_train), ("usps.t.bz2", n_test)):
        lines = []
        for i in range(n):
            label = i % 10 + 1
            values = rng.uniform(-1, 1, 256)
            values[0] = -1.0 if label == 1 else 1.0  # fixed pixels to check the [-1, 1] -> uint8 mapping
            lines.append(f"{label} " + " ".join(f"{j + 1}:{v:.6f}" for j, v in enumerate(values)))
        with bz2.open(d / fn, "wt") as f:
            f.write("\n".join(lines) + "\n")


def resumes_exactly(overrides: list[str], tmp_path: Path, stop_after: int) -> dict:
    """Train ``overrides`` uninterrupted (``tmp_path/ref``) and stopped after ``stop_after`` steps then
    resumed (``tmp_path/cut``); assert both end with the same networks; the uninterrupted summary."""
    from uda.engine import checkpoint as ckpt
    from uda.engine.loop import TrainingInterrupted, train

    summary = train(make_cfg(*overrides), tmp_path / "ref")
    try:
        train(make_cfg(*overrides), tmp_path / "cut", stop_after=stop_after)
        raise AssertionError(f"the run did not stop after {stop_after} steps")
    except TrainingInterrupted:
        pass
    train(make_cfg(*overrides, "resume=true"), tmp_path / "cut")
    a, b = (ckpt.load(tmp_path / d / "checkpoints" / "last.pt")["method"] for d in ("ref", "cut"))
    assert state_equal(a, b)
    return summary
