"""Label-free model selection: the criteria, each one entry of ``TABLE`` (its name for ``trainer.select``,
its column in ``metrics.jsonl``, its direction, the tasks it reads, what it reads, its paper and the function
that scores an evaluation), the functions behind them, and picking a checkpoint from a run's evaluations.

Every list of criteria (``trainer.select``'s choices, the segmentation subset, the columns an evaluation
writes, ``uda report``'s columns) is derived from ``TABLE``: adding a criterion is adding its entry (and its
function). Target labels are read by none of them; target test accuracy is only reported, as "oracle".
This module imports torch inside its functions, so that ``uda.schema`` can read the table without torch.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

CLASSIFICATION, SEGMENTATION = "classification", "segmentation"  # (uda.schema.base's; no import cycle)
# MixVal (official defaults): the mixing weight of the dominant image, and the batch
# within which each image is paired with its mirror
MIXVAL_LAMBDA, MIXVAL_BATCH = 0.55, 128
# MaNo (official defaults): the norm's order, and the uncertainty threshold above which
# the logits are normalised by softmax (else by the order-2 Taylor expansion of exp)
MANO_ORDER, MANO_THRESHOLD = 4, 5.0


@dataclass
class Readings:
    """What a classification evaluation reads for the criteria: logits and features (float, flattened) of the
    held-out source images (with their labels), of as many source train images, and of the held-out target
    images (never their labels); ``mix(a, b)``: the model's argmax on lambda x_a + (1 - lambda) x_b of target
    images (MixVal). What several criteria share is computed once."""

    lo_sv: torch.Tensor
    y_sv: torch.Tensor
    f_sv: torch.Tensor
    f_st: torch.Tensor
    f_tv: torch.Tensor
    lo_tv: torch.Tensor
    mix: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

    @cached_property
    def probs(self) -> torch.Tensor:
        import torch

        return torch.softmax(self.lo_tv.double(), dim=1)

    @cached_property
    def loss_sv(self) -> torch.Tensor:
        import torch.nn.functional as F

        return F.cross_entropy(self.lo_sv, self.y_sv, reduction="none").cpu()

    @cached_property
    def weights(self) -> torch.Tensor:
        """Density ratios p_t / p_s on source validation: one domain classifier for DEV and IWCV."""
        return density_ratios(self.f_st.cpu(), self.f_tv.cpu(), self.f_sv.cpu())


@dataclass
class SegReadings:
    """What a segmentation evaluation reads, as running sums over every pixel of the held-out target images
    (one row of the prediction matrix per pixel): None where a split is empty."""

    num_classes: int
    source_val_miou: float | None = None
    count: int = 0  # target pixels
    sum_entropy: float = 0.0
    sum_probs: Any = 0.0
    mano: Any = 0.0  # mano_sums, summed


@dataclass(frozen=True)
class Criterion:
    name: str  # trainer.select=<name>
    key: str  # its metrics.jsonl column (segmentation: *_acc reads *_miou)
    higher: bool  # a larger score is better
    tasks: tuple[str, ...]
    reads: str
    paper: str
    classify: Callable[[Readings], float] | None = field(default=None, repr=False)
    segment: Callable[[SegReadings], float | None] | None = field(default=None, repr=False)


def _mixval(r: Readings) -> float:
    pseudo = r.lo_tv.argmax(1).cpu()
    a, b, intra = mixval_pairs(pseudo)
    return mixval_score(r.mix(a, b).cpu(), pseudo[a], intra).item()


def _seg_target(fn: Callable[[SegReadings], float]) -> Callable[[SegReadings], float | None]:
    return lambda s: fn(s) if s.count else None


BOTH = (CLASSIFICATION, SEGMENTATION)
TABLE: tuple[Criterion, ...] = (
    Criterion("source_val", "source_val_acc", True, BOTH, "held-out source images and their labels",
              "accuracy on source validation, the usual default (e.g. Ganin et al., JMLR 2016)",
              classify=lambda r: 100.0 * (r.lo_sv.argmax(1) == r.y_sv).double().mean().item(),
              segment=lambda s: s.source_val_miou),
    Criterion("entropy", "target_entropy", False, BOTH, "target predictions",
              "mean prediction entropy (Morerio et al., ICLR 2018)",
              classify=lambda r: entropy(r.probs).item(), segment=_seg_target(lambda s: s.sum_entropy / s.count)),
    Criterion("dev", "dev", False, (CLASSIFICATION,), "features of source train, source and target validation; "
              "source validation losses", "Deep Embedded Validation (You et al., ICML 2019)",
              classify=lambda r: dev_risk(r.weights, r.loss_sv).item()),
    Criterion("snd", "snd", True, (CLASSIFICATION,), "target predictions",
              "Soft Neighbourhood Density (Saito et al., ICCV 2021)", classify=lambda r: snd(r.probs).item()),
    Criterion("iwcv", "iwcv", False, (CLASSIFICATION,), "as dev, without its control variate",
              "importance-weighted cross-validation (Sugiyama et al., JMLR 2007)",
              classify=lambda r: iwcv_risk(r.weights, r.loss_sv).item()),
    Criterion("im", "target_im", True, BOTH, "target predictions",
              "information maximisation (Gomes et al., NeurIPS 2010; Musgrave et al. 2022's IM validator)",
              classify=lambda r: information_maximisation(r.probs).item(),
              segment=_seg_target(lambda s: im_from_sums(s.sum_probs, s.sum_entropy, s.count).item())),
    Criterion("bnm", "target_bnm", True, (CLASSIFICATION,), "target predictions",
              "batch nuclear-norm (Cui et al., CVPR 2020)", classify=lambda r: bnm(r.probs).item()),
    Criterion("mixval", "mixval", True, (CLASSIFICATION,), "target images mixed, the model's predictions on them",
              "MixVal (Hu et al., NeurIPS 2023)", classify=_mixval),
    Criterion("mano", "target_mano", True, BOTH, "target logits",
              "MaNo (Xie et al., NeurIPS 2024)", classify=lambda r: mano(r.lo_tv).item(),
              segment=_seg_target(lambda s: mano_from_sums(s.mano, s.num_classes).item())),
)
BY_NAME = {c.name: c for c in TABLE}
LABEL_FREE = tuple(BY_NAME)
SEGMENTATION_SELECT = tuple(c.name for c in TABLE if SEGMENTATION in c.tasks)
# criterion -> (metrics.jsonl key, higher is better); "oracle" reads target test labels
CRITERIA: dict[str, tuple[str, bool]] = {c.name: (c.key, c.higher) for c in TABLE} | {"oracle": ("target_acc", True)}


def for_task(task: str) -> tuple[Criterion, ...]:
    return tuple(c for c in TABLE if task in c.tasks)


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
    import torch

    p = probs.double()
    if not torch.allclose(p.sum(1), torch.ones_like(p[:, 0]), atol=1e-4):
        raise ValueError("entropy expects probabilities whose rows sum to 1")
    return -(p * torch.log(p.clamp_min(1e-12))).sum(1).mean()


def information_maximisation(probs: torch.Tensor) -> torch.Tensor:
    """IM = H(mean_i p_i) - mean_i H(p_i): high when predictions are confident and the classes balanced."""
    return im_from_sums(probs.double().sum(0), entropy(probs) * len(probs), len(probs))


def im_from_sums(sum_probs: torch.Tensor, sum_entropy: torch.Tensor | float, n: int) -> torch.Tensor:
    """IM from running sums over rows (pixels): the sum of the distributions and of their entropies."""
    import torch

    mean_p = sum_probs.double() / n
    return -(mean_p * torch.log(mean_p.clamp_min(1e-12))).sum() - sum_entropy / n


def bnm(probs: torch.Tensor) -> torch.Tensor:
    """Batch nuclear-norm ||P||_* / N of the N x K prediction matrix (Cui et al. 2020, Eq. 6 without the
    sign of the loss): large when predictions are both confident and diverse."""
    import torch

    p = probs.double()
    return torch.linalg.matrix_norm(p, ord="nuc") / len(p)


def mano_sums(logits: torch.Tensor) -> torch.Tensor:
    """Running sums for MaNo over rows of ``logits`` [N, K]: (sum_i CE(q_i, uniform), sum of
    softmax(q)^4, sum of taylor(q)^4, N). CE to uniform = mean_k -log softmax(q)_k, MaNo's uncertainty
    criterion (KL(uniform || softmax) + log K)."""
    import torch

    q = logits.double()
    ce_uniform = -torch.log_softmax(q, dim=1).mean(1).sum()
    soft = torch.softmax(q, dim=1)
    v = 1 + q + q * q / 2  # the order-2 Taylor expansion of exp(q), > 0 for every q
    v = v - v.min(1, keepdim=True).values  # as the official code: shift so the row minimum is 0, then L1-normalise
    taylor = v / v.sum(1, keepdim=True).clamp_min(1e-12)
    return torch.stack([ce_uniform, soft.pow(MANO_ORDER).sum(), taylor.pow(MANO_ORDER).sum(),
                        torch.tensor(float(len(q)), dtype=torch.double, device=q.device)])


def mano_from_sums(sums: torch.Tensor, num_classes: int) -> torch.Tensor:
    """MaNo = (sum |sigma(q)|^4 / (N K))^(1/4), sigma = softmax when the mean CE to uniform exceeds the
    threshold (confident, calibrated enough), else the Taylor normalisation (Xie et al. 2024, Eq. 6)."""
    ce_uniform, soft4, taylor4, n = sums
    powered = soft4 if ce_uniform / n > MANO_THRESHOLD else taylor4
    return (powered / (n * num_classes)) ** (1 / MANO_ORDER)


def mano(logits: torch.Tensor) -> torch.Tensor:
    """MaNo of the N x K logits."""
    return mano_from_sums(mano_sums(logits), logits.shape[1])


def mixval_pairs(pseudo: torch.Tensor, batch: int = MIXVAL_BATCH) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MixVal's probes as the official code builds them: (a, b, intra), image a dominant in each mix.
    Inter-cluster: the images in their order, each batch of ``batch`` paired with its own reverse, kept
    where the two pseudo-labels differ. Intra-cluster: the same after sorting the images by pseudo-label
    (so partners mostly share it), kept where they are equal."""
    import torch

    n = len(pseudo)

    def reversed_in_batches(order: torch.Tensor) -> torch.Tensor:
        return torch.cat([order[i : i + batch].flip(0) for i in range(0, n, batch)]) if n else order

    a_inter = torch.arange(n, device=pseudo.device)
    b_inter = reversed_in_batches(a_inter)
    a_intra = torch.sort(pseudo, stable=True).indices
    b_intra = reversed_in_batches(a_intra)
    inter, intra = pseudo[a_inter] != pseudo[b_inter], pseudo[a_intra] == pseudo[b_intra]
    a = torch.cat([a_inter[inter], a_intra[intra]])
    b = torch.cat([b_inter[inter], b_intra[intra]])
    kind = torch.cat([torch.zeros(int(inter.sum()), dtype=torch.bool, device=pseudo.device),
                      torch.ones(int(intra.sum()), dtype=torch.bool, device=pseudo.device)])
    return a, b, kind


