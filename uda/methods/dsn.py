"""DSN: Bousmalis et al., "Domain Separation Networks", NIPS 2016.

Shared encoder E_c (the DANN MNIST net up to its first FC layer, h_c = FC100 code), private
encoders E_p^s, E_p^t, one shared decoder D(h_c + h_p), classifier G on h_c. One combined loss:

    L = L_task + alpha L_recon + beta L_difference + gamma L_similarity

L_recon: scale-invariant MSE on both domains; L_difference: ||H_c^T H_p||_F^2 on both domains;
L_similarity: DANN (gradient reversal + domain classifier) or MMD, on h_c (the paper; the official
code's layers_to_regularize=fc3) or on the conv features below it (``similarity_layer=conv``, pool2).
Reading chosen where the paper is silent: the reversal weight follows DANN's ramp (Ganin et al.)
over the adaptation phase (``grl_gamma``; 0 = constant 1).
For the first ``adapt_start`` steps only L_task is minimised (the paper's schedule).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from uda.config import ConfigError, DSNConfig, Recon, Similarity, SimilarityLayer
from uda.losses import binary_accuracy, difference_loss, domain_bce, grad_reverse, grl_lambda, mmd_rbf, simse
from uda.methods.base import Batch, Method
from uda.nets import build_backbone, mlp
from uda.nets.dsn import Decoder, PrivateEncoder
from uda.registry import register


@register("dsn")
class DSN(Method):
    def __init__(self, *, cfg: DSNConfig, shared: nn.Module, classifier: nn.Module, private_s: nn.Module,
                 private_t: nn.Module, decoder: nn.Module, discriminator: nn.Module | None, max_steps: int):
        super().__init__()
        self.cfg, self.max_steps = cfg, max_steps
        self.shared, self.classifier = shared, classifier
        self.private_s, self.private_t, self.decoder = private_s, private_t, decoder
        self.discriminator = discriminator

    @classmethod
    def from_config(cls, cfg, info):
        m = cfg.method
        features, head, feat_dim = build_backbone(
            cfg.backbone, in_channels=info.channels, image_size=info.image_size, num_classes=info.num_classes)
        # E_c = conv layers + the head's first FC (+ReLU); G = the rest of the head
        fc1 = next(layer for layer in head if isinstance(layer, nn.Linear))
        if fc1.out_features != m.code_size:
            raise ConfigError(f"method.code_size={m.code_size} must equal the backbone's first FC width {fc1.out_features}")
        shared = nn.Sequential(features, head[0], head[1])
        classifier = head[2:]
        private = [PrivateEncoder(in_channels=info.channels, image_size=info.image_size,
                                  channels=m.private_channels, code_size=m.code_size) for _ in range(2)]
        decoder = Decoder(code_size=m.code_size, out_channels=info.channels, image_size=info.image_size)
        sim_dim = m.code_size if m.similarity_layer == SimilarityLayer.code else feat_dim
        disc = mlp(sim_dim, m.disc_hidden, 1) if m.similarity == Similarity.dann else None
        return cls(cfg=m, shared=shared, classifier=classifier, private_s=private[0], private_t=private[1],
                   decoder=decoder, discriminator=disc, max_steps=cfg.trainer.max_steps)

    def param_groups(self):
        groups = {
            "shared": list(self.shared.parameters()), "cls": list(self.classifier.parameters()),
            "private": list(self.private_s.parameters()) + list(self.private_t.parameters()),
            "decoder": list(self.decoder.parameters()),
        }
        if self.discriminator is not None:
            groups["disc"] = list(self.discriminator.parameters())
        return groups

    def grl_lambda(self, step: int) -> float:
        """Ganin et al.'s ramp over the adaptation phase; constant 1 when grl_gamma = 0."""
        if self.cfg.grl_gamma == 0:
            return 1.0
        q = (step - self.cfg.adapt_start) / max(1, self.max_steps - self.cfg.adapt_start)
        return grl_lambda(q, self.cfg.grl_gamma)

    def _recon(self, x, x_hat):
        return simse(x, x_hat) if self.cfg.recon == Recon.simse else F.mse_loss(x_hat.float(), x.float())

    def update(self, src: Batch, tgt: Batch, step, opt):
        c = self.cfg
        n_s = src.x.shape[0]
        conv = self.shared[0](torch.cat([src.x, tgt.x]))  # E_c = conv features -> FC code (+ReLU)
        h_c = self.shared[2](self.shared[1](conv))
        h_cs, h_ct = h_c[:n_s], h_c[n_s:]
        sim_in = h_c if c.similarity_layer == SimilarityLayer.code else conv
        logits_s = self.classifier(h_cs)
        loss_task = F.cross_entropy(logits_s.float(), src.y)
        out = {"loss/task": loss_task.detach(), "acc/source_batch": (logits_s.argmax(1) == src.y).float().mean().detach()}
        if step < c.adapt_start:
            # 1) warm-up: task loss only, shared encoder + classifier
            opt.step(loss_task, "shared", "cls")
            return out
        h_ps, h_pt = self.private_s(src.x), self.private_t(tgt.x)
        # reconstruction from shared + private codes, both domains
        loss_recon = self._recon(src.x, self.decoder(h_cs + h_ps)) + self._recon(tgt.x, self.decoder(h_ct + h_pt))
        # difference: shared and private codes of the same domain pushed to orthogonality
        loss_diff = (difference_loss(h_cs, h_ps, c.difference_normalise)
                     + difference_loss(h_ct, h_pt, c.difference_normalise))
        if c.similarity == Similarity.dann:
            lam = self.grl_lambda(step)
            out["sched/grl_lambda"] = torch.tensor(lam)
            d = self.discriminator(grad_reverse(sim_in, lam))
            d_s, d_t = d[:n_s], d[n_s:]
            loss_sim = domain_bce(d_s, 0) + domain_bce(d_t, 1)
            out["acc/domain"] = 0.5 * (binary_accuracy(d_s.detach(), 0) + binary_accuracy(d_t.detach(), 1))
        else:
            loss_sim = mmd_rbf(sim_in[:n_s], sim_in[n_s:], c.mmd_sigmas)
        loss = loss_task + c.alpha * loss_recon + c.beta * loss_diff + c.gamma * loss_sim
        # 2) one step of every part on the full objective (similarity reversed into E_c by the GRL)
        opt.step(loss, *self.param_groups())
        out |= {"loss/recon": loss_recon.detach(), "loss/difference": loss_diff.detach(),
                "loss/similarity": loss_sim.detach(), "loss/total": loss.detach()}
        return out

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h_c = self.shared(x)
        return h_c, self.classifier(h_c)

    @torch.no_grad()
    def images(self, x_s: torch.Tensor, x_t: torch.Tensor) -> dict[str, torch.Tensor]:
        """Inputs, shared-only, private-only and full reconstructions per domain (normalised space)."""
        out = {}
        for dom, x, private in (("source", x_s, self.private_s), ("target", x_t, self.private_t)):
            h_c, h_p = self.shared(x), private(x)
            rows = [x, self.decoder(h_c), self.decoder(h_p), self.decoder(h_c + h_p)]
            out[f"dsn/{dom}: input | shared | private | full"] = torch.cat(rows)
        return out
