"""Speed of a file-backed benchmark on this machine: DANN with a ResNet-50 at 224 px on an Office-Home-layout
fixture tree (``+experiment=dann_officehome``, random weights), and whether reading the images keeps up.

    python scripts/bench_files.py                        # 50 steps, batch 32 + 32, data.workers=0
    python scripts/bench_files.py --steps 50 --workers 1 --out bench_files.json

It writes ``--classes`` x ``--per-class`` JPEGs per domain (crops of the real photographs in the scikit-image
wheel, 400 x 300 like the release's photos) under a temporary data root, then measures

* reading: the DataLoader alone over the steps' seeded batches (decode + resize to 256, per image), images/s;
* training: ``uda.engine.loop.train`` for ``--steps`` steps (the loop's wall clock between its first and last
  logging point, ``loop_images_per_s``: reading, the crops, forward, backward and the optimizer steps),

and prints both with the CPU, its capability and the thread count. Reading keeps up when its rate is well above
the training rate (with ``data.workers=0`` it runs in the training process, so its time adds to each step).
Run it on a quiet machine.
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path


def write_tree(root: Path, *, classes: int, per_class: int) -> None:
    import numpy as np
    from PIL import Image
    from skimage import data as photos

    rng = np.random.default_rng(0)
    pool = [np.asarray(Image.fromarray(getattr(photos, n)()).convert("RGB")) for n in
            ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field")]
    for dom in ("Art", "Clipart"):
        for c in range(classes):
            d = root / "officehome" / dom / f"class_{c:02d}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                img = pool[rng.integers(len(pool))]
                top, left = rng.integers(0, img.shape[0] - 300 + 1), rng.integers(0, img.shape[1] - 400 + 1)
                Image.fromarray(img[top:top + 300, left:left + 400]).save(d / f"{i:04d}.jpg", quality=90)


def cpu() -> str:
    import torch

    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, capability {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--classes", type=int, default=65)
    ap.add_argument("--per-class", type=int, default=4)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    import torch

    from uda.compose import compose
    from uda.data.pairs import build_pair
    from uda.data.streams import IndexStream
    from uda.engine.loop import train
    from uda.schema import validate

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_tree(root, classes=args.classes, per_class=args.per_class)
        overrides = ["+experiment=dann_officehome", f"data.root={root}", f"trainer.max_steps={args.steps}",
                     f"trainer.batch_size={args.batch}", f"data.workers={args.workers}", "trainer.log_every=5",
                     f"trainer.eval_every={args.steps}", f"trainer.checkpoint_every={args.steps}",
                     "trainer.progress=none", "trainer.precision=fp32"]
        cfg = compose(overrides)
        validate(cfg)
        source, _, _ = build_pair(cfg.data)
        stream = IndexStream(source.train_size, args.batch, seed=cfg.seed, stream=1)
        t0, n = time.perf_counter(), 0
        for x, _ in source.step_batches(stream, 0, min(args.steps, 10), rank=0, batch=args.batch,
                                        workers=args.workers):
            n += len(x)
        read = n / (time.perf_counter() - t0)
        summary = train(cfg, root / "run")
    row = {"cpu": cpu(), "steps": args.steps, "batch": f"{args.batch} + {args.batch}", "workers": args.workers,
           "reading_img_s": round(read, 1), "training_img_s": summary["loop_images_per_s"],
           "train_s": summary["train_s"], "torch": torch.__version__}
    print(f"CPU: {row['cpu']}")
    print("| steps | batch | data.workers | reading alone (img/s) | training (img/s) | train_s |")
    print("|---|---|---|---|---|---|")
    print(f"| {args.steps} | {row['batch']} | {args.workers} | {row['reading_img_s']} | {row['training_img_s']} | "
          f"{row['train_s']} |")
    if args.out:
        args.out.write_text(json.dumps(row, indent=2) + "\n")


if __name__ == "__main__":
    main()
