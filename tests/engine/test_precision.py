"""``trainer.precision=auto`` / ``trainer.channels_last=auto``: what they resolve to on a CPU with and
without native bf16 (the CPU lookup faked), on CUDA, for explicit settings, and what a run records."""
import json
import logging

import pytest
import torch

from helpers import SMALL, make_cfg
from uda.engine import precision as prec
from uda.engine.loop import train
from uda.schema import ConfigError, Precision, validate

AVX2 = prec.CPU("AMD EPYC 7B13", "AVX2", ())
AMX = prec.CPU("Intel Xeon", "AVX512", ("AVX-512 BF16", "AMX BF16"))
ZEN4 = prec.CPU("AMD EPYC 9B14", "AVX512", ("AVX-512 BF16",))  # native bf16 without AMX: another kind
CPU_DEVICE = torch.device("cpu")


def choose(*overrides, machine, device=CPU_DEVICE):
    return prec.choose(make_cfg(*overrides), device, machine)


@pytest.mark.parametrize("overrides", [[], ["method=dsn"], ["method=source_only", "data=digits_seg"],
                                       ["method=cyclegan"], ["method=dann", "backbone=resnet50"]])
def test_auto_is_fp32_without_native_bf16(overrides):
    c = choose(*overrides, machine=AVX2)
    assert (c.precision, c.channels_last) == (Precision.fp32, False)
    assert c.why == ("precision: fp32 (auto: CPU capability AVX2 has no native bf16); "
                     "channels_last: off (auto: not measured on such CPUs)")
    assert c.cpu == AVX2


@pytest.mark.parametrize("overrides, want", [
    ([], (Precision.fp32, True)),  # DANN's digits net: bf16 is faster but collapsed a seed
    (["method=source_only"], (Precision.fp32, True)),  # the same net
    (["method=dsn"], (Precision.bf16, True)),  # DSN's own family: bf16 kept fp32's accuracy
    (["method=source_only", "data=digits_seg"], (Precision.bf16, True)),
    (["method=cyclegan"], (Precision.fp32, True)),  # the translator measured slower in bf16
    (["method=cycada"], (Precision.fp32, True)),
])
def test_auto_on_a_cpu_with_native_bf16_is_the_family_s_measured_setting(overrides, want):
    c = choose(*overrides, machine=AMX)
    assert (c.precision, c.channels_last) == want
    assert "on amx CPUs: " in c.why and c.why.endswith("channels_last: on (auto: the same)")


@pytest.mark.parametrize("overrides, fam", [(["backbone=resnet50"], "resnet50"), (["method=adda"], "lenet")])
def test_auto_on_a_cpu_with_native_bf16_keeps_fp32_for_an_unmeasured_family(overrides, fam):
    c = choose(*overrides, machine=AMX)
    assert (c.precision, c.channels_last) == (Precision.fp32, False)
    assert c.why == (f"precision: fp32 (auto: {fam} not measured on amx CPUs (AVX-512 BF16, "
                     "AMX BF16 here)); channels_last: off (auto: the same)")


def test_cpu_kinds_are_what_decides_kernels_and_speed():
    assert (AMX.kind, ZEN4.kind, AVX2.kind) == ("amx", "avx512_bf16", "avx2")
    assert prec.CPU("x", "AVX512", ()).kind == "avx512"
    assert AVX2.record() == {"kind": "avx2", "cpu": "AMD EPYC 7B13", "capability": "AVX2", "bf16": []}


@pytest.mark.parametrize("overrides, fam", [([], "dann_mnist"), (["method=dsn"], "dsn")])
def test_a_kind_with_native_bf16_but_no_measured_row_runs_fp32(overrides, fam):
    """AVX-512 BF16 without AMX is not the AMX Xeon the rows were measured on: fp32 until measured there."""
    c = choose(*overrides, machine=ZEN4)
    assert (c.precision, c.channels_last) == (Precision.fp32, False)
    assert c.why == (f"precision: fp32 (auto: {fam} not measured on avx512_bf16 CPUs (AVX-512 BF16 here)); "
                     "channels_last: off (auto: the same)")


