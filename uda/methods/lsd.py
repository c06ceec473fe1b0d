"""GAN-feature DA ("LSD-seg"): Sankaranarayanan et al., "Learning from Synthetic Data: Addressing
Domain Shift for Semantic Segmentation", CVPR 2018.

Per iteration, in this order, each step recomputing its forward passes:
  1) D: CE4(D(x_s), src-real) + CE4(D(G(F(x_s))), src-fake) + CE4(D(x_t), tgt-real)
        + CE4(D(G(F(x_t))), tgt-fake) + aux_weight CE_seg(D_seg(x_s), y_s)          [G(F(.)) detached]
  2) G (D frozen, F's embedding detached): gen_adv_weight [CE4(D(G(F(x_s))), src-real) + CE4(D(G(F(x_t))), tgt-real)]
        + aux_weight CE_seg(D_seg(G(F(x_s))), y_s) + recon_weight (|G(F(x_s)) - x_s|_1 + |G(F(x_t)) - x_t|_1)
  3) F + C (D and G frozen): CE_seg(C(F(x_s)), y_s) + adv_weight [CE4(D(G(F(x_s))), tgt-real)
        + CE4(D(G(F(x_t))), src-real) + aux_weight CE_seg(D_seg(G(F(x_s))), y_s)]   (warm-up: CE_seg alone)

Networks: F (the segmenter's body; its deepest features are the embedding), C (its pixel classifier), G
(``FeatureDecoder``: embedding -> image, dropout as the noise), D (``PixelDiscriminator``: per position
4-way {source-real 0, source-fake 1, target-real 2, target-fake 3} + auxiliary segmentation head).
No official code is maintained; implemented from the paper. Readings where it is ambiguous: the 4-way
losses are means over D's output positions; F's weight 0.1 (``adv_weight``) multiplies all of its
adversarial terms including the auxiliary one; the reconstruction is an L1 mean in the pair's normalised
image space; F sees source and target as one batch (``forward_pair``) so batch-norm statistics that train
match between training and evaluation.
The authors' released code differs from the paper's text in three settings kept as options: G's own
adversarial terms weighted 0.1 (``gen_adv_weight``, default 1 as in the paper's losses), InstanceNorm in
D (``disc_norm: instance``; default BatchNorm, each of D's inputs a batch of its own), and a G that also reads
intermediate feature maps (``gen_skips``: the segmenter's ``skip_modules()``; the authors feed FCN-8s's pool3
and pool4 to G besides fc7, digits_seg's net gives its 2nd and 3rd blocks), so that F's cross-domain gradient
also reaches those layers through G (default off: the paper's text, G on the embedding alone).
Without pretrained weights (digits_seg; the paper starts F from ImageNet VGG16) ``warmup_steps`` > 0 gives a
warm-up stage: D and G take their steps as above, F+C the segmentation loss alone, so the adversarial terms
start from an F that segments the source and a G and D trained on its embedding (default 0: the paper).
F/C use the run's ``optimizer`` (the paper: Adam 1e-5, beta1 0.7, see the GTA5 recipe); G and D use
``gan_optimizer`` (Adam 2e-4, beta1 0.7, the paper's), D's learning rate times ``disc_lr_scale`` (default 1: the paper's
one rate for both; < 1 slows a D that overpowers G). What these settings do on digits_seg: docs/notes/lsd.md.

Ledger row (paper settings, departures, evidence): docs/fidelity.md#lsd.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from enum import Enum

import torch
import torch.nn.functional as F

from uda.losses import l1, seg_ce
from uda.methods.base import Batch, Method
from uda.methods.parts import head_optimizer, seg_groups, warmup_stages
from uda.nets import set_requires_grad
from uda.nets.segmentation import FeatureDecoder, PixelDiscriminator, SegNet, SegOut, build_segmenter, forward_pair
from uda.schema import SEGMENTATION, OptimizerConfig
from uda.schema.base import below_max_steps, nonneg, positive, unit_interval
from uda.schema.method import MethodConfig
from uda.schema.optimizer import adam
from uda.schema.search import log


class DiscNorm(str, Enum):
    batch = "batch"  # BatchNorm over each sub-batch D scores (one domain and kind per batch)
    instance = "instance"  # InstanceNorm, per image (the authors' released LSD-seg discriminator)


@dataclass
class LSDConfig(MethodConfig):
    """F, C, a generator G(F(x)) and a 4-way + auxiliary-segmentation D."""

    name: str = "lsd"
    TASKS = (SEGMENTATION,)
    adv_weight: float = 0.1  # F's cross-domain adversarial (and auxiliary) terms
    aux_weight: float = 1.0  # D's auxiliary segmentation loss (ACGAN style)
    recon_weight: float = 1.0  # G's L1 reconstruction of x_s and x_t
    ngf: int = 64  # generator width
    ndf: int = 64  # discriminator width
    dropout: float = 0.5  # Dropout2d after each G layer, in place of a noise input
    gen_adv_weight: float = 1.0  # G's within-domain adversarial terms (the authors' released code: 0.1)
    disc_norm: DiscNorm = DiscNorm.batch  # D's normalisation layers
    warmup_steps: int = 0  # F+C without the adversarial terms first (D and G train); 0 = the paper
    gen_skips: bool = False  # G also reads the segmenter's skip_modules() (the authors' code: pool3, pool4)
    disc_lr_scale: float = 1.0  # D's learning rate = gan_optimizer.lr x this (1 = the paper: G and D alike)
    gan_optimizer: OptimizerConfig = field(default_factory=lambda: adam(2e-4, (0.7, 0.999)))  # the paper
    # uda tune's search space (uda/schema/search.py): each range and where it comes from
    SEARCH = {
        "method.adv_weight": log(0.01, 1.0, "stated: a decade either side of the paper's 0.1"),
    }

    def check(self, cfg) -> None:
        below_max_steps(self.warmup_steps, "method.warmup_steps", cfg.trainer.max_steps)
        for key in ("adv_weight", "aux_weight", "recon_weight", "gen_adv_weight"):
            nonneg(getattr(self, key), f"method.{key}")
        for key in ("ngf", "ndf"):
            positive(getattr(self, key), f"method.{key}")
        unit_interval(self.dropout, "method.dropout")
        self.gan_optimizer.check("method.gan_optimizer")
        positive(self.disc_lr_scale, "method.disc_lr_scale")


SRC_REAL, SRC_FAKE, TGT_REAL, TGT_FAKE = 0, 1, 2, 3


def four_way(logits: torch.Tensor, label: int) -> torch.Tensor:
    """Cross-entropy of D's per-position 4-way scores [N, 4, h, w] against one class everywhere."""
    target = torch.full((logits.shape[0], *logits.shape[2:]), label, dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits.float(), target)