def mixval_score(mixed_pred: torch.Tensor, pseudo_a: torch.Tensor, intra: torch.Tensor) -> torch.Tensor:
    """Mean of the intra- and inter-cluster ICE scores: the share of mixes lambda x_a + (1-lambda) x_b
    predicted as a's pseudo-label, over same-label and over different-label pairs (a side with no pair is
    left out; the mean of the two as skada's MixValScorer with ice_type="both")."""
    import torch

    hits = (mixed_pred == pseudo_a).double()
    parts = [hits[m].mean() for m in (intra, ~intra) if m.any()]
    return torch.stack(parts).mean() if parts else torch.tensor(math.nan, dtype=torch.double)


def snd(probs: torch.Tensor, temperature: float = 0.05) -> torch.Tensor:
    """Soft Neighbourhood Density: cosine similarities of the L2-normalised predictions, self
    excluded, softmax over neighbours at ``temperature``, and the mean entropy of those rows."""
    import torch
    import torch.nn.functional as F

    p = F.normalize(probs.double(), dim=1)
    sim = p @ p.t()
    sim.fill_diagonal_(-math.inf)
    neigh = torch.softmax(sim / temperature, dim=1)
    return -(neigh * torch.log(neigh.clamp_min(1e-300))).sum(1).mean()


