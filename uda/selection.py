"""Label-free model-selection scores, and picking a checkpoint from a run's evaluation history.

Computed at every evaluation on held-out data whose target labels are never read:

- ``source_val_acc``: accuracy on a validation split carved from source train (higher is better);
- ``target_entropy``: mean prediction entropy on held-out target images (lower is better);
- ``dev``: Deep Embedded Validation risk (You et al., ICML 2019), importance-weighted source
  validation loss with weights from a domain classifier on the features, plus the control variate
  (lower is better);
- ``snd``: Soft Neighbourhood Density (Saito et al., ICCV 2021) of the target predictions (higher is
  better).
Target test accuracy (``target_acc``) is only reported, and is the "oracle" criterion.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

# criterion -> (metrics.jsonl key, True if higher is better)
CRITERIA: dict[str, tuple[str, bool]] = {
    "source_val": ("source_val_acc", True),
    "entropy": ("target_entropy", False),
    "dev": ("dev", False),
    "snd": ("snd", True),
    "oracle": ("target_acc", True),
}
LABEL_FREE = ("source_val", "entropy", "dev", "snd")


def metric_of(row: dict[str, Any]) -> str:
    """"miou" for a segmentation run's evaluation row or summary (source_miou / target_miou), else "acc"."""
    return "miou" if "target_miou" in row else "acc"


def criterion_key(criterion: str, metric: str = "acc") -> tuple[str, bool]:
    """(metrics.jsonl key, higher is better); segmentation rows carry ``*_miou`` for ``*_acc``."""
    key, higher = CRITERIA[criterion]
    if metric == "miou" and key.endswith("_acc"):
        key = key[: -len("acc")] + "miou"
    return key, higher


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Mean Shannon entropy (nats) of rows of ``probs`` (each row a distribution summing to 1)."""
    p = probs.double()
    if not torch.allclose(p.sum(1), torch.ones_like(p[:, 0]), atol=1e-4):
        raise ValueError("entropy expects probabilities whose rows sum to 1")
    return -(p * torch.log(p.clamp_min(1e-12))).sum(1).mean()


def snd(probs: torch.Tensor, temperature: float = 0.05) -> torch.Tensor:
    """Soft Neighbourhood Density: cosine similarities of the L2-normalised predictions, self
    excluded, softmax over neighbours at ``temperature``, and the mean entropy of those rows."""
    p = F.normalize(probs.double(), dim=1)
    sim = p @ p.t()
    sim.fill_diagonal_(-math.inf)
    neigh = torch.softmax(sim / temperature, dim=1)
    return -(neigh * torch.log(neigh.clamp_min(1e-300))).sum(1).mean()


def fit_domain_classifier(f_src: torch.Tensor, f_tgt: torch.Tensor, *, l2: float = 1e-3, iters: int = 100):
    """Logistic regression (target = 1) on standardised features, by L-BFGS; returns p(target | f)."""
    x = torch.cat([f_src, f_tgt]).double()
    y = torch.cat([torch.zeros(len(f_src)), torch.ones(len(f_tgt))]).double()
    mu, sd = x.mean(0), x.std(0).clamp_min(1e-6)
    z = (x - mu) / sd
    w = torch.zeros(z.shape[1], dtype=torch.double, requires_grad=True)
    b = torch.zeros((), dtype=torch.double, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=iters, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(z @ w + b, y) + l2 * w.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    w, b = w.detach(), b.detach()
    return lambda f: torch.sigmoid(((f.double() - mu) / sd) @ w + b)


def dev_risk(weights: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
    """DEV (You et al. 2019, Alg. 1): weighted loss with the control variate eta = -Cov(L, W) / Var(W).

    ``weights``: density ratios w_i = p_t(x_i) / p_s(x_i) on source validation; ``losses``: their
    per-sample losses. risk = mean(w L) + eta mean(w) - eta.
    """
    w, loss = weights.double(), losses.double()
    wl = w * loss
    var_w = w.var(unbiased=True)
    eta = -torch.cov(torch.stack([wl, w]))[0, 1] / var_w if var_w > 0 else torch.zeros((), dtype=torch.double)
    return wl.mean() + eta * w.mean() - eta


def dev_score(f_src_train: torch.Tensor, f_tgt: torch.Tensor, f_src_val: torch.Tensor,
              loss_src_val: torch.Tensor) -> torch.Tensor:
    """DEV risk from features: a domain classifier on (source train, target), weights on source val."""
    p_t = fit_domain_classifier(f_src_train, f_tgt)(f_src_val).clamp(1e-6, 1 - 1e-6)
    ratio = len(f_src_train) / len(f_tgt)  # undo the classes' sizes in the classifier's prior
    return dev_risk(p_t / (1 - p_t) * ratio, loss_src_val)


def select(rows: list[dict[str, Any]], criterion: str) -> dict[str, Any] | None:
    """The evaluation row a criterion picks (ties: the later step); None if no row has its score."""
    key, higher = criterion_key(criterion, metric_of(rows[0]) if rows else "acc")
    scored = [r for r in rows if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    if not scored:
        return None
    sign = 1 if higher else -1
    return max(scored, key=lambda r: (sign * r[key], r["step"]))
