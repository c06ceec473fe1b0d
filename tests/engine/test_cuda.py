"""The CUDA path: fp16 with gradient scaling, datasets kept on the GPU, evaluation with data left on the
host, resume, and SyncBatchNorm under 2-process DDP. Marked ``cuda``: skipped without a GPU (CI);
``scripts/gpu_check.sh`` runs them on one."""
import json
import os
import subprocess
import sys

import pytest
import torch

from helpers import SEG_SMALL, SMALL, make_cfg
from uda.data.pairs import Normalize, build_pair
from uda.engine import checkpoint as ckpt
from uda.engine.batches import PairBatches
from uda.engine.loop import TrainingInterrupted, train
from uda.engine.runtime import Stepper

pytestmark = pytest.mark.cuda
CUDA = ["device=cuda", "trainer.precision=auto"]


def test_fp16_training_scales_the_loss_and_stays_finite(tmp_path):
    summary = train(make_cfg(*SMALL, *CUDA, "trainer.max_steps=60", "trainer.eval_every=30"), tmp_path)
    assert summary["device"].startswith("cuda") and summary["precision"] == "fp16"
    assert summary["loss_scale"] > 0 and summary["skipped_updates"] < 20
    state = ckpt.load(tmp_path / "checkpoints" / "last.pt")
    assert state["scaler"]["scale"] == summary["loss_scale"]
    assert all(torch.isfinite(v).all() for v in state["method"].values() if v.is_floating_point())


def test_in_memory_datasets_live_on_the_gpu_and_batches_are_gathered_there():
    cfg = make_cfg(*SMALL, *CUDA)
    source, target, info = build_pair(cfg.data)
    source, target = source.to(torch.device("cuda")), target.to(torch.device("cuda"))
    assert source.train_x.is_cuda and target.test_x.is_cuda
    prepare = Normalize(info.mean, info.std, torch.device("cuda"))
    batches = PairBatches(source, target, seed=0, batch=8, world=1, rank=0, start=0, end=2, workers=0,
                          device=torch.device("cuda"), prepare=prepare, augment_size=None, per_pixel=False)
    src, tgt = next(batches)
    assert src.x.is_cuda and src.y.is_cuda and tgt.x.is_cuda and tgt.y is None and src.x.dtype == torch.float32


def test_an_overflowing_fp16_step_is_skipped_and_the_scale_backs_off():
    net = torch.nn.Linear(3, 1).cuda()
    scaler = torch.amp.GradScaler("cuda", init_scale=1024.0)
    stepper = Stepper({"net": torch.optim.SGD(net.parameters(), lr=0.1)}, scaler, "cuda")
    before = net.weight.detach().clone()
    stepper.begin_iteration()
    stepper.step(net(torch.ones(2, 3, device="cuda")).sum() * float("inf"), "net")
    stepper.end_iteration()
    assert stepper.skipped == 1 and torch.equal(before, net.weight) and scaler.get_scale() == 512.0


def test_segmentation_with_data_on_the_host_evaluates_and_resumes(tmp_path):
    # +debug=fast (in SEG_SMALL) draws no image grids; this test checks that they come from host data too
    args = ["method=adaptsegnet", "method.ndf=4", *SEG_SMALL, *CUDA, "data.on_device=false", "trainer.images=true"]
    ref = train(make_cfg(*args), tmp_path / "ref")
    assert ref["device"].startswith("cuda") and 0 <= ref["target_miou"] <= 100
    assert (tmp_path / "ref" / "images" / "seg_target_0000006.png").is_file()
    with pytest.raises(TrainingInterrupted):
        train(make_cfg(*args), tmp_path / "cut", stop_after=4)
    resumed = train(make_cfg(*args, "resume=true"), tmp_path / "cut")
    assert resumed["steps"] == 6 and ckpt.load(tmp_path / "cut" / "checkpoints" / "last.pt")["step"] == 6


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_two_gpu_ddp_with_sync_batchnorm_keeps_the_ranks_identical(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "uda.cli",
           "train", "method=adaptsegnet", "method.ndf=4", *SEG_SMALL, *CUDA, "trainer.check_ranks_every=1",
           f"hydra.run.dir={tmp_path / 'ddp'}"]
    res = subprocess.run(cmd, cwd=tmp_path, env=os.environ | {"CI": "true"}, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["rank_checks"] == 6
