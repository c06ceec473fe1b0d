"""The steps of scripts/gpu_check.sh (which sets up the device machine first); prints one summary table.

    python scripts/gpu_check.py                  # on a GPU
    GPU_CHECK_DEVICE=cpu python scripts/gpu_check.py   # the plumbing on a CPU: a few steps, no CUDA tests
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEVICE = os.environ.get("GPU_CHECK_DEVICE", "cuda")
DRY = DEVICE != "cuda"  # a CPU dry run: a few steps each
STEPS = 10 if DRY else 400
INIT_SCALE = 2.0 ** 16  # torch.amp.GradScaler's initial loss scale
# method -> overrides for a few hundred fp16 steps (CPU recipes' sizes for the GAN and segmentation methods)
RUNS = {
    "dann": ["method=dann"],
    "dsn": ["method=dsn"],
    "cycada": ["+experiment=cycada_mnist_mnistm_cpu", f"method.source_steps={STEPS // 4}",
               f"method.translate_steps={STEPS // 2}", "method.feature_adapt=true"],
    "adaptsegnet": ["+experiment=digits_seg_cpu", "method=adaptsegnet"],
}


def part(name: str, fn, *args) -> list[dict]:
    """Run one part of the check; a failure or a timeout is a row of the table, never the end of the script."""
    t0 = time.time()
    try:
        rows = fn(*args)
        return rows if isinstance(rows, list) else [rows]
    except subprocess.TimeoutExpired as e:
        cmd = " ".join(map(str, e.cmd[2:6]))
        return [{"step": name, "result": f"TIMED OUT after {e.timeout:.0f} s", "detail": cmd}]
    except Exception as e:  # noqa: BLE001  (any error of a part is reported in its row)
        return [{"step": name, "result": "FAILED", "detail": f"{type(e).__name__}: {str(e).splitlines()[0][:200]} "
                 f"(after {time.time() - t0:.0f} s)"}]


def sh(cmd: list[str], timeout: float, cwd: Path | None = None) -> subprocess.CompletedProcess:
    t0 = time.time()
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    print(f"[{time.time() - t0:5.0f} s] {' '.join(cmd[:8])}{' ...' if len(cmd) > 8 else ''} -> {res.returncode}",
          flush=True)
    return res


def loss_scales(tb: Path) -> list[float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb))
    acc.Reload()
    return [e.value for e in acc.Scalars("amp/loss_scale")] if "amp/loss_scale" in acc.Tags()["scalars"] else []


def cuda_tests() -> dict:
    if DRY:
        return {"step": "CUDA-marked tests", "result": "skipped (dry run on CPU)"}
    res = sh([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "tests/engine/test_cuda.py"], timeout=300)
    last = (res.stdout.strip().splitlines() or ["(no output)"])[-1]
    if res.returncode:
        print(res.stdout[-3000:], res.stderr[-2000:])
    return {"step": "CUDA-marked tests", "result": ("ok: " if res.returncode == 0 else "FAILED: ") + last}


def fp16_run(name: str, overrides: list[str], work: Path) -> dict:
    run_dir = work / name
    res = sh([sys.executable, "-m", "uda.cli", "train", *overrides, f"device={DEVICE}",
              f"trainer.precision={'auto' if not DRY else 'fp32'}", f"trainer.max_steps={STEPS}",
              f"trainer.eval_every={STEPS // 2}", f"trainer.checkpoint_every={STEPS // 2}", "trainer.log_every=10",
              "trainer.progress=none", f"hydra.run.dir={run_dir}"], timeout=400)
    if res.returncode:
        print(res.stderr[-3000:])
        return {"step": f"fp16 {name}", "result": f"FAILED (exit {res.returncode})"}
    s = json.loads((run_dir / "summary.json").read_text())
    scales = loss_scales(run_dir / "tb")
    metric = "miou" if "target_miou" in s else "acc"
    # the scaler starts at 2^16 and, within its growth interval (2000 steps), only halves: once per skipped step
    # (overflowing gradients, or a non-finite loss); so log2(2^16 / final scale) counts the skipped steps
    scale = s["loss_scale"]  # None where no gradient scaler ran (fp32: the CPU dry run)
    overflows = round(math.log2(INIT_SCALE / scale)) if scale and STEPS < 2000 else None
    ok = (s["precision"] == ("fp32" if DRY else "fp16") and s["skipped_longest_run"] < 10
          and s["skipped_updates"] <= STEPS // 10 and (overflows is None or overflows <= STEPS // 10))
    scaler = (f"loss scale {INIT_SCALE:g} -> {scale:g} ({'moved' if len(set(scales)) > 1 else 'constant'} "
              f"between logging points): {overflows} steps skipped by the scaler, " if scale else "no scaler: ")
    return {
        "step": f"{'fp32 (dry run)' if DRY else 'fp16'} {name}",
        "result": "ok" if ok else "CHECK",
        "detail": f"{STEPS} steps, {s['precision']}, {s['images_per_s']:.0f} img/s, "
                  f"target_{metric} {s[f'target_{metric}']:.2f}; {scaler}{s['skipped_updates']} skipped for a "
                  f"non-finite loss (longest run {s['skipped_longest_run']})",
    }


def bench(out: Path) -> list[dict]:
    settings = "fp32" if DRY else "fp16,fp32"
    steps = ["--steps", "40", "--warmup", "20", "--repeats", "1"] if DRY else ["--steps", "200", "--warmup", "40"]
    res = sh([sys.executable, "scripts/bench.py", "--device", DEVICE, "--methods", "dann,dsn", "--settings", settings,
              *steps, "--out", str(out)], timeout=400)
    if res.returncode:
        print(res.stderr[-3000:])
        return [{"step": "bench", "result": f"FAILED (exit {res.returncode})"}]
    return [{"step": f"bench {r['method']} {r['setting']}", "result": "ok" if r["ratio"] >= 0.9 else "CHECK",
             "detail": f"bare {r['bare_img_s']:.0f} img/s, trainer {r['framework_img_s']:.0f} img/s, "
                       f"ratio {r['ratio']:.2f}, {r['bare_skipped_updates']} bare updates skipped (non-finite loss)"}
            for r in json.loads(out.read_text())]


def ddp(work: Path) -> dict:
    import torch

    if DRY or torch.cuda.device_count() < 2:
        return {"step": "DDP, 2 processes", "result": f"skipped ({torch.cuda.device_count() if not DRY else 0} GPU)"}
    res = sh([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "uda.cli",
              "train", "method=dann", "trainer.max_steps=100", "trainer.eval_every=50", "trainer.check_ranks_every=10",
              "trainer.progress=none", f"hydra.run.dir={work / 'ddp'}"], timeout=400)
    if res.returncode:
        print(res.stderr[-3000:])
        return {"step": "DDP, 2 processes", "result": f"FAILED (exit {res.returncode})"}
    s = json.loads((work / "ddp" / "summary.json").read_text())
    return {"step": "DDP, 2 processes", "result": "ok" if s.get("rank_checks") == 10 else "CHECK",
            "detail": f"world {s['world_size']}, {s['rank_checks']} rank checks passed, {s['images_per_s']:.0f} img/s"}


def main() -> int:
    import torch

    out = Path(os.environ["OUT"]) if os.environ.get("OUT") else None
    if not DRY and not torch.cuda.is_available():
        print("no CUDA device: run on a GPU machine, or GPU_CHECK_DEVICE=cpu for a dry run", file=sys.stderr)
        return 2
    if DRY:
        gpu = "none (dry run on CPU, fp32)"
    else:
        major, minor = torch.cuda.get_device_capability(0)
        gpu = f"{torch.cuda.get_device_name(0)} (kind cuda, capability sm_{major}{minor})"
    head = (f"GPU check: {gpu} x {torch.cuda.device_count()}, torch {torch.__version__}, "
            f"CUDA {torch.version.cuda}, {time.strftime('%Y-%m-%d %H:%M')}")
    print(head, flush=True)
    t0 = time.time()
    rows = part("CUDA-marked tests", cuda_tests)
    with tempfile.TemporaryDirectory(prefix="uda_gpu_check_") as tmp:
        work = Path(tmp)
        for name, overrides in RUNS.items():
            rows += part(f"{'fp32 (dry run)' if DRY else 'fp16'} {name}", fp16_run, name, overrides, work)
        rows += part("bench", bench, work / "bench.json")
        rows += part("DDP, 2 processes", ddp, work)
    table = [head, "", "| step | result | detail |", "|---|---|---|"]
    table += [f"| {r['step']} | {r['result']} | {r.get('detail', '')} |" for r in rows]
    table.append(f"\n{time.time() - t0:.0f} s in all")
    print("\n".join(table))
    if out:
        (out / "gpu_check.md").write_text("\n".join(table) + "\n")
        (out / "gpu_check.json").write_text(json.dumps(rows, indent=1) + "\n")
    return 0 if all(r["result"].startswith(("ok", "skipped")) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