def test_auto_on_cuda_is_fp16_with_channels_last_off():
    c = choose(machine=None, device=torch.device("cuda"))
    assert (c.precision, c.channels_last, c.cpu) == (Precision.fp16, False, None)
    assert c.why == ("precision: fp16 (auto: fp16 with gradient scaling on CUDA); "
                     "channels_last: off (auto: not measured on CUDA)")


def test_explicit_settings_win_and_forced_bf16_without_native_support_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="uda"):
        c = choose("trainer.precision=bf16", "trainer.channels_last=true", machine=AVX2)
    assert (c.precision, c.channels_last) == (Precision.bf16, True)
    assert c.why == "precision: bf16 (set); channels_last: on (set)"
    assert caplog.messages == [
        "trainer.precision=bf16: CPU AMD EPYC 7B13 (capability AVX2) has no native bf16 (AVX-512 BF16 or "
        "AMX BF16); it is emulated here and several times slower than fp32 (trainer.precision=auto picks fp32)"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="uda"):
        c = choose("trainer.precision=fp32", "trainer.channels_last=false", machine=AMX)
        choose("trainer.precision=bf16", machine=AMX)  # native: no warning
    assert (c.precision, c.channels_last) == (Precision.fp32, False) and not caplog.messages


def test_channels_last_takes_only_auto_true_or_false():
    assert make_cfg().trainer.channels_last == "auto"
    with pytest.raises(ConfigError, match=r"trainer.channels_last must be auto, true or false, got 'maybe'"):
        validate(make_cfg("trainer.channels_last=maybe"))


def test_the_cpu_lookup_reads_torch_s_feature_flags(monkeypatch):
    flags = {"cpu_name": "Some CPU", "avx512_bf16": False, "amx_bf16": True}
    monkeypatch.setattr(torch._C._cpu, "_get_cpu_capability", lambda: flags)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert prec.cpu() == prec.CPU("Some CPU", "AVX512", ("AMX BF16",))
    flags["amx_bf16"] = False
    assert prec.cpu().bf16 == ()


def test_without_torch_s_feature_query_the_kernel_s_flags_are_read(monkeypatch):
    def missing():
        raise AttributeError("_get_cpu_capability")

    monkeypatch.setattr(torch._C._cpu, "_get_cpu_capability", missing)
    monkeypatch.setattr(prec, "_cpuinfo_flags", lambda: {"avx2": True, "avx512_bf16": True})
    assert prec.cpu().bf16 == ("AVX-512 BF16",)


@pytest.mark.parametrize("machine, row, want", [(AVX2, None, ("fp32", False)), (AMX, None, ("fp32", True)),
                                              (AMX, (True, True, "faked"), ("bf16", True))])
def test_a_run_logs_and_records_what_auto_chose(tmp_path, monkeypatch, caplog, machine, row, want):
    monkeypatch.setattr(prec, "cpu", lambda: machine)
    if row:  # a family whose measured setting is bf16
        monkeypatch.setitem(prec.MEASURED["amx"], "dann_mnist", row)
    with caplog.at_level(logging.INFO, logger="uda"):
        summary = train(make_cfg(*SMALL, "trainer.max_steps=2", "trainer.eval_every=2"), tmp_path)
    assert (summary["precision"], summary["channels_last"]) == want
    assert summary["cpu"] == str(machine) and summary["machine"] == machine.record()
    assert "contended" in summary and summary["date"].startswith("20")  # what uda repro reads
    assert json.loads((tmp_path / "summary.json").read_text())["precision"] == want[0]
    assert caplog.messages[0].startswith(f"precision: {want[0]} (auto: ")


def test_resuming_where_auto_resolves_differently_warns(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(prec, "cpu", lambda: AMX)
    args = [*SMALL, "trainer.max_steps=2", "trainer.eval_every=2", "trainer.checkpoint_every=2"]
    train(make_cfg(*args), tmp_path)
    monkeypatch.setattr(prec, "cpu", lambda: AVX2)  # the run continues on a CPU without native bf16
    with caplog.at_level(logging.WARNING, logger="uda"):
        summary = train(make_cfg(*args, "resume=true", "trainer.max_steps=4"), tmp_path)
    assert (summary["precision"], summary["channels_last"]) == ("fp32", False)
    assert ("the checkpoint trained with fp32 + channels_last; this session runs fp32 (trainer.precision and "
            "trainer.channels_last resolve on this machine; set them to continue as before)") in caplog.messages
