"""Fixtures: the real offline data and the reference run the interruption tests compare with.
Shared helpers (configs, the CLI, tiny batches, spies) are in ``helpers.py``."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from helpers import KILL_ARGS, run_cli


def pytest_configure(config):
    """Under pytest-xdist each worker trains with one torch thread: two workers share 2 cores without contention."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)
        os.environ["OMP_NUM_THREADS"] = "1"


def pytest_collection_modifyitems(config, items):
    """A test that reads the real MNIST (the ``mnist_root`` fixture) is marked ``real_data``, so the fast set
    (``pytest -q``) needs no data. Tests marked ``cuda`` need a GPU: skipped, saying so, where there is none."""
    for item in items:
        if "mnist_root" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.real_data)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (scripts/gpu_check.sh runs these on one)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """The real MNIST (and the offline MNIST-M build), prepared by the product's own code path.

    Under CI=true this must succeed: tests that need data run, they never skip.
    """
    from uda.data.files import data_root
    from uda.data.mnist import ensure_mnist

    root = data_root()
    ensure_mnist(root)
    return root


@pytest.fixture(scope="session")
def uninterrupted(tmp_path_factory) -> dict:
    """The final checkpoint of KILL_ARGS run without interruption (the reference for resumed runs)."""
    from uda.engine import checkpoint as ckpt

    d = tmp_path_factory.mktemp("uninterrupted")
    ref = run_cli("train", *KILL_ARGS, f"hydra.run.dir={d / 'ref'}", cwd=d)
    assert ref.returncode == 0, ref.stderr[-2000:]
    return ckpt.load(d / "ref" / "checkpoints" / "last.pt")
