"""One interface for a domain's data, whether it lives in memory or in files.

What the trainer and evaluation read of a domain: the train split's size, the uint8 images and labels
of a train batch given its indices (and, per step, the batches of a whole run), the test split in
batches, the first few test images (for image grids), and the held-out validation split used by
label-free model selection (``val``; in memory, or None). Images are uint8 [N, C, H, W]; labels are
int64 class ids [N], or per-pixel classes [N, H, W] with 255 = ignore for segmentation.

* ``TensorDomain``: small datasets held as tensors (on the GPU when there is one); a batch is gathered
  by index.
* ``FileDomain``: large datasets (GTA5, SYNTHIA, Cityscapes; Office-Home, VisDA-2017, DomainNet, list files)
  read by a DataLoader in the same seeded order, with ``data.workers`` processes.
"""
from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from torch.utils.data import Dataset

    from uda.data.streams import IndexStream

Images = tuple[torch.Tensor, torch.Tensor]  # (uint8 images, labels)


class Domain(ABC):
    name: str
    # held out from train for label-free selection (target labels here are never read); or None
    val: Images | None = None

    @property
    @abstractmethod
    def train_size(self) -> int:
        """Number of training images (the streams draw indices below it)."""

    @abstractmethod
    def train_batch(self, idx: torch.Tensor) -> Images:
        """The training images and labels at ``idx`` (int64 [B])."""

    @abstractmethod
    def test_batches(self, batch_size: int, device: torch.device, workers: int = 0) -> Iterator[Images]:
        """The whole test split in order, in batches (file-backed domains: one image at a time, on ``device``)."""

    @abstractmethod
    def first_test_images(self, n: int) -> Images:
        """The first ``n`` test images and labels (image grids at each evaluation)."""

    def class_pixels(self, num_classes: int) -> torch.Tensor:
        """Segmentation: int64 [N, K + 1], the pixels of each class in each training label map, the last column
        those of no class (255): what rare class sampling draws by. Reads every training label."""
        counts = torch.zeros(self.train_size, num_classes + 1, dtype=torch.long)
        for start in range(0, self.train_size, 256):
            idx = torch.arange(start, min(start + 256, self.train_size))
            counts[idx] = _label_counts(self.train_batch(idx)[1].cpu(), num_classes)
        return counts

    def step_batches(self, stream: IndexStream, start: int, end: int, *, rank: int, batch: int,
                     workers: int) -> Iterator[Images]:
        """The training batch of every step in [start, end): this rank's slice of the stream's indices."""
        for step in range(start, end):
            yield self.train_batch(rank_slice(stream.indices(step), rank, batch))

    def to(self, device: torch.device) -> Domain:
        return self


