"""The contract between the trainer and a method (see docs/design.md).

A method owns its networks and its per-iteration update order; the trainer owns everything else
(device, AMP, optimizers and learning-rate schedules, gradient scaling, checkpoints, evaluation,
logging). Methods share code through functions (``uda.methods.parts``, ``uda.losses``, ``uda.nets``),
not through hooks here.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, NamedTuple, Protocol

import torch
from torch import nn

from uda.schema.method import MethodConfig

if TYPE_CHECKING:
    from uda.data.pairs import PairInfo
    from uda.schema import OptimizerConfig, TrainConfig


class Batch(NamedTuple):
    """Images (normalised, on the device) and labels; ``y`` is None for the target domain. ``idx``: each
    image's index in its domain's training set (SHOT looks its pseudo-labels up by it)."""

    x: torch.Tensor
    y: torch.Tensor | None
    idx: torch.Tensor | None = None


@dataclass(frozen=True)
class RareClassSampling:
    """A method's request that the trainer draw source images by rare class sampling (DAFormer;
    ``uda.data.streams.RareClassStream``): temperature T, the share of an image's pixels a class must exceed
    for the image to be drawn for it, and, where the pair takes training crops (``data.seg_crop``), the share of
    the crop's pixels the drawn class must exceed, re-cropping until it does (at most 10 times)."""

    temperature: float
    min_share: float
    min_crop_share: float = 0.0


@dataclass(frozen=True)
class Stage:
    name: str
    steps: int


class Optimizers(Protocol):
    """What ``update`` calls to change parameters (the trainer's ``Stepper``): one optimizer per group.

    ``step(loss, *groups)`` = ``zero(*groups)``, ``backward(loss)``, ``apply(*groups)``: zero those
    groups' gradients, backpropagate (scaled under fp16), step their optimizers. Each group steps at
    most once per round; ``new_round()`` starts the next one (one round per iteration unless a method
    asks, as MCD does); a non-finite loss skips the update.

    A sharpness-aware step (SDAT): ``zero``, ``backward(loss_1)``, ``perturb(rho, *groups)`` (w -> w + e
    along the gradient, gradients zeroed), ``backward(loss_2)`` at w + e, ``restore()`` (back to w),
    ``apply(*groups)`` with the gradients taken at w + e.
    """

    def step(self, loss: torch.Tensor, *groups: str) -> None: ...

    def zero(self, *groups: str) -> None: ...

    def backward(self, loss: torch.Tensor) -> None: ...

    def apply(self, *groups: str) -> None: ...

    def new_round(self) -> None: ...

    def perturb(self, rho: float, *groups: str) -> None: ...

    def restore(self) -> None: ...

    def reset(self, *groups: str) -> None: ...


class Method(nn.Module):
    """Base of every method: its ``Config`` schema and the calls the trainer makes."""

    Config: ClassVar[type[MethodConfig]] = MethodConfig
    # the network family whose measured fastest CPU setting
    # trainer.precision/channels_last=auto use (uda/engine/precision.py); None: the backbone's
    # name
    family: ClassVar[str | None] = None

    @classmethod
    def from_config(cls, cfg: TrainConfig, info: PairInfo) -> Method:
        """Build the networks from the config and hand them to the keyword-only constructor."""
        raise NotImplementedError

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Named parameter groups ("feat", "cls", "disc", ...); the trainer gives each an optimizer."""
        raise NotImplementedError

    def optimizer_overrides(self) -> dict[str, OptimizerConfig]:
        """Parameter groups whose optimizer differs from the run's ``optimizer`` config (ADDA stage 2)."""
        return {}

    def schedule_spans(self, max_steps: int) -> dict[str, tuple[int, int] | list[tuple[int, int]]]:
        """Groups whose learning-rate schedule runs over [start, end) instead of the whole run: a
        group trained in one stage decays over that stage (CyCADA's translator); a list of spans
        restarts the schedule at each span's start (SHOT's target stage). Default: none."""
        return {}

    def source_sampling(self) -> RareClassSampling | None:
        """How the trainer draws source images: None = uniformly, each epoch a permutation (default)."""
        return None

    def refresh_due(self, step: int, epoch_steps: int) -> bool:
        """Whether the trainer runs ``refresh`` before this step's update (``epoch_steps``: the steps of
        one pass over the target training set). Default: never."""
        return False

    def refresh(self, target: Iterable[Batch]) -> None:
        """A pass over the whole target training set, in order, un-augmented, without labels (``idx``
        set), with no gradient; what the method derives lives in its buffers, so a checkpoint holds it."""

    def images(self, x_s: torch.Tensor, x_t: torch.Tensor) -> dict[str, torch.Tensor]:
        """Image grids for TensorBoard at each evaluation: name -> (N, C, H, W) in the normalised space."""
        return {}

    def stages(self, max_steps: int) -> list[Stage]:
        """Stages of one run (ADDA: pretrain then adapt). Default: one stage of all steps."""
        return [Stage("train", max_steps)]

    def update(self, src: Batch, tgt: Batch, step: int, opt: Optimizers) -> dict[str, torch.Tensor]:
        """One iteration in the paper's order. Returns detached scalars keyed ``loss/...``, ``acc/...``."""
        raise NotImplementedError

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the representation the classifier reads, class logits) of the predicting model.

        Evaluation uses the logits; label-free selection (DEV) uses the features.
        """
        raise NotImplementedError

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits for evaluation."""
        return self.features_and_logits(x)[1]
