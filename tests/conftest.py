"""Shared test helpers: compose the real configs, then shrink them (lightning-hydra-template style)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from uda.cli import CONFIG_DIR
from uda.config import TrainConfig, register_configs

# a few steps on a small real subset of MNIST -> MNIST-M
SMALL = [
    "trainer.max_steps=6", "trainer.batch_size=8", "trainer.eval_every=3", "trainer.checkpoint_every=3",
    "trainer.log_every=2", "trainer.progress=none", "trainer.eval_batch_size=64",
    "data.train_subset=256", "data.test_subset=128",
]


def make_cfg(*overrides: str) -> TrainConfig:
    register_configs()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=list(overrides))
    return OmegaConf.to_object(cfg)


def run_cli(*args: str, cwd: Path, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, "-m", "uda.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, **kw)


# a 40-step run that checkpoints every step: what the kill / preemption tests interrupt
KILL_ARGS = [*SMALL, "trainer.max_steps=40", "trainer.checkpoint_every=1", "trainer.eval_every=20", "trainer.threads=1"]


def spawn_train(*args: str, run_dir: Path, cwd: Path) -> subprocess.Popen:
    """``uda train`` in the background (1 thread), to be signalled or killed by a test."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "uda.cli", "train", *args, f"hydra.run.dir={run_dir}"],
                            cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="session")
def uninterrupted(tmp_path_factory, mnist_root) -> dict:
    """The final checkpoint of KILL_ARGS run without interruption (the reference for resumed runs)."""
    from uda.engine import checkpoint as ckpt

    d = tmp_path_factory.mktemp("uninterrupted")
    ref = run_cli("train", *KILL_ARGS, f"hydra.run.dir={d / 'ref'}", cwd=d)
    assert ref.returncode == 0, ref.stderr[-2000:]
    return ckpt.load(d / "ref" / "checkpoints" / "last.pt")


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """The real MNIST (and the offline MNIST-M build), prepared by the product's own code path.

    Under CI=true this must succeed: tests that need data run, they never skip.
    """
    from uda.data.common import data_root
    from uda.data.mnist import ensure_mnist

    root = data_root()
    ensure_mnist(root)
    return root


def state_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