def fit_domain_classifier(f_src: torch.Tensor, f_tgt: torch.Tensor, *, l2: float = 1e-3, iters: int = 100):
    """Logistic regression (target = 1) on standardised features, by L-BFGS; returns p(target | f)."""
    import torch
    import torch.nn.functional as F

    x = torch.cat([f_src, f_tgt]).double()
    y = torch.cat([torch.zeros(len(f_src)), torch.ones(len(f_tgt))]).double().to(x.device)
    mu, sd = x.mean(0), x.std(0).clamp_min(1e-6)
    z = (x - mu) / sd
    w = torch.zeros(z.shape[1], dtype=torch.double, device=x.device, requires_grad=True)
    b = torch.zeros((), dtype=torch.double, device=x.device, requires_grad=True)
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
    import torch

    w, loss = weights.double(), losses.double()
    wl = w * loss
    var_w = w.var(unbiased=True)
    eta = -torch.cov(torch.stack([wl, w]))[0, 1] / var_w if var_w > 0 else torch.zeros_like(var_w)
    return wl.mean() + eta * w.mean() - eta


def density_ratios(f_src_train: torch.Tensor, f_tgt: torch.Tensor, f_src_val: torch.Tensor) -> torch.Tensor:
    """w = p_t(f) / p_s(f) on source validation, from a domain classifier on (source train, target)."""
    p_t = fit_domain_classifier(f_src_train, f_tgt)(f_src_val).clamp(1e-6, 1 - 1e-6)
    ratio = len(f_src_train) / len(f_tgt)  # undo the classes' sizes in the classifier's prior
    return p_t / (1 - p_t) * ratio


def iwcv_risk(weights: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
    """IWCV (Sugiyama et al. 2007): mean(w L), the importance-weighted source validation loss."""
    return (weights.double() * losses.double()).mean()


def dev_score(f_src_train: torch.Tensor, f_tgt: torch.Tensor, f_src_val: torch.Tensor,
              loss_src_val: torch.Tensor) -> torch.Tensor:
    """DEV risk from features: a domain classifier on (source train, target), weights on source val."""
    return dev_risk(density_ratios(f_src_train, f_tgt, f_src_val), loss_src_val)


def select(rows: list[dict[str, Any]], criterion: str) -> dict[str, Any] | None:
    """The evaluation row a criterion picks (ties: the later step); None if no row has its score."""
    key, higher = criterion_key(criterion, metric_of(rows[0]) if rows else "acc")
    scored = [r for r in rows if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    if not scored:
        return None
    sign = 1 if higher else -1
    return max(scored, key=lambda r: (sign * r[key], r["step"]))