def _keep_output(module: torch.nn.Module, inputs, output: torch.Tensor) -> None:
    """Forward hook: the module's latest output, for G to read (taken, and so released, by ``taken``)."""
    module.lsd_output = output


def taken(modules: list[torch.nn.Module]) -> list[torch.Tensor]:
    return [m.__dict__.pop("lsd_output") for m in modules]


def generator_for(segmenter: SegNet, channels: int, m: LSDConfig) -> FeatureDecoder:
    """G for this segmenter's embedding: its width, and 2x upsamplings from its stride back to the image;
    with ``gen_skips``, each skip map joins at the level of its own resolution."""
    skips = segmenter.skip_modules() if m.gen_skips else []
    hooks = [mod.register_forward_hook(_keep_output) for mod in skips]
    with torch.no_grad():  # widths and strides, from a dry run
        was = segmenter.training
        f = segmenter.eval()(torch.zeros(1, channels, 64, 64)).features
        segmenter.train(was)
    maps = taken(skips)
    for h in hooks:
        h.remove()
    n_up = max(0, round(math.log2(64 / f.shape[-1])))
    levels = [min(n_up, max(0, round(math.log2(t.shape[-1] / f.shape[-1])))) for t in maps]
    return FeatureDecoder(f.shape[1], channels, ngf=m.ngf, n_up=n_up, dropout=m.dropout,
                          skips=[(t.shape[1], lv) for t, lv in zip(maps, levels)])


