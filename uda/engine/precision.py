"""``trainer.precision=auto`` and ``trainer.channels_last=auto``: the setting measured fastest for the run's
network family on this kind of machine among those that keep fp32's accuracy, read from a table of
measurements, never from a timing taken at start (a run's numerics must not depend on how busy the machine
was when it started).

* CUDA: fp16 autocast with gradient scaling; channels_last off (not measured on a GPU here).
* A CPU: the family's row of ``MEASURED`` for the CPU's kind (``CPU.kind``: AMX, AVX-512 BF16 without
  AMX, AVX-512, AVX2, ...: what decides the kernels and their speed). A kind or family without a row runs
  fp32 with channels_last off: bf16 is taken only where it was measured faster on that kind and its runs
  kept fp32's accuracy (DSN's did on AMX; DANN's digits net collapsed on a seed). Without native bf16,
  bf16 autocast is emulated, several times slower.

A run's family is its method's ``family`` where the method sets one (DSN; CycleGAN's and CyCADA's
translator), else its backbone's name. The measurements: docs/results.md#precision-and-layout
(``scripts/bench.py`` and the seeds behind each row).
"""
from __future__ import annotations

import logging
import platform
from dataclasses import dataclass
from pathlib import Path

import torch

from uda.schema import Precision, TrainConfig

log = logging.getLogger("uda")

# the instruction sets that run bf16 natively: torch's feature name -> how it is written
BF16_FEATURES = {"avx512_bf16": "AVX-512 BF16", "amx_bf16": "AMX BF16"}

# CPU kind -> family -> (bf16, channels_last, why): the fastest setting measured on that kind whose runs
# kept fp32's accuracy. The measurements (CPU, img/s, seeds): docs/results.md#precision-and-layout
MEASURED = {
    "amx": {  # Intel Xeon with AMX BF16 (issue 31)
        "dann_mnist": (False, True, "bf16 collapsed DANN to chance on a seed; fp32 + channels_last did not"),
        "dsn": (True, True, "bf16 + channels_last measured fastest and kept fp32's accuracy"),
        "seg_small": (True, True, "bf16 + channels_last measured fastest; the digits_seg results ran in it"),
        "translator": (False, True, "fp32 + channels_last measured fastest"),
    },
    "avx2": {},  # AMD EPYC (Zen 3): no native bf16 (emulated, ~7x slower); AVX2_ROWS
}


@dataclass(frozen=True)
class CPU:
    """What torch reports about this CPU."""

    name: str
    capability: str  # torch.backends.cpu.get_cpu_capability(): AVX512, AVX2, DEFAULT, ...
    bf16: tuple[str, ...]  # the native-bf16 instruction sets it has, e.g. ("AVX-512 BF16", "AMX BF16")

    def __str__(self) -> str:
        return f"{self.name} (capability {self.capability})"

    @property
    def kind(self) -> str:
        """What decides kernels and speed: amx, avx512_bf16 (without AMX), else torch's capability (avx2, ...)."""
        if "AMX BF16" in self.bf16:
            return "amx"
        return "avx512_bf16" if "AVX-512 BF16" in self.bf16 else self.capability.lower()

    def record(self) -> dict[str, object]:
        return {"kind": self.kind, "cpu": self.name, "capability": self.capability, "bf16": list(self.bf16)}


def machine_record(device: torch.device, machine: CPU | None) -> dict[str, object]:
    """What summary.json and a recorded result keep of the machine: its kind first (``uda repro``)."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return {"kind": "cuda", "gpu": torch.cuda.get_device_name(device), "capability": f"sm_{major}{minor}"}
    return (machine or cpu()).record()


def cpu() -> CPU:
    """This machine's CPU as torch sees it (the tests replace this function to fake another machine)."""
    capability = torch.backends.cpu.get_cpu_capability()
    try:  # per-feature flags: the capability says AVX512 with or without BF16
        features = dict(torch._C._cpu._get_cpu_capability())
    except (AttributeError, RuntimeError, TypeError):
        features = _cpuinfo_flags()
    bf16 = tuple(label for key, label in BF16_FEATURES.items() if features.get(key))
    return CPU(str(features.get("cpu_name") or platform.processor() or platform.machine()), capability, bf16)


def _cpuinfo_flags() -> dict[str, bool]:
    """The kernel's CPU flags (Linux), for a torch without the per-feature query."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return {flag: True for flag in flags}


def family(cfg: TrainConfig) -> str:
    """The network family whose measured setting ``auto`` uses: the method's, else the backbone's name."""
    from uda.methods import get_method

    return get_method(cfg.method.name).family or cfg.backbone.name


@dataclass(frozen=True)
class Choice:
    """The precision and memory layout a run uses, and why (the run's first log line)."""

    precision: Precision
    channels_last: bool
    cpu: CPU | None  # the CPU it was chosen for (None on CUDA)
    why: str  # e.g. "precision: fp32 (auto: CPU capability AVX2 has no native bf16); ..."

    def record(self) -> dict[str, object]:
        """What summary.json and the checkpoint keep: the resolved values."""
        return {"precision": self.precision.value, "channels_last": self.channels_last}


def choose(cfg: TrainConfig, device: torch.device, machine: CPU | None = None) -> Choice:
    """Resolve ``trainer.precision`` and ``trainer.channels_last`` for ``device``; warns where a forced
    bf16 is emulated."""
    tr, fam = cfg.trainer, family(cfg)
    machine = machine or (cpu() if device.type == "cpu" else None)
    if device.type == "cuda":
        fast_bf16, fast_cl = False, False
        p_basis, cl_basis = "fp16 with gradient scaling on CUDA", "not measured on CUDA"
    elif fam in MEASURED.get(machine.kind, {}):
        fast_bf16, fast_cl, note = MEASURED[machine.kind][fam]
        p_basis, cl_basis = f"{fam} on {machine.kind} CPUs: {note}", None
    elif not machine.bf16:
        fast_bf16, fast_cl = False, False
        p_basis, cl_basis = f"CPU capability {machine.capability} has no native bf16", "not measured on such CPUs"
    else:
        fast_bf16, fast_cl = False, False
        p_basis, cl_basis = f"{fam} not measured on {machine.kind} CPUs ({', '.join(machine.bf16)} here)", None
    if tr.precision == Precision.auto:
        precision = Precision.fp16 if device.type == "cuda" else Precision.bf16 if fast_bf16 else Precision.fp32
        p_why = f"auto: {p_basis}"
    else:
        precision, p_why = tr.precision, "set"
    channels_last = tr.forced_channels_last()
    if channels_last is None:
        # one reason for both where it is the same one
        same = cl_basis is None and tr.precision == Precision.auto
        channels_last, cl_why = fast_cl, "auto: the same" if same else f"auto: {cl_basis or p_basis}"
    else:
        cl_why = "set"
    if precision == Precision.bf16 and device.type == "cpu" and not machine.bf16:
        log.warning("trainer.precision=bf16: CPU %s has no native bf16 (AVX-512 BF16 or AMX BF16); it is "
                    "emulated here and several times slower than fp32 (trainer.precision=auto picks fp32)", machine)
    why = f"precision: {precision.value} ({p_why}); channels_last: {'on' if channels_last else 'off'} ({cl_why})"
    return Choice(precision, channels_last, machine if device.type == "cpu" else None, why)
