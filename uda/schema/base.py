"""What every schema shares: the two tasks and the range checks that name the key and the bad value."""
from __future__ import annotations

import math
from typing import Any

from uda.errors import ConfigError

# the tasks: a domain, a backbone and a method declare theirs; validation matches them
CLASSIFICATION, SEGMENTATION = "classification", "segmentation"


def positive(value: Any, what: str) -> None:
    if not (0 < value < math.inf):  # also refuses nan and inf
        raise ConfigError(f"{what} must be > 0, got {value}")


def nonneg(value: Any, what: str) -> None:
    if not (0 <= value < math.inf):
        raise ConfigError(f"{what} must be >= 0, got {value}")


def unit_interval(value: Any, what: str) -> None:
    """0 <= value < 1 (a dropout rate, a momentum, a fraction of a span)."""
    if not 0 <= value < 1:
        raise ConfigError(f"{what} must be in [0, 1), got {value}")


def widths(values: list[int], what: str, n: int | None = None) -> None:
    if n is not None and len(values) != n:
        raise ConfigError(f"{what} needs exactly {n} values, got {list(values)}")
    if any(v <= 0 for v in values):
        raise ConfigError(f"{what} widths must be > 0, got {list(values)}")


def below_max_steps(value: int, what: str, max_steps: int) -> None:
    """A step count inside the run: 0 <= value < trainer.max_steps."""
    if not 0 <= value < max_steps:
        raise ConfigError(f"{what} must be in [0, trainer.max_steps={max_steps}), got {value}")


def scaled_phase(steps: int | None, max_steps: int, fraction: float) -> int:
    """A phase the paper gives in steps, at a budget of ``max_steps``: ``steps`` where the user set it, else
    the paper's share ``fraction`` of the run (ADDA's 10k of 10k + 10k: 0.5), so a shorter run still adapts."""
    return steps if steps is not None else int(max_steps * fraction)
