"""Every method, by the name ``method=<name>`` selects. Adding one: its module (the class and its
``Config`` dataclass), ``uda/configs/method/<name>.yaml``, and one line here."""
from __future__ import annotations

from uda.errors import ConfigError
from uda.methods.adaptsegnet import AdaptSegNet
from uda.methods.adda import ADDA
from uda.methods.advent import ADVENT
from uda.methods.base import Batch, Method, Stage
from uda.methods.cdan import CDAN
from uda.methods.cycada import CyCADA
from uda.methods.cyclegan import CycleGAN
from uda.methods.dacs import DACS
from uda.methods.daformer import DAFormer
from uda.methods.dann import DANN
from uda.methods.dsn import DSN
from uda.methods.fixmatch import FixMatch
from uda.methods.lsd import LSD
from uda.methods.mcc import MCC
from uda.methods.mcd import MCD
from uda.methods.mdd import MDD
from uda.methods.mean_teacher import MeanTeacher
from uda.methods.mic import MIC
from uda.methods.road import ROAD
from uda.methods.sdat import SDAT
from uda.methods.shot import SHOT
from uda.methods.source_only import SourceOnly

METHODS: dict[str, type[Method]] = {
    "source_only": SourceOnly,
    "dann": DANN,
    "cdan": CDAN,
    "sdat": SDAT,
    "mcc": MCC,
    "mic": MIC,
    "mdd": MDD,
    "mcd": MCD,
    "mean_teacher": MeanTeacher,
    "fixmatch": FixMatch,
    "shot": SHOT,
    "dsn": DSN,
    "adda": ADDA,
    "cyclegan": CycleGAN,
    "cycada": CyCADA,
    "adaptsegnet": AdaptSegNet,
    "advent": ADVENT,
    "dacs": DACS,
    "daformer": DAFormer,
    "road": ROAD,
    "lsd": LSD,
}


def get_method(name: str) -> type[Method]:
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"unknown method {name!r}; valid methods: {', '.join(sorted(METHODS))}") from None


__all__ = ["METHODS", "Batch", "Method", "Stage", "get_method"]
