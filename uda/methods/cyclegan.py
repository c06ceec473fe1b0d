"""Pixel-level adaptation: CycleGAN (Zhu et al., ICCV 2017) and CyCADA (Hoffman et al., ICML 2018).

The translator works on images in [-1, 1] (CycleGAN's convention); the classifiers read the pair's
normalised space. Both maps are per-channel affine (identities for mean = std = 0.5).

Translator iteration, in the order of the CycleGAN code:
  (a) generators: LSGAN(D_t(G_st(x_s)), real) + LSGAN(D_s(G_ts(x_t)), real)
      + cycle_weight (|G_ts(G_st(x_s)) - x_s|_1 + |G_st(G_ts(x_t)) - x_t|_1)
      + identity_weight x cycle_weight (|G_st(x_t) - x_t|_1 + |G_ts(x_s) - x_s|_1)
      [+ CyCADA's semantic_weight L_sem], with both discriminators frozen (requires_grad off);
  (b) discriminators: 0.5 (LSGAN(D(real), real) + LSGAN(D(pool(fake)), fake)) for D_t and D_s,
      the fakes drawn through a 50-image pool of past translations.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from uda.config import CycleGANConfig, CyCADAConfig, SemanticSource
from uda.losses import l1, lsgan
from uda.methods.base import Batch, Method, Stage
from uda.nets import build_backbone, mlp, set_requires_grad
from uda.nets.cyclegan import generator, patch_discriminator
from uda.registry import register

SOURCE, TARGET = 0, 1  # the feature discriminator's classes (CyCADA stage 3)


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


class _Translator(Method):
    """The CycleGAN part shared by ``cyclegan`` and ``cycada``."""

    cfg: CycleGANConfig

    def _init_translator(self, cfg: CycleGANConfig, info) -> None:
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

    def translator_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"gen": [*self.g_st.parameters(), *self.g_ts.parameters()],
                "disc": [*self.d_s.parameters(), *self.d_t.parameters()]}

    def semantic_loss(self, fake_t, fake_s, src: Batch, tgt: Batch) -> dict[str, torch.Tensor]:
        """Extra generator losses (CyCADA's semantic consistency); none for plain CycleGAN."""
        return {}

    def translate_step(self, src: Batch, tgt: Batch, opt) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        real_s, real_t = self.to_pm1(src.x), self.to_pm1(tgt.x)
        # (a) generators, discriminators frozen
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
        for name, (weight, value) in self.semantic_loss(fake_t, fake_s, src, tgt).items():
            losses[name] = value
            total = total + weight * value
        opt.step(total, "gen")
        set_requires_grad([self.d_s, self.d_t], True)
        # (b) discriminators on real vs pooled past fakes
        pooled_t, pooled_s = self.pool_t(fake_t.detach()), self.pool_s(fake_s.detach())
        loss_dt = 0.5 * (lsgan(self.d_t(real_t), True) + lsgan(self.d_t(pooled_t), False))
        loss_ds = 0.5 * (lsgan(self.d_s(real_s), True) + lsgan(self.d_s(pooled_s), False))
        opt.step(loss_dt + loss_ds, "disc")
        return {**{k: v.detach() for k, v in losses.items()}, "loss/d_t": loss_dt.detach(), "loss/d_s": loss_ds.detach()}

    @torch.no_grad()
    def translate(self, x_s: torch.Tensor) -> torch.Tensor:
        """G_st(x_s) in the normalised space (what the task network trains on)."""
        return self.from_pm1(self.g_st(self.to_pm1(x_s)))

    def images(self, x_s, x_t):
        fake_t, fake_s = self.g_st(self.to_pm1(x_s)), self.g_ts(self.to_pm1(x_t))
        rec_s, rec_t = self.g_ts(fake_t), self.g_st(fake_s)
        return {"translation/source_to_target": self.from_pm1(torch.cat([self.to_pm1(x_s), fake_t, rec_s])),
                "translation/target_to_source": self.from_pm1(torch.cat([self.to_pm1(x_t), fake_s, rec_t]))}


@register("cyclegan")
class CycleGAN(_Translator):
    """The translator alone. So that a translation run reports how useful its images are, a classifier
    (``backbone``, ``optimizer``) trains alongside on the translated source G_st(x_s) (detached: no
    gradient reaches the translator) and is evaluated on real images -- CyCADA's stage 3, run
    concurrently with the translator instead of after it."""

    def __init__(self, *, cfg: CycleGANConfig, info, encoder: nn.Module, classifier: nn.Module):
        super().__init__()
        self.cfg = cfg
        self._init_translator(cfg, info)
        self.encoder, self.classifier = encoder, classifier

    @classmethod
    def from_config(cls, cfg, info):
        encoder, classifier, _ = build_backbone(cfg.backbone, in_channels=info.channels, image_size=info.image_size,
                                                num_classes=info.num_classes)
        return cls(cfg=cfg.method, info=info, encoder=encoder, classifier=classifier)

    def param_groups(self):
        return {**self.translator_groups(), "cls": [*self.encoder.parameters(), *self.classifier.parameters()]}

    def optimizer_overrides(self):
        return {"gen": self.cfg.gan_optimizer, "disc": self.cfg.gan_optimizer}

    def update(self, src, tgt, step, opt):
        out = self.translate_step(src, tgt, opt)
        logits = self.classifier(self.encoder(self.translate(src.x)))
        loss = F.cross_entropy(logits.float(), src.y)
        opt.step(loss, "cls")
        return {**out, "loss/cls": loss.detach(), "acc/source_batch": (logits.argmax(1) == src.y).float().mean()}

    def features_and_logits(self, x):
        f = self.encoder(x)
        return f, self.classifier(f)


@register("cycada")
class CyCADA(_Translator):
    """Three stages of one run:

    1. ``source``: f_S (``backbone``) on labelled source; frozen afterwards.
    2. ``translate``: CycleGAN + semantic consistency through the frozen f_S:
       CE(f_S(G_st(x_s)), y_s | argmax f_S(x_s)) + CE(f_S(G_ts(x_t)), argmax f_S(x_t)).
    3. ``task``: the task network, initialised once from f_S at the stage's first step, trained on
       G_st(x_s) with source labels; with ``feature_adapt`` also a feature discriminator (real target
       vs translated source, detached features) steps first, then the task network adds the
       inverted-label GAN loss on target features (ADDA-style, weight ``feature_weight``).
    Prediction: f_S during stages 1-2, the task network from stage 3 on.
    """

    def __init__(self, *, cfg: CyCADAConfig, info, src_encoder, src_classifier, task_encoder, task_classifier,
                 feat_disc):
        super().__init__()
        self.cfg = cfg
        self._init_translator(cfg, info)
        self.src_encoder, self.src_classifier = src_encoder, src_classifier
        self.task_encoder, self.task_classifier = task_encoder, task_classifier
        self.feat_disc = feat_disc
        # set by the one-time copy f_S -> task network; in the checkpoint, so a resume never repeats it
        self.register_buffer("task_started", torch.tensor(False))

    @classmethod
    def from_config(cls, cfg, info):
        def backbone():
            return build_backbone(cfg.backbone, in_channels=info.channels, image_size=info.image_size,
                                  num_classes=info.num_classes)

        src_enc, src_cls, feat_dim = backbone()
        task_enc, task_cls, _ = backbone()
        return cls(cfg=cfg.method, info=info, src_encoder=src_enc, src_classifier=src_cls, task_encoder=task_enc,
                   task_classifier=task_cls, feat_disc=mlp(feat_dim, cfg.method.disc_hidden, 2))

    def param_groups(self):
        return {"src_enc": list(self.src_encoder.parameters()), "src_cls": list(self.src_classifier.parameters()),
                **self.translator_groups(),
                "task_enc": list(self.task_encoder.parameters()), "task_cls": list(self.task_classifier.parameters()),
                "feat_disc": list(self.feat_disc.parameters())}

    def optimizer_overrides(self):
        return {"gen": self.cfg.gan_optimizer, "disc": self.cfg.gan_optimizer, "feat_disc": self.cfg.feature_optimizer}

    def _bounds(self) -> tuple[int, int]:
        return self.cfg.source_steps, self.cfg.source_steps + self.cfg.translate_steps

    def stages(self, max_steps):
        a, b = self._bounds()
        return [Stage("source", a), Stage("translate", b - a), Stage("task", max_steps - b)]

    def schedule_spans(self, max_steps):
        a, b = self._bounds()
        return {"src_enc": (0, a), "src_cls": (0, a), "gen": (a, b), "disc": (a, b),
                "task_enc": (b, max_steps), "task_cls": (b, max_steps), "feat_disc": (b, max_steps)}

    def f_s(self, x: torch.Tensor) -> torch.Tensor:
        return self.src_classifier(self.src_encoder(x))

    def semantic_loss(self, fake_t, fake_s, src, tgt):
        with torch.no_grad():
            p_t = self.f_s(tgt.x).argmax(1)
            y_s = src.y if self.cfg.semantic_source == SemanticSource.labels else self.f_s(src.x).argmax(1)
        sem = (F.cross_entropy(self.f_s(self.from_pm1(fake_t)).float(), y_s)
               + F.cross_entropy(self.f_s(self.from_pm1(fake_s)).float(), p_t))
        return {"loss/semantic": (self.cfg.semantic_weight, sem)}

    def update(self, src, tgt, step, opt):
        a, b = self._bounds()
        if step < a:  # stage 1: f_S
            logits = self.f_s(src.x)
            loss = F.cross_entropy(logits.float(), src.y)
            opt.step(loss, "src_enc", "src_cls")
            return {"loss/cls": loss.detach(), "acc/source_batch": (logits.argmax(1) == src.y).float().mean()}
        # f_S frozen from here on: eval mode (no dropout), no gradients into its parameters
        self.src_encoder.eval()
        self.src_classifier.eval()
        set_requires_grad([self.src_encoder, self.src_classifier], False)
        if step < b:  # stage 2: the translator
            return self.translate_step(src, tgt, opt)
        if not self.task_started:  # stage boundary, once: task network <- f_S
            self.task_encoder.load_state_dict(self.src_encoder.state_dict())
            self.task_classifier.load_state_dict(self.src_classifier.state_dict())
            self.task_started.fill_(True)
        self.g_st.eval()  # instance norm keeps no running statistics; eval only for clarity
        x_st = self.translate(src.x)
        f_st = self.task_encoder(x_st)
        logits = self.task_classifier(f_st)
        loss = F.cross_entropy(logits.float(), src.y)
        out = {"loss/task": loss.detach(), "acc/source_batch": (logits.argmax(1) == src.y).float().mean()}
        if self.cfg.feature_adapt:
            f_t = self.task_encoder(tgt.x)
            d_s, d_t = self.feat_disc(f_st.detach()), self.feat_disc(f_t.detach())
            lab_s = torch.full((d_s.shape[0],), SOURCE, dtype=torch.long, device=d_s.device)
            lab_t = torch.full((d_t.shape[0],), TARGET, dtype=torch.long, device=d_t.device)
            loss_d = F.cross_entropy(d_s.float(), lab_s) + F.cross_entropy(d_t.float(), lab_t)
            opt.step(loss_d, "feat_disc")
            set_requires_grad([self.feat_disc], False)
            loss_adv = F.cross_entropy(self.feat_disc(f_t).float(), torch.full_like(lab_t, SOURCE))
            set_requires_grad([self.feat_disc], True)
            loss = loss + self.cfg.feature_weight * loss_adv
            acc_d = 0.5 * ((d_s.argmax(1) == SOURCE).float().mean() + (d_t.argmax(1) == TARGET).float().mean())
            out |= {"loss/disc": loss_d.detach(), "loss/adv": loss_adv.detach(), "acc/domain": acc_d.detach()}
        opt.step(loss, "task_enc", "task_cls")
        return out

    def features_and_logits(self, x):
        if bool(self.task_started):
            f = self.task_encoder(x)
            return f, self.task_classifier(f)
        f = self.src_encoder(x)
        return f, self.src_classifier(f)
