"""Behaviour fingerprint: short fixed CPU runs of every method and the SHA-256 of each tensor they end with.

    python scripts/behaviour_hashes.py --out before.json            # run everything (about 3 minutes on 2 cores)
    python scripts/behaviour_hashes.py --out after.json --only dann,dsn
    python scripts/behaviour_hashes.py --compare before.json after.json   # exit 1 on any difference
    python scripts/behaviour_hashes.py --compare before.json after.json --rename method.g_st.=method.translator.g_st.

What it records, through the ``uda`` command only (so it measures any version of the code the same way;
point ``PYTHONPATH`` at another checkout to fingerprint that one):

* ``runs``: for each method, a few hundred steps on CPU in fp32 with a fixed seed and thread count on a
  subset of the real offline data (MNIST -> MNIST-M, digits_seg); then the digest of every tensor of the
  final checkpoint (networks, optimizer states, gradient scaler) keyed by its name, every row of
  ``metrics.jsonl`` (accuracies / mIoU and the selection scores) and the step ``best.pt`` holds.
* ``configs``: the composed config (``uda train ... --cfg job``) of every method, pair and recipe, as a
  dict, so that moving a default between a YAML file and its dataclass is seen to change nothing.

``--compare A B`` prints, per run and per config, ``identical`` or what differs. Two fingerprints are
only comparable when taken on the same machine (CPU kernels differ between CPU types).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from uda.io import tensor_bytes

# every run: CPU, fp32, 2 threads, seed 0, no progress bar
COMMON = ["device=cpu", "trainer.precision=fp32", "trainer.threads=2", "seed=0", "trainer.progress=none"]
DIGITS = ["data.train_subset=3000", "data.test_subset=500", "trainer.batch_size=32", "trainer.max_steps=200",
          "trainer.eval_every=100", "trainer.checkpoint_every=100", "trainer.eval_batch_size=250"]
SMALL_GAN = ["method.ngf=8", "method.n_blocks=2", "method.ndf=16"]
SEG = ["data=digits_seg", "data.train_subset=400", "data.test_subset=100", "trainer.batch_size=4",
       "trainer.max_steps=100", "trainer.eval_every=50", "trainer.checkpoint_every=50", "trainer.eval_batch_size=50"]

RUNS: dict[str, list[str]] = {
    "source_only": ["method=source_only", *DIGITS],
    "dann": ["method=dann", *DIGITS],
    "dsn": ["method=dsn", *DIGITS],
    "adda": ["method=adda", *DIGITS, "method.pretrain_steps=100"],
    "cyclegan": ["method=cyclegan", *DIGITS, "trainer.batch_size=8", "trainer.max_steps=100",
                 "trainer.eval_every=50", "trainer.checkpoint_every=50", *SMALL_GAN],
    "cycada": ["method=cycada", *DIGITS, "trainer.batch_size=8", "trainer.max_steps=150", "trainer.eval_every=50",
               "trainer.checkpoint_every=50", *SMALL_GAN, "method.source_steps=50", "method.translate_steps=50",
               "method.feature_adapt=true"],
    "source_only_seg": ["method=source_only", *SEG],
    "adaptsegnet": ["method=adaptsegnet", *SEG, "method.ndf=16"],
    "road": ["method=road", *SEG, "method.warmup_steps=40"],
    "lsd": ["method=lsd", *SEG, "method.ngf=16", "method.ndf=16", "method.gen_skips=true", "method.warmup_steps=20"],
}

_METHODS = ("source_only", "dann", "dsn", "adda", "cyclegan", "cycada")
_SEG_METHODS = ("source_only", "adaptsegnet", "road", "lsd")
_PAIRS = ("mnist_mnistm", "mnist_usps", "usps_mnist", "svhn_mnist", "syndigits_svhn", "amazon_dslr", "amazon_webcam",
          "dslr_amazon", "dslr_webcam", "webcam_amazon", "webcam_dslr")
_SEG_PAIRS = ("digits_seg", "gta5_cityscapes", "synthia_cityscapes")
_RECIPES = ("adaptsegnet_gta5_cityscapes", "adaptsegnet_synthia_cityscapes", "adda_mnist_mnistm_paper",
            "cycada_mnist_mnistm_cpu", "dann_mnist_mnistm_paper", "dann_office31", "digits_seg_cpu",
            "dsn_mnist_mnistm_paper", "lsd_gta5_cityscapes", "lsd_synthia_cityscapes", "road_gta5_cityscapes",
            "road_synthia_cityscapes")
CONFIGS: dict[str, list[str]] = {
    "default": [],
    **{f"method={m}": [f"method={m}"] for m in _METHODS},
    **{f"digits_seg method={m}": ["data=digits_seg", f"method={m}"] for m in _SEG_METHODS},
    **{f"data={p}": [f"data={p}"] for p in _PAIRS},
    **{f"data={p} method=source_only": [f"data={p}", "method=source_only"] for p in _SEG_PAIRS},
    "data=custom": ["data=custom", "data.source.path=a.npz", "data.target.path=b.npz"],
    **{f"+experiment={r}": [f"+experiment={r}"] for r in _RECIPES},
    **{f"backbone={b}": [f"backbone={b}"] for b in ("lenet", "resnet50")},
    **{f"optimizer={o}": [f"optimizer={o}"] for o in ("adam", "dann_sgd", "dsn_sgd", "lsd_adam", "seg_sgd")},
}


def uda(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "2", "HYDRA_FULL_ERROR": "1"}
    res = subprocess.run([sys.executable, "-m", "uda.cli", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"uda {' '.join(args)} failed ({res.returncode}):\n{res.stderr[-3000:]}")
    return res


def tensor_digest(t) -> str:
    """SHA-256 of a tensor's dtype, shape and raw bytes (``uda.io.tensor_bytes``)."""
    return hashlib.sha256(tensor_bytes(t)).hexdigest()


