"""Data-parallel training: 2 CPU processes with the gloo backend under torchrun."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from helpers import run_cli, state_equal
from uda.engine import checkpoint as ckpt

STEPS = 12


COMMON = [
    "method=dann",
    "data=synthetic",
    "seed=3",
    "data.train_subset=512",
    "data.test_subset=128",
    f"trainer.max_steps={STEPS}",
    "trainer.eval_every=6",
    "trainer.min_evals=0",
    "trainer.checkpoint_every=1",
    "trainer.log_every=2",
    "trainer.progress=none",
    "trainer.threads=1",
    "trainer.eval_batch_size=64",
    "data.val_size=50",
]


def torchrun(*args, run_dir, cwd, wait=True):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "uda.cli", "train", *args, f"hydra.run.dir={run_dir}"]
    env = os.environ | {"OMP_NUM_THREADS": "1", "CI": "true"}
    if not wait:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def final_method(run_dir):
    return ckpt.load_latest(run_dir / "checkpoints")[0]["method"]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("ddp")
    res = torchrun(*COMMON, "trainer.batch_size=8", "trainer.check_ranks_every=1", run_dir=d / "ddp", cwd=d)
    assert res.returncode == 0, res.stderr[-3000:]
    return d


@pytest.mark.slow  # torchrun, two processes
def test_two_gloo_ranks_finish_agree_every_step_and_only_rank0_writes(ddp_run):
    run = ddp_run / "ddp"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["rank_checks"] == STEPS  # identical parameters after each step
    assert [json.loads(ln)["step"] for ln in (run / "metrics.jsonl").read_text().splitlines()] == [6, 12]
    assert len(list((run / "tb").glob("events.out.tfevents.*"))) == 1  # TensorBoard from rank 0 only
    state = ckpt.load_latest(run / "checkpoints")[0]
    assert state["world_size"] == 2 and len(state["rng_ranks"]) == 2
    assert not torch.equal(state["rng_ranks"][0]["torch"], state["rng_ranks"][1]["torch"])


@pytest.mark.slow  # torchrun, two processes
def test_ddp_equals_one_process_with_the_same_global_batch(ddp_run):
    """2 ranks x 8 per domain vs 1 process x 16: same batches, gradients averaged -> same parameters."""
    single = ddp_run / "single"
    res = run_cli("train", *COMMON, "trainer.batch_size=16", f"hydra.run.dir={single}", cwd=ddp_run)
    assert res.returncode == 0, res.stderr[-2000:]
    a, b = final_method(ddp_run / "ddp"), final_method(single)
    worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    scale = max(float(a[k].float().abs().max()) for k in a)
    print(f"DDP vs single process: max |diff| {worst:.3g}, largest weight {scale:.3g}")
    assert worst <= 1e-4 * scale, f"max |diff| {worst} (largest weight {scale})"  # summation order only


@pytest.mark.slow  # torchrun, two processes
def test_ddp_resume_after_sigterm_matches_the_uninterrupted_run(ddp_run):
    run = ddp_run / "killed"
    proc = torchrun(*COMMON, "trainer.batch_size=8", run_dir=run, cwd=ddp_run, wait=False)
    last = run / "checkpoints" / ckpt.LAST
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        try:
            if torch.load(last, map_location="cpu", weights_only=True)["step"] >= 3:
                break
        except (OSError, RuntimeError, EOFError, KeyError):  # not written yet
            pass
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # torchrun forwards it to both ranks
    out, err = proc.communicate(timeout=300)
    step = ckpt.load_latest(run / "checkpoints")[0]["step"]
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    assert step < STEPS and "stopped at step" in err, err[-3000:]
    res = torchrun(*COMMON, "trainer.batch_size=8", "resume=true", run_dir=run, cwd=ddp_run)
    assert res.returncode == 0, res.stderr[-3000:]
    assert state_equal(final_method(run), final_method(ddp_run / "ddp"))
