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

    import dataclasses

    import torch

    from uda.data.pairs import Normalize, build_pair
    from uda.engine import checkpoint as ckpt
    from uda.eval_run import run_config
    from uda.methods.lsd import LSD, LSDConfig, generator_for

    torch.set_num_threads(args.threads)
    cfg = run_config(args.run)  # the run's config, as `uda eval` recomposes it
    if not isinstance(cfg.method, LSDConfig):
        raise SystemExit(f"{args.run} is a method={cfg.method.name} run; this diagnostic needs method=lsd")
    state = ckpt.load(args.run / "checkpoints" / "last.pt")
    source, target, info = build_pair(cfg.data)
    trained = LSD.from_config(cfg, info)
    trained.load_state_dict(state["method"])
    net = trained.segmenter.eval().requires_grad_(False)
    norm = Normalize(info.mean, info.std, torch.device("cpu"))
    size = tuple(source.train_x.shape[-2:])
    n = min(len(source.train_x), len(target.train_x))
    print(f"{args.run}: F frozen at step {state['step']}, G ngf={cfg.method.ngf}")
    for p in (float(v) for v in args.dropout.split(",")):
        torch.manual_seed(0)  # a fresh G built as the method builds it, with dropout p
        gen = generator_for(net, info.channels, dataclasses.replace(cfg.method, dropout=p)).train()
        o = cfg.method.gan_optimizer
        opt = torch.optim.Adam(gen.parameters(), lr=o.lr, betas=tuple(o.betas))
        g = torch.Generator().manual_seed(0)
        t0 = time.time()
        for step in range(1, args.steps + 1):
            i = torch.randint(0, n, (args.batch,), generator=g)
            xs, xt = norm(source.train_x[i]), norm(target.train_x[i])
            with torch.no_grad():  # (embedding, skip maps) of each domain, one joint pass
                (_, fs), (_, ft) = trained.embed_pair(xs, xt)
            ls, lt = (gen(fs[0], size, fs[1]) - xs).abs().mean(), (gen(ft[0], size, ft[1]) - xt).abs().mean()
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
