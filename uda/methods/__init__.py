"""One file per method; importing this package registers them all."""
from uda.methods import adaptsegnet, adda, cyclegan, dann, dsn, lsd, road, source_only  # noqa: F401
from uda.methods.base import Batch, Method, Stage

__all__ = ["Batch", "Method", "Stage"]