def tensors(obj, prefix: str = "") -> dict[str, str]:
    """name -> digest for every tensor nested in dicts and lists; plain numbers are kept as they are."""
    import torch

    out: dict[str, str] = {}
    if isinstance(obj, torch.Tensor):
        out[prefix] = tensor_digest(obj)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out |= tensors(v, f"{prefix}{k}.")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out |= tensors(v, f"{prefix}{i}.")
    elif isinstance(obj, (int, float, bool, str)) or obj is None:
        out[prefix] = repr(obj)
    return out


def fingerprint_run(name: str, overrides: list[str], work: Path) -> dict:
    import torch

    run_dir = work / name
    res = uda("train", *COMMON, *overrides, f"hydra.run.dir={run_dir}", cwd=work)
    state = torch.load(run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    best = torch.load(run_dir / "checkpoints" / "best.pt", map_location="cpu", weights_only=True)
    rows = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    print(f"  {name}: {res.stdout.strip().splitlines()[-1]}", flush=True)
    return {"overrides": overrides, "step": state["step"],
            "tensors": {"method." + k: v for k, v in tensors(state["method"]).items()}
            | {"optimizers." + k: v for k, v in tensors(state["optimizers"]).items()}
            | {"scaler." + k: v for k, v in tensors(state["scaler"]).items()},
            "metrics": rows, "best_step": best["step"]}


def composed(overrides: list[str], work: Path) -> dict:
    import yaml

    return yaml.safe_load(uda("train", *overrides, "--cfg", "job", cwd=work).stdout)


def diff(a, b, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(a.keys() | b.keys(), key=str):
            if k not in a or k not in b:
                out.append(f"{path}{k}: only in {'second' if k not in a else 'first'}")
            else:
                out += diff(a[k], b[k], f"{path}{k}.")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in diff(x, y, f"{path}{i}.")]
    return [] if a == b else [f"{path.rstrip('.')}: {a!r} -> {b!r}"]


def renamed(fp: dict, renames: list[str]) -> dict:
    """``fp`` with tensor names renamed by ``OLD=NEW`` prefix pairs (``method.g_st.=method.translator.g_st.``),
    for a deliberate change of a checkpoint's key names whose tensors stay the same."""
    pairs = [r.split("=", 1) for r in renames]
    for run in fp.get("runs", {}).values():
        out = {}
        for k, v in run["tensors"].items():
            for old, new in pairs:
                if k.startswith(old):
                    k = new + k[len(old):]
                    break
            out[k] = v
        run["tensors"] = out
    return fp


def compare(a_file: Path, b_file: Path, renames: list[str] = ()) -> int:
    a, b = renamed(json.loads(a_file.read_text()), list(renames)), json.loads(b_file.read_text())
    bad = 0
    for section in ("runs", "configs"):
        for name in sorted(a.get(section, {}).keys() | b.get(section, {}).keys()):
            if name not in a.get(section, {}) or name not in b.get(section, {}):
                print(f"{section}/{name}: only in {'the second' if name not in a[section] else 'the first'} file")
                continue
            d = diff(a[section][name], b[section][name])
            bad += bool(d)
            extra = f" ({len(a[section][name]['tensors'])} tensors)" if section == "runs" else ""
            print(
                f"{section}/{name}: "
                + ("identical" + extra if not d else f"{len(d)} difference(s): " + "; ".join(d[:8]))
            )
    print("all identical" if not bad else f"{bad} differing entr{'y' if bad == 1 else 'ies'}")
    return 1 if bad else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, help="write the fingerprint here (JSON)")
    ap.add_argument("--only", default="", help="comma list of run names (default: all): " + ", ".join(RUNS))
    ap.add_argument("--no-configs", action="store_true", help="skip the composed-config dumps")
    ap.add_argument("--compare", nargs=2, type=Path, metavar=("A", "B"), help="compare two fingerprint files")
    ap.add_argument("--rename", action="append", default=[], metavar="OLD=NEW",
                    help="with --compare: rename A's tensor-name prefix OLD to NEW first (repeatable)")
    args = ap.parse_args()
    if args.compare:
        return compare(*args.compare, renames=args.rename)
    if not args.out:
        ap.error("--out FILE (or --compare A B) is required")
    names = args.only.split(",") if args.only else list(RUNS)
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        ap.error(f"unknown run(s) {unknown}; valid: {', '.join(RUNS)}")
    result: dict = {"runs": {}, "configs": {}}
    with tempfile.TemporaryDirectory(prefix="uda_hashes_") as tmp:
        work = Path(tmp)
        for name in names:
            result["runs"][name] = fingerprint_run(name, RUNS[name], work)
        if not args.no_configs:
            for name, overrides in CONFIGS.items():
                result["configs"][name] = composed(overrides, work)
            print(f"  {len(CONFIGS)} composed configs", flush=True)
    args.out.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
