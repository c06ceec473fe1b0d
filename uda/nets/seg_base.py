"""What every segmenter shares: the output contract ``SegOut``, the base class ``SegNet``, and the two
functions methods call on any segmenter (``upsample``, ``forward_pair``).

Every segmenter returns class scores at its own output stride; methods upsample them bilinearly to
the label size (``upsample``). ``features`` is the deepest feature map the classifier reads (what
feature-level methods such as ROAD and LSD align); ``aux`` holds the auxiliary classifier's scores
on the shallower level (AdaptSegNet's multi-level variant) when the net was built with ``aux=True``.
Parameters are split into ``pretrained_parameters()`` (ImageNet-initialisable body) and
``new_parameters()`` (randomly initialised heads; DeepLab trains them with 10x the learning rate).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


class SegOut(NamedTuple):
    features: torch.Tensor  # [N, C, h, w] the deepest features
    logits: torch.Tensor  # [N, K, h', w'] main class scores
    aux: torch.Tensor | None  # [N, K, h'', w''] auxiliary class scores (aux=True), else None


def upsample(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of class scores to the label size (align_corners=False)."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def forward_pair(net: nn.Module, x_s: torch.Tensor, x_t: torch.Tensor) -> tuple[SegOut, SegOut]:
    """The segmenter on a source and a target batch, as ONE forward pass when their image sizes agree.

    Batch-norm layers that train (digits_seg's net from scratch) then normalise with the statistics
    of the joint batch and keep running statistics of both domains, which is what evaluation uses;
    two separate passes would normalise each domain by its own batch in training but by a mixture
    of the two at evaluation (on digits_seg that mismatch cost AdaptSegNet about half of its target
    mIoU). For frozen batch norm (DeepLab-v2) or none (FCN-8s) the outputs equal two passes.
    Images of different sizes (GTA5 vs Cityscapes crops) take two passes.
    """
    if x_s.shape[1:] != x_t.shape[1:]:
        return net(x_s), net(x_t)
    out, n = net(torch.cat([x_s, x_t])), x_s.shape[0]
    parts = [(None, None) if t is None else (t[:n], t[n:]) for t in out]
    return SegOut(*(p[0] for p in parts)), SegOut(*(p[1] for p in parts))


class SegNet(nn.Module):
    """Base of every segmenter: ``forward(x) -> SegOut``."""

    def pretrained_parameters(self) -> list[nn.Parameter]:
        raise NotImplementedError

    def new_parameters(self) -> list[nn.Parameter]:
        raise NotImplementedError

    def skip_modules(self) -> list[nn.Module]:
        """Modules below the embedding whose outputs a decoder may read, shallow to deep (LSD's ``gen_skips``;
        the authors' generator reads FCN-8s's pool3 and pool4 besides fc7)."""
        raise NotImplementedError