def batches_of(
    x: torch.Tensor, y: torch.Tensor | None, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """Consecutive slices of ``batch_size`` of ``x`` (and ``y``; None stays None)."""
    for i in range(0, x.shape[0], batch_size):
        yield x[i : i + batch_size], None if y is None else y[i : i + batch_size]


def _label_counts(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """int64 [N, K + 1]: pixels of each class in each label map y [N, H, W]; column K: ids >= K (255)."""
    y = y.reshape(len(y), -1).long().clamp(max=num_classes)
    flat = torch.arange(len(y)).unsqueeze(1) * (num_classes + 1) + y
    return torch.bincount(flat.flatten(), minlength=len(y) * (num_classes + 1)).view(len(y), num_classes + 1)


def rank_slice(idx: torch.Tensor, rank: int, batch: int) -> torch.Tensor:
    """Rank ``rank``'s share of a global batch of indices (all of it for one process)."""
    return idx[rank * batch:(rank + 1) * batch]


@dataclass
class TensorDomain(Domain):
    """A dataset held in memory: uint8 images [N, C, H, W] and int64 labels, per split."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    val_x: torch.Tensor | None = None
    val_y: torch.Tensor | None = None

    @property
    def val(self) -> Images | None:
        return None if self.val_x is None else (self.val_x, self.val_y)

    @property
    def train_size(self) -> int:
        return self.train_x.shape[0]

    def train_batch(self, idx: torch.Tensor) -> Images:
        idx = idx.to(self.train_x.device, non_blocking=True)
        return self.train_x[idx], self.train_y[idx]

    def test_batches(self, batch_size: int, device: torch.device | None = None, workers: int = 0) -> Iterator[Images]:
        return batches_of(self.test_x, self.test_y, batch_size)

    def first_test_images(self, n: int) -> Images:
        return self.test_x[:n], self.test_y[:n]

    def to(self, device: torch.device) -> TensorDomain:
        return TensorDomain(
            self.name,
            *(
                None if t is None else t.to(device)
                for t in (self.train_x, self.train_y, self.test_x, self.test_y, self.val_x, self.val_y)
            ),
        )


class _StepBatches:
    """A DataLoader batch sampler: the indices the stream gives for each step in [start, end) (this rank's slice)."""

    def __init__(self, stream: IndexStream, start: int, end: int, batch: int, rank: int):
        self.stream, self.start, self.end, self.batch, self.rank = stream, start, end, batch, rank

    def __iter__(self):
        for step in range(self.start, self.end):
            yield rank_slice(self.stream.indices(step), self.rank, self.batch).tolist()

    def __len__(self) -> int:
        return self.end - self.start


@dataclass
class FileDomain(Domain):
    """A domain read from files: ``train`` and ``test`` are Datasets of (uint8 image, labels). Segmentation
    (GTA5, SYNTHIA, Cityscapes) has no in-memory validation split, so the selection scores that need one are
    skipped, and tests one image at a time; classification (Office-Home, VisDA-2017, DomainNet, list files)
    keeps its held-out validation images in memory (``val``) and tests in batches (``test_batch_size`` None)."""

    name: str
    train: Dataset
    test: Dataset
    classes: tuple[str, ...] = ()
    val: Images | None = None
    # test images per batch: 1 for segmentation (full-size Cityscapes labels differ from the
    # resized input); None = the evaluation batch size
    test_batch_size: int | None = 1

    @property
    def train_size(self) -> int:
        return len(self.train)

    def class_pixels(self, num_classes: int) -> torch.Tensor:
        """Segmentation files count their label files at full size (images unread), as DAFormer's statistics."""
        if hasattr(self.train, "class_pixels"):
            return self.train.class_pixels(num_classes)
        return super().class_pixels(num_classes)

    def train_batch(self, idx: torch.Tensor) -> Images:
        items = [self.train[i] for i in idx.tolist()]
        return torch.stack([x for x, _ in items]), torch.stack([y for _, y in items])

    def step_batches(self, stream: IndexStream, start: int, end: int, *, rank: int, batch: int,
                     workers: int) -> Iterator[Images]:
        from torch.utils.data import DataLoader

        loader = DataLoader(self.train, batch_sampler=_StepBatches(stream, start, end, batch, rank),
                            num_workers=workers, pin_memory=torch.cuda.is_available(),
                            persistent_workers=False, prefetch_factor=4 if workers else None)
        return iter(loader)

    def test_batches(self, batch_size: int, device: torch.device | None = None, workers: int = 0) -> Iterator[Images]:
        from torch.utils.data import DataLoader

        size = self.test_batch_size or batch_size
        for x, y in DataLoader(self.test, batch_size=size, shuffle=False, num_workers=workers):
            yield x.to(device), y.to(device)

    def first_test_images(self, n: int) -> Images:
        items = [self.test[i] for i in range(min(n, len(self.test)))]
        return torch.stack([a for a, _ in items]), torch.stack([b for _, b in items])

    def to(self, device: torch.device) -> FileDomain:
        """The files stay where they are; the held-out validation images move to ``device``."""
        if self.val is None:
            return self
        return dataclasses.replace(self, val=tuple(t.to(device) for t in self.val))
