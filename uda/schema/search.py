"""Search spaces: the distribution ``uda tune`` samples a setting from, declared by each method's ``Config``
next to the setting's default (``SEARCH``, keyed by the full override path), with where the range comes from.

    log[a, b]        log-uniform on [a, b] (a > 0)        uniform[a, b]   uniform on [a, b]
    int[a, b]        an integer in [a, b]                 choice[x, y]    one of the values

The same text names a distribution on the command line (``tune.space.method.adv_weight=log[0.1,10]``).
Imports nothing heavy: ``uda tune --help`` and the schemas read it without Optuna or torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from uda.errors import ConfigError

KINDS = ("log", "uniform", "int", "choice")


@dataclass(frozen=True)
class Dist:
    kind: str  # one of KINDS
    low: float = 0.0
    high: float = 0.0
    choices: tuple[Any, ...] = ()
    source: str = ""  # the paper's sensitivity study, the official code, or "stated" (ours), for the ledger

    def __str__(self) -> str:
        values = self.choices if self.kind == "choice" else (self.low, self.high)
        return f"{self.kind}[{', '.join(_text(v) for v in values)}]"

    def check(self, key: str) -> None:
        """ConfigError naming ``key`` for an empty or impossible range."""
        if self.kind not in KINDS:
            raise ConfigError(f"{key}: unknown distribution {self.kind!r}; valid: {', '.join(KINDS)}")
        if self.kind == "choice":
            if not self.choices:
                raise ConfigError(f"{key}: choice[] is empty; give at least one value")
            same = [(a, b) for i, a in enumerate(self.choices) for b in self.choices[i + 1:] if a == b]
            if same:
                raise ConfigError(f"{key}: {self} names one value twice ({same[0][0]!r} = {same[0][1]!r})")
            return
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low >= self.high:
            raise ConfigError(f"{key}: {self} is an empty range; give low < high")
        if self.kind == "log" and self.low <= 0:
            raise ConfigError(f"{key}: {self} needs low > 0 (log-uniform)")
        if self.kind == "int" and (self.low != int(self.low) or self.high != int(self.high)):
            raise ConfigError(f"{key}: {self} needs integer bounds")

    def contains(self, value: Any) -> bool:
        if self.kind == "choice":
            return value in self.choices
        return isinstance(value, (int, float)) and not isinstance(value, bool) and self.low <= value <= self.high

    def suggest(self, trial, key: str) -> Any:
        """The value an Optuna trial samples (its TPE sampler sees the distribution's kind)."""
        if self.kind == "log":
            return trial.suggest_float(key, self.low, self.high, log=True)
        if self.kind == "uniform":
            return trial.suggest_float(key, self.low, self.high)
        if self.kind == "int":
            return trial.suggest_int(key, int(self.low), int(self.high))
        return trial.suggest_categorical(key, list(self.choices))


def log(low: float, high: float, source: str = "stated") -> Dist:
    return Dist("log", low, high, source=source)


def uniform(low: float, high: float, source: str = "stated") -> Dist:
    return Dist("uniform", low, high, source=source)


def integer(low: int, high: int, source: str = "stated") -> Dist:
    return Dist("int", low, high, source=source)


def choice(*values: Any, source: str = "stated") -> Dist:
    return Dist("choice", choices=tuple(values), source=source)


def _text(v: Any) -> str:
    return str(v).lower() if isinstance(v, bool) else repr(v) if isinstance(v, str) else f"{v:g}" if isinstance(
        v, float) else str(v)


def _value(text: str, key: str) -> Any:
    t = text.strip()
    if t.lower() in ("true", "false"):
        return t.lower() == "true"
    for cast in (int, float):
        try:
            return cast(t)
        except ValueError:
            pass
    if not t:
        raise ConfigError(f"{key}: an empty value in the distribution")
    return t.strip("'\"")


def parse(text: str, key: str) -> Dist:
    """``log[0.1,10]`` (as ``Dist.__str__`` writes it) -> a checked Dist; ConfigError naming ``key`` otherwise."""
    kind, bracket, rest = str(text).partition("[")
    kind = kind.strip()
    if not bracket or not rest.endswith("]") or kind not in KINDS:
        raise ConfigError(f"{key}={text}: not a distribution; write one of log[a,b], uniform[a,b], int[a,b], "
                          f"choice[x,y,...]")
    values = [_value(v, key) for v in rest[:-1].split(",")] if rest[:-1].strip() else []
    if kind == "choice":
        dist = Dist("choice", choices=tuple(values), source="command line")
    else:
        if len(values) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise ConfigError(f"{key}={text}: {kind}[a,b] needs two numbers")
        dist = Dist(kind, float(values[0]), float(values[1]), source="command line")
    dist.check(key)
    return dist


def override(key: str, value: Any) -> str:
    """The Hydra override that sets ``key`` to a sampled ``value``."""
    if isinstance(value, float):  # (numpy floats too: Optuna's samplers may return np.float64)
        return f"{key}={float(value)!r}"
    return f"{key}={_text(value)}"
