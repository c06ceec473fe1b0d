"""CycleGAN's translator (Zhu et al., ICCV 2017) as a part that pixel-level methods hold: two generators
G_st, G_ts, two PatchGAN discriminators D_s, D_t, two pools of past fakes, and its training step.

One ``step`` (the order of the CycleGAN code):
  a) generators, both discriminators frozen: LSGAN(D_t(G_st(x_s)), real) + LSGAN(D_s(G_ts(x_t)), real)
     + cycle_weight (|G_ts(G_st(x_s)) - x_s|_1 + |G_st(G_ts(x_t)) - x_t|_1)
     + identity_weight x cycle_weight (|G_st(x_t) - x_t|_1 + |G_ts(x_s) - x_s|_1)  [+ the owner's extra terms];
  b) discriminators: 0.5 (LSGAN(D(real), real) + LSGAN(D(pool(fake)), fake)) for D_t and D_s, the fakes
     drawn through a 50-image pool of past translations.

The translator works on images in [-1, 1] (CycleGAN's convention); the classifiers read the pair's
normalised space. Both maps are per-channel affine (identities for mean = std = 0.5).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from uda.losses import l1, lsgan
from uda.methods.base import Batch, Optimizers
from uda.nets import set_requires_grad
from uda.nets.cyclegan import generator, patch_discriminator
from uda.schema.base import nonneg, positive
from uda.schema.method import MethodConfig, one_learning_rate
from uda.schema.optimizer import OptimizerConfig, Schedule, adam


@dataclass
class TranslatorConfig(MethodConfig):
    """CycleGAN (Zhu et al. 2017): ResNet-block generators (c7s1-64, 2 downsamplings, 6 blocks: the paper's
    net for images of 128 px and below), PatchGAN discriminators, LSGAN. Ours for 28-32 px digits: the
    PatchGAN has 2 stride-2 layers, not 3 (its receptive field would exceed the image)."""

    ngf: int = 64  # generator width (first layer; the paper's c7s1-64)
    n_down: int = 2  # stride-2 down/up-samplings in each generator
    n_blocks: int = 6  # ResNet blocks at the bottleneck (the paper: 6 at 128 px, 9 at 256 px)
    ndf: int = 64  # discriminator width
    disc_layers: int = 2  # stride-2 layers of the PatchGAN (2 for 28-32 px images, 3 for 256 px)
    cycle_weight: float = 10.0
    identity_weight: float = 0.5  # x cycle_weight (CycleGAN's lambda_identity)
    pool_size: int = 50  # past fakes per discriminator (0 = none)
    # CycleGAN: Adam 2e-4, beta1 0.5, constant for half the stage, then linear to 0
    gan_optimizer: OptimizerConfig = field(default_factory=lambda: adam(2e-4, (0.5, 0.999), Schedule.linear,
                                                                        sched_decay_start=0.5))

    def check(self, cfg) -> None:
        one_learning_rate(cfg, self.name)
        for key in ("ngf", "n_down", "ndf", "disc_layers"):
            positive(getattr(self, key), f"method.{key}")
        for key in ("n_blocks", "cycle_weight", "identity_weight", "pool_size"):
            nonneg(getattr(self, key), f"method.{key}")
        self.gan_optimizer.check("method.gan_optimizer")


class ImagePool(nn.Module):
    """CycleGAN's history of generated images (Shrivastava et al. 2017).

    Until ``size`` images are stored each new fake is stored and returned; afterwards each one, with
    probability 1/2, replaces a random stored image, which is returned in its place, else passes
    through. The stored images and their count are buffers, so they are part of the checkpoint; the
    draws come from torch's global generator, whose state the checkpoint also holds.
    """

    def __init__(self, size: int, shape: tuple[int, ...]):
        super().__init__()
        self.size = size
        self.register_buffer("images", torch.zeros(size, *shape))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def forward(self, fakes: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return fakes
        n = int(self.count)
        swap = torch.rand(fakes.shape[0]).tolist()
        slot = torch.randint(self.size, (fakes.shape[0],)).tolist()
        out = []
        for k, img in enumerate(fakes.detach().float()):
            if n < self.size:
                self.images[n] = img
                n += 1
                out.append(img)
            elif swap[k] < 0.5:
                old = self.images[slot[k]].clone()
                self.images[slot[k]] = img
                out.append(old)
            else:
                out.append(img)
        self.count.fill_(n)
        return torch.stack(out).to(fakes.dtype)


# extra generator terms of the owning method: (fake_t = G_st(x_s), fake_s = G_ts(x_t),
# src, tgt) in [-1, 1] -> {log name: (weight, loss)}, e.g. CyCADA's semantic consistency
ExtraLosses = Callable[[torch.Tensor, torch.Tensor, Batch, Batch], dict[str, tuple[float, torch.Tensor]]]


class Translator(nn.Module):
    def __init__(self, cfg: TranslatorConfig, info):
        super().__init__()
        self.cfg = cfg
        c, size = info.channels, info.image_size
        self.g_st = generator(c, cfg.ngf, cfg.n_down, cfg.n_blocks)
        self.g_ts = generator(c, cfg.ngf, cfg.n_down, cfg.n_blocks)
        self.d_s = patch_discriminator(c, cfg.ndf, cfg.disc_layers)
        self.d_t = patch_discriminator(c, cfg.ndf, cfg.disc_layers)
        self.pool_s = ImagePool(cfg.pool_size, (c, size, size))  # fakes G_ts(x_t) shown to D_s
        self.pool_t = ImagePool(cfg.pool_size, (c, size, size))  # fakes G_st(x_s) shown to D_t
        if len(info.mean) != c or len(info.std) != c:
            raise ValueError(f"the translator needs the pair's per-channel mean and std, got {info.mean}, {info.std}")
        # normalised = pm1 * a + b, with pm1 = 2 (x * std + mean) - 1
        std = torch.tensor(info.std).view(1, -1, 1, 1)
        mean = torch.tensor(info.mean).view(1, -1, 1, 1)
        self.register_buffer("_a", 1.0 / (2.0 * std), persistent=False)
        self.register_buffer("_b", (0.5 - mean) / std, persistent=False)

    def to_pm1(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self._b) / self._a

    def from_pm1(self, x: torch.Tensor) -> torch.Tensor:
        return x * self._a + self._b

    def groups(self) -> dict[str, list[nn.Parameter]]:
        """The translator's parameter groups: "gen" (both generators), "disc" (both discriminators)."""
        return {"gen": [*self.g_st.parameters(), *self.g_ts.parameters()],
                "disc": [*self.d_s.parameters(), *self.d_t.parameters()]}

    def optimizers(self) -> dict[str, OptimizerConfig]:
        return {"gen": self.cfg.gan_optimizer, "disc": self.cfg.gan_optimizer}

    def step(
        self, src: Batch, tgt: Batch, opt: Optimizers, extra: ExtraLosses | None = None
    ) -> dict[str, torch.Tensor]:
        """One translator iteration, (a) then (b) of the module docstring; the losses, detached."""
        cfg = self.cfg
        real_s, real_t = self.to_pm1(src.x), self.to_pm1(tgt.x)
        # a) generators, discriminators frozen
        set_requires_grad([self.d_s, self.d_t], False)
        fake_t, fake_s = self.g_st(real_s), self.g_ts(real_t)
        rec_s, rec_t = self.g_ts(fake_t), self.g_st(fake_s)
        gan = lsgan(self.d_t(fake_t), True) + lsgan(self.d_s(fake_s), True)
        cycle = l1(rec_s, real_s) + l1(rec_t, real_t)
        losses = {"loss/gan_g": gan, "loss/cycle": cycle}
        total = gan + cfg.cycle_weight * cycle
        if cfg.identity_weight > 0:
            identity = l1(self.g_st(real_t), real_t) + l1(self.g_ts(real_s), real_s)
            losses["loss/identity"] = identity
            total = total + cfg.identity_weight * cfg.cycle_weight * identity
        for name, (weight, value) in (extra(fake_t, fake_s, src, tgt) if extra else {}).items():
            losses[name] = value
            total = total + weight * value
        opt.step(total, "gen")
        set_requires_grad([self.d_s, self.d_t], True)
        # b) discriminators on real vs pooled past fakes
        pooled_t, pooled_s = self.pool_t(fake_t.detach()), self.pool_s(fake_s.detach())
        loss_dt = 0.5 * (lsgan(self.d_t(real_t), True) + lsgan(self.d_t(pooled_t), False))
        loss_ds = 0.5 * (lsgan(self.d_s(real_s), True) + lsgan(self.d_s(pooled_s), False))
        opt.step(loss_dt + loss_ds, "disc")
        return {
            **{k: v.detach() for k, v in losses.items()},
            "loss/d_t": loss_dt.detach(),
            "loss/d_s": loss_ds.detach(),
        }

    @torch.no_grad()
    def translate(self, x_s: torch.Tensor) -> torch.Tensor:
        """G_st(x_s) in the normalised space (what a task network trains on)."""
        return self.from_pm1(self.g_st(self.to_pm1(x_s)))

    def images(self, x_s: torch.Tensor, x_t: torch.Tensor) -> dict[str, torch.Tensor]:
        """Rows x, G(x), F(G(x)) for both directions (normalised space)."""
        fake_t, fake_s = self.g_st(self.to_pm1(x_s)), self.g_ts(self.to_pm1(x_t))
        rec_s, rec_t = self.g_ts(fake_t), self.g_st(fake_s)
        return {"translation/source_to_target": self.from_pm1(torch.cat([self.to_pm1(x_s), fake_t, rec_s])),
                "translation/target_to_source": self.from_pm1(torch.cat([self.to_pm1(x_t), fake_s, rec_t]))}
