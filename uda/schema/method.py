"""``method``: the base of every method's schema. Each schema lives next to its method, in
``uda/methods/<name>.py``, declares the tasks the method supports and carries its own checks."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from omegaconf import MISSING

from uda.errors import ConfigError
from uda.schema.base import CLASSIFICATION
from uda.schema.search import Dist


@dataclass
class MethodConfig:
    name: str = MISSING
    TASKS: ClassVar[tuple[str, ...]] = (CLASSIFICATION,)  # the pairs it runs on: classification, segmentation
    # uda tune's search space: override key -> distribution (uda/schema/search.py), each with its source
    SEARCH: ClassVar[dict[str, Dist]] = {}
    # the label-free criteria (uda/selection.py) the method's own loss optimises: uda tune refuses them as
    # its objective (a method that minimises target entropy would always look best by entropy)
    OPTIMISES: ClassVar[tuple[str, ...]] = ()

    def search_space(self) -> dict[str, Dist]:
        """The space ``uda tune`` searches unless told otherwise: ``SEARCH``, less what this setting leaves unused."""
        return dict(self.SEARCH)

    def check(self, cfg) -> None:
        """Checks the schema cannot express (ranges, cross-field consistency); ``cfg`` is the whole TrainConfig,
        for checks that need another group (``trainer.max_steps``, ``backbone``). Raises ConfigError."""


def methods_for(task: str) -> list[str]:
    """The names of the methods (of every schema class defined so far) that run on ``task`` pairs."""
    found, todo = set(), list(MethodConfig.__subclasses__())
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if task in cls.TASKS and getattr(cls, "name", MISSING) != MISSING:  # a method, not a shared base
            found.add(cls.name)
    return sorted(found)


def one_learning_rate(cfg, method: str) -> None:
    """For methods that train every layer of the backbone at one learning rate (per stage): a
    ``backbone.head_lr_mult`` other than 1 would be ignored, so it is refused, naming the methods that honour it."""
    if cfg.backbone.head_lr_mult != 1:
        raise ConfigError(f"method={method} trains the backbone at one learning rate: backbone.head_lr_mult must be 1, "
                          f"got {cfg.backbone.head_lr_mult} (source_only, dann and the segmentation methods honour it)")
