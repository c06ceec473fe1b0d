"""Losses and schedules shared by the methods: pure functions, each with its paper and shapes."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, lambd: float) -> torch.Tensor:
        ctx.lambd = lambd
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad.neg() * ctx.lambd, None


def grad_reverse(x: torch.Tensor, lambd: float) -> torch.Tensor:
    """Gradient reversal layer R_lambda (Ganin et al., JMLR 2016, Sec. 4.2).

    Forward: R(x) = x. Backward: dR/dx = -lambda I, so layers before R ascend what layers after
    R descend. ``x``: any shape; ``lambd``: a Python float >= 0.
    """
    return _GradReverse.apply(x, float(lambd))


def grl_lambda(p: float, gamma: float = 10.0, scale: float = 1.0) -> float:
    """DANN's adaptation factor lambda_p = scale * (2 / (1 + exp(-gamma p)) - 1), p in [0, 1].

    Ganin et al. 2016, Sec. 5.2.2: suppresses the noisy domain signal early in training.
    lambda_0 = 0, lambda_1 = scale * tanh(gamma / 2).
    """
    return scale * (2.0 / (1.0 + math.exp(-gamma * p)) - 1.0)


def domain_bce(logits: torch.Tensor, domain: int) -> torch.Tensor:
    """Domain classification loss, binary cross-entropy with logits, mean over the batch.

    Ganin et al. 2016, Eq. (4)/(18): L_d = -[d log sigma(z) + (1 - d) log(1 - sigma(z))],
    d = 0 for source, 1 for target. ``logits``: (N,) or (N, 1) raw domain scores.
    """
    logits = logits.reshape(-1).float()
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, float(domain)))


def binary_accuracy(logits: torch.Tensor, domain: int) -> torch.Tensor:
    """Fraction of ``logits`` (N,) classified as ``domain`` (0 when logit < 0, 1 otherwise)."""
    pred = (logits.reshape(-1) >= 0).long()
    return (pred == domain).float().mean()


def simse(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Scale-invariant MSE (Bousmalis et al., DSN, NIPS 2016, Eq. 3), mean over the batch.

    Per image with k = number of elements and d = x - x_hat:
        L = (1/k) ||d||_2^2 - (1/k^2) (d . 1)^2
    The MINUS makes the loss blind to a constant offset of x_hat (a popular port adds it: a bug).
    ``x``, ``x_hat``: (N, C, H, W) or (N, D).
    """
    d = (x.float() - x_hat.float()).flatten(1)
    k = d.shape[1]
    return (d.pow(2).sum(1) / k - d.sum(1).pow(2) / k**2).mean()


def difference_loss(h_c: torch.Tensor, h_p: torch.Tensor, normalise: bool = True) -> torch.Tensor:
    """Soft orthogonality of shared and private codes (DSN, Eq. 4): ||H_c^T H_p||_F^2.

    ``h_c``: (N, Dc) shared codes, ``h_p``: (N, Dp) private codes, rows = samples. With
    ``normalise`` (the official code) each code column is mean-centred over the batch and each row
    L2-normalised first. The squared Frobenius norm is divided by Dc * Dp (a constant folded into
    the weight beta, as in the official code's mean), so the loss lies in [0, 1] when normalised.
    Zero iff every shared dimension is orthogonal to every private dimension over the batch.
    """
    h_c, h_p = h_c.float(), h_p.float()
    if normalise:
        h_c = F.normalize(h_c - h_c.mean(0, keepdim=True), dim=1, eps=1e-6)
        h_p = F.normalize(h_p - h_p.mean(0, keepdim=True), dim=1, eps=1e-6)
    corr = h_c.t() @ h_p  # (Dc, Dp)
    return corr.pow(2).sum() / corr.numel()


def mmd_rbf(x: torch.Tensor, y: torch.Tensor, sigmas: list[float]) -> torch.Tensor:
    """Biased MMD^2 with a sum of RBF kernels (DSN's MMD similarity; Gretton et al. 2012).

    k(a, b) = sum_s exp(-||a - b||^2 / (2 s)); MMD^2 = E k(x, x') + E k(y, y') - 2 E k(x, y).
    ``s`` acts as a variance, as in the official DSN code's ``sigmas`` list.
    ``x``: (N, D), ``y``: (M, D). Clamped at 0 (the biased estimate is >= 0 up to rounding).
    """
    x, y = x.float(), y.float()
    betas = 1.0 / (2.0 * torch.tensor(sigmas, dtype=x.dtype, device=x.device)).view(-1, 1, 1)

    def k(a, b):
        return torch.exp(-betas * torch.cdist(a, b).pow(2).unsqueeze(0)).sum(0)

    return (k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean()).clamp_min(0.0)


def lsgan(pred: torch.Tensor, real: bool) -> torch.Tensor:
    """Least-squares GAN loss (Mao et al. 2017, CycleGAN's choice): mean (D(x) - 1)^2 or mean D(x)^2."""
    pred = pred.float()
    return ((pred - 1.0) ** 2).mean() if real else (pred ** 2).mean()


def l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference (CycleGAN's cycle and identity losses)."""
    return (a.float() - b.float()).abs().mean()


def seg_ce(logits: torch.Tensor, y: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Per-pixel cross-entropy for segmentation, mean over labelled pixels (label ``ignore_index``
    excluded). ``logits`` [N, K, h, w] at the net's stride are upsampled bilinearly to the labels'
    [N, H, W] size first, as AdaptSegNet does (``interp`` before the loss)."""
    if logits.shape[-2:] != y.shape[-2:]:
        logits = F.interpolate(logits.float(), size=y.shape[-2:], mode="bilinear", align_corners=False)
    return F.cross_entropy(logits.float(), y, ignore_index=ignore_index)


def gan_loss(logits: torch.Tensor, label: int, kind: str = "bce") -> torch.Tensor:
    """Adversarial loss of a (patch) discriminator's raw scores against the constant ``label``
    (AdaptSegNet: source = 0, target = 1). ``kind``: "bce" = BCE with logits (Tsai et al. 2018),
    "ls" = least squares mean (D - label)^2 (Mao et al. 2017; the official code's LS-GAN option)."""
    logits = logits.float()
    target = torch.full_like(logits, float(label))
    if kind == "ls":
        return ((logits - target) ** 2).mean()
    return F.binary_cross_entropy_with_logits(logits, target)
