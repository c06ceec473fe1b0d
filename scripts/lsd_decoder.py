"""Can LSD's generator reconstruct images from a finished run's embedding? A diagnostic for `method=lsd`.

    python scripts/lsd_decoder.py outputs/<lsd run>                          # dropout 0.5 and 0
    python scripts/lsd_decoder.py outputs/<lsd run> --dropout 0.5,0.2,0 --steps 750

Loads the run's last checkpoint, freezes its segmenter F, and trains a fresh ``FeatureDecoder`` G of the
run's width on F's embedding of both domains' training images with the L1 reconstruction loss alone
(the run's G optimizer settings), once per ``--dropout`` value. Prints each G's L1 (source, target, in
the pair's normalised image space) next to the L1 of painting every image its own mean colour: a G that
cannot beat that baseline gives D blurs to reject, whatever F does.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="an LSD run directory (its checkpoints/last.pt is read)")
    ap.add_argument("--dropout", default="0.5,0", help="comma-separated G dropout values to compare")
    ap.add_argument("--steps", type=int, default=750)
    ap.add_argument("--batch", type=int, default=16, help="images per domain per step")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch
    from omegaconf import OmegaConf

    from hydra import compose, initialize_config_dir

    from uda.cli import CONFIG_DIR
    from uda.config import LSDConfig, register_configs
    from uda.data.pairs import build_pair
    from uda.engine import checkpoint as ckpt
    from uda.nets.segmentation import FeatureDecoder, build_segmenter

    torch.set_num_threads(args.threads)
    over_file = args.run / ".hydra" / "overrides.yaml"
    if not over_file.is_file():
        raise SystemExit(f"{args.run} is not a uda run directory (no .hydra/overrides.yaml)")
    overrides = [o for o in OmegaConf.to_container(OmegaConf.load(over_file)) if not o.startswith(("hydra.", "resume="))]
    register_configs()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):  # the run's config, as `uda eval`
        cfg = OmegaConf.to_object(compose("train", overrides=overrides))
    state = ckpt.load(args.run / "checkpoints" / "last.pt")
    if not isinstance(cfg.method, LSDConfig):
        raise SystemExit(f"{args.run} is a method={cfg.method.name} run; this diagnostic needs method=lsd")
    source, target, info = build_pair(cfg.data)
    net = build_segmenter(cfg.backbone, in_channels=info.channels, num_classes=info.num_classes)
    net.load_state_dict({k.removeprefix("segmenter."): v for k, v in state["method"].items()
                         if k.startswith("segmenter.")})
    net.eval().requires_grad_(False)
    mean = torch.tensor(cfg.data.mean).view(1, -1, 1, 1)
    std = torch.tensor(cfg.data.std).view(1, -1, 1, 1)
    norm = lambda x: (x.float() / 255 - mean) / std  # noqa: E731
    with torch.no_grad():
        f = net(norm(source.train_x[:1])).features
    width, h = f.shape[1], f.shape[-1]
    size = tuple(source.train_x.shape[-2:])
    n_up = max(0, round(math.log2(size[-1] / h)))  # as LSD.from_config
    n = min(len(source.train_x), len(target.train_x))
    print(f"{args.run}: F frozen at step {state['step']}, embedding {width} x {h} x {h}, G ngf={cfg.method.ngf}")
    for p in (float(v) for v in args.dropout.split(",")):
        torch.manual_seed(0)
        gen = FeatureDecoder(width, info.channels, ngf=cfg.method.ngf, n_up=n_up, dropout=p).train()
        o = cfg.method.gan_optimizer
        opt = torch.optim.Adam(gen.parameters(), lr=o.lr, betas=tuple(o.betas))
        g = torch.Generator().manual_seed(0)
        t0 = time.time()
        for step in range(1, args.steps + 1):
            i = torch.randint(0, n, (args.batch,), generator=g)
            xs, xt = norm(source.train_x[i]), norm(target.train_x[i])
            with torch.no_grad():
                fs, ft = net(torch.cat([xs, xt])).features.chunk(2)
            ls, lt = (gen(fs, size) - xs).abs().mean(), (gen(ft, size) - xt).abs().mean()
            opt.zero_grad()
            (ls + lt).backward()
            opt.step()
            if step % 250 == 0 or step == args.steps:
                print(f"dropout {p}: step {step}  L1 source {ls.item():.3f}  target {lt.item():.3f}  "
                      f"({time.time() - t0:.0f} s)", flush=True)
    i = torch.arange(min(n, 1000))
    xs, xt = norm(source.train_x[i]), norm(target.train_x[i])
    base = [(x - x.mean((2, 3), keepdim=True)).abs().mean().item() for x in (xs, xt)]
    print(f"mean-colour baseline: L1 source {base[0]:.3f}  target {base[1]:.3f}")


if __name__ == "__main__":
    main()
