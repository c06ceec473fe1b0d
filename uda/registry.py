"""Method registry: name -> Method class. Looked up by name, never by module path."""
from __future__ import annotations

from typing import Callable, TypeVar

from uda.config import ConfigError

METHODS: dict[str, type] = {}
T = TypeVar("T", bound=type)


def register(name: str) -> Callable[[T], T]:
    """Class decorator: ``@register("dann")`` makes ``method=dann`` build that class."""

    def wrap(cls: T) -> T:
        if name in METHODS and METHODS[name] is not cls:
            raise ValueError(f"method name {name!r} registered twice ({METHODS[name].__name__}, {cls.__name__})")
        METHODS[name] = cls
        cls.method_name = name
        return cls

    return wrap


def get_method(name: str) -> type:
    import uda.methods  # noqa: F401  (imports every method module, which registers it)

    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"unknown method {name!r}; valid methods: {', '.join(sorted(METHODS))}") from None