class LSD(Method):
    Config = LSDConfig

    def __init__(self, *, cfg: LSDConfig, segmenter: SegNet, generator: FeatureDecoder, disc: PixelDiscriminator,
                 head_optimizer: OptimizerConfig):
        super().__init__()
        self.cfg = cfg
        self.segmenter = segmenter
        self.generator = generator
        self.disc = disc
        self.head_optimizer = head_optimizer
        self.skip_modules = segmenter.skip_modules() if cfg.gen_skips else []  # a plain list: not re-registered
        for mod in self.skip_modules:
            mod.register_forward_hook(_keep_output)

    @classmethod
    def from_config(cls, cfg, info):
        m = cfg.method
        segmenter = build_segmenter(cfg.backbone, in_channels=info.channels, num_classes=info.num_classes)
        return cls(cfg=m, segmenter=segmenter, generator=generator_for(segmenter, info.channels, m),
                   disc=PixelDiscriminator(info.channels, info.num_classes, m.ndf, norm=m.disc_norm.value),
                   head_optimizer=head_optimizer(cfg))

    def param_groups(self):
        return seg_groups(self.segmenter) | {"gen": list(self.generator.parameters()),
                                             "disc": list(self.disc.parameters())}

    def optimizer_overrides(self):
        gan = self.cfg.gan_optimizer
        return {"head": self.head_optimizer, "gen": gan,
                "disc": dataclasses.replace(gan, lr=gan.lr * self.cfg.disc_lr_scale)}

    def stages(self, max_steps):
        return warmup_stages(self.cfg.warmup_steps, max_steps)

    def _fake(self, f: tuple[torch.Tensor, list[torch.Tensor]], x: torch.Tensor) -> torch.Tensor:
        """G(F(x)) from (embedding, skip maps), at x's size."""
        return self.generator(f[0], tuple(x.shape[-2:]), f[1])

    def embed(self, x: torch.Tensor) -> tuple[SegOut, tuple[torch.Tensor, list[torch.Tensor]]]:
        out = self.segmenter(x)
        return out, (out.features, taken(self.skip_modules))

    def embed_pair(self, x_s: torch.Tensor, x_t: torch.Tensor):
        """F on both domains as ``forward_pair`` runs it; per domain (SegOut, (embedding, skip maps))."""
        if x_s.shape[1:] != x_t.shape[1:]:
            return self.embed(x_s), self.embed(x_t)
        (out_s, out_t), n = forward_pair(self.segmenter, x_s, x_t), x_s.shape[0]
        maps = taken(self.skip_modules)
        return (out_s, (out_s.features, [t[:n] for t in maps])), (out_t, (out_t.features, [t[n:] for t in maps]))

    def update(self, src: Batch, tgt: Batch, step, opt):
        c = self.cfg
        x_s, x_t, y_s = src.x, tgt.x, src.y
        # 1) D step: real and reconstructed images of both domains, + segmenting real source
        with torch.no_grad():
            (_, f_s), (_, f_t) = self.embed_pair(x_s, x_t)
            fake_s, fake_t = self._fake(f_s, x_s), self._fake(f_t, x_t)
        d_real_s, seg_real_s = self.disc(x_s)
        loss_d = (four_way(d_real_s, SRC_REAL) + four_way(self.disc(fake_s)[0], SRC_FAKE)
                  + four_way(self.disc(x_t)[0], TGT_REAL) + four_way(self.disc(fake_t)[0], TGT_FAKE)
                  + c.aux_weight * seg_ce(seg_real_s, y_s))
        opt.step(loss_d, "disc")
        # 2) G step (D frozen): reconstructions pass as real of their own domain, + aux CE + L1
        set_requires_grad([self.disc], False)
        with torch.no_grad():
            (_, f_s), (_, f_t) = self.embed_pair(x_s, x_t)
        fake_s, fake_t = self._fake(f_s, x_s), self._fake(f_t, x_t)
        d_fs, seg_fs = self.disc(fake_s)
        loss_recon = l1(fake_s, x_s) + l1(fake_t, x_t)
        loss_g = (c.gen_adv_weight * (four_way(d_fs, SRC_REAL) + four_way(self.disc(fake_t)[0], TGT_REAL))
                  + c.aux_weight * seg_ce(seg_fs, y_s) + c.recon_weight * loss_recon)
        opt.step(loss_g, "gen")
        # 3) F + C step (D and G frozen): segment source, and make each domain's reconstruction
        # look like the OTHER domain's real images (cross-domain confusion) (warm-up stage: the
        # segmentation loss alone)
        set_requires_grad([self.generator], False)
        (out_s, f_s), (out_t, f_t) = self.embed_pair(x_s, x_t)
        loss_seg = seg_ce(out_s.logits, y_s)
        logs = {"loss/seg": loss_seg.detach(), "loss/disc": loss_d.detach(), "loss/gen": loss_g.detach(),
                "loss/recon": loss_recon.detach()}
        if step < c.warmup_steps:
            opt.step(loss_seg, "seg", "head")
        else:
            d_fs, seg_fs = self.disc(self._fake(f_s, x_s))
            loss_adv = (four_way(d_fs, TGT_REAL) + four_way(self.disc(self._fake(f_t, x_t))[0], SRC_REAL)
                        + c.aux_weight * seg_ce(seg_fs, y_s))
            opt.step(loss_seg + c.adv_weight * loss_adv, "seg", "head")
            logs["loss/adv"] = loss_adv.detach()
        set_requires_grad([self.disc, self.generator], True)
        return logs

    def images(self, x_s: torch.Tensor, x_t: torch.Tensor) -> dict[str, torch.Tensor]:
        """Reconstructions G(F(x)) under each domain's images (rows: x, G(F(x)))."""
        return {f"reconstruction/{name}": torch.cat([x, self._fake(self.embed(x)[1], x)])
                for name, x in (("source", x_s), ("target", x_t))}

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, _ = self.embed(x)  # (releases the skip maps the hooks kept)
        return out.features, out.logits
