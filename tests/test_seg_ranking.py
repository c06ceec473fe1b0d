"""scripts/seg_ranking.py: the synth2real_seg table beside the papers' GTA5 -> Cityscapes numbers, and Kendall's
tau-b over the variants that have both (a variant without a paper number or without a row is listed only)."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("seg_ranking", ROOT / "scripts" / "seg_ranking.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeRow:
    metric = "target_miou"

    def __init__(self, *values, kind="avx2", name="row"):
        self.name = name
        self.seeds = {s: {"target_miou": v, "machine": {"kind": kind, "precision": "fp32"}}
                      for s, v in enumerate(values)}

    def values(self):
        return [self.seeds[s]["target_miou"] for s in sorted(self.seeds)]


def test_table_and_tau_over_the_variants_with_both(tmp_path, monkeypatch):
    s = _script()
    tmp_path.mkdir(exist_ok=True)
    monkeypatch.setattr(s, "rows", lambda _: {
        "synth2real_source_only": FakeRow(49.0, 51.0, name="synth2real_source_only"),  # 50; paper 36.6
        "synth2real_source_only_amx": FakeRow(30.0, 30.0, kind="amx", name="synth2real_source_only_amx"),
        "synth2real_dacs": FakeRow(60.0, 60.0),  # 60; paper 52.1
        "synth2real_advent": FakeRow(40.0, 40.0, kind="amx"),  # 40; paper 43.8
        "synth2real_road": FakeRow(55.0, 55.0, kind="cuda"),  # 55; paper 39.4; no source-only on its machine
        "synth2real_mic_dacs": FakeRow(70.0, 70.0),  # no paper number: in the table, not in tau
    })
    text, tau = s.table(tmp_path)
    # by hand over (source_only 50, dacs 60, advent 40, road 55) against (36.6, 52.1, 43.8, 39.4):
    # concordant: so-dacs, so-road, dacs-advent, dacs-road; discordant: so-advent, advent-road -> (4 - 2) / 6
    assert abs(tau - 1 / 3) < 1e-12
    lines = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines()[2:]}
    assert set(lines) == set(s.PAPERS)
    assert "50.00 ± 1.41" in lines["source_only"] and "70.00 ± 0.00" in lines["mic_dacs"]
    assert "not measured" in lines["lsd"] and "| — |" in lines["mic_dacs"]
    # dacs - source_only by seed: 11, 9 -> mean +10, sd sqrt(2), t = 10, 1 df: p = 2 * (1/2 - atan(10)/pi) = 0.063
    assert "+10.00 (p = 0.063, n = 2; `synth2real_source_only`)" in lines["dacs"]
    assert "+10.00 (p = nan, n = 2; `synth2real_source_only_amx`)" in lines["advent"]  # its own machine's row
    assert "no source-only row on cuda, fp32" in lines["road"]
