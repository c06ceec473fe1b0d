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
    def __init__(self, *values):
        self._values = list(values)

    def values(self):
        return self._values


def test_table_and_tau_over_the_variants_with_both(tmp_path, monkeypatch):
    s = _script()
    tmp_path.mkdir(exist_ok=True)
    monkeypatch.setattr(s, "rows", lambda _: {
        "synth2real_source_only": FakeRow(49.0, 51.0),  # 50; paper 36.6
        "synth2real_dacs": FakeRow(60.0, 60.0),  # 60; paper 52.1
        "synth2real_advent": FakeRow(40.0, 40.0),  # 40; paper 43.8
        "synth2real_mic_dacs": FakeRow(70.0, 70.0),  # no paper number: in the table, not in tau
    })
    text, tau = s.table(tmp_path)
    # by hand: (source_only, dacs) and (advent, dacs) concordant, (source_only, advent) discordant: (2 - 1) / 3
    assert abs(tau - 1 / 3) < 1e-12
    lines = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines()[2:]}
    assert set(lines) == set(s.PAPERS)
    assert "50.00 ± 1.41" in lines["source_only"] and "70.00 ± 0.00" in lines["mic_dacs"]
    assert "not measured" in lines["lsd"] and "| — |" in lines["mic_dacs"]
