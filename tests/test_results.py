"""Results as data: ``uda report --record`` writes a row from finished runs, ``uda repro`` re-runs it and says
whether it reproduced (bit-identical, or inside the recorded 95% interval), bad rows and names are one line,
and docs/results.md's generated block matches the files under results/."""
import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import cli, run_cli
from uda import results as res

ROOT = Path(__file__).resolve().parent.parent
FAST = ["method=source_only", "data=synthetic", "+debug=fast"]


def machine(kind="avx2", **kw):
    return {"kind": kind, "cpu": "Some CPU", "capability": "AVX2", "bf16": [], "precision": "fp32",
            "channels_last": False, "torch": "2.9.0", "threads": 2, **kw}


def seed_run(value, digest, **kw):
    return {"target_acc": value, "source_acc": 99.0, "steps": 100, "commit": "abc", "date": "2026-12-03",
            "machine": machine(**kw), "contended": False, "wall_s": 10.0, "images_per_s": 100.0,
            "weights_sha256": digest}


ROW = res.Row("dann_x", ("method=dann",), "target_acc",
              {0: seed_run(70.0, "a"), 1: seed_run(72.0, "b"), 2: seed_run(74.0, "c")})  # 95% CI [67.03, 76.97]


def test_a_bit_identical_rerun_reproduces():
    v = res.compare(ROW, {0: seed_run(70.0, "a"), 2: seed_run(74.0, "c")})
    assert v.ok and v.reason == "reproduced: bit-identical on every seed"
    assert v.seeds == {0: "bit-identical", 2: "bit-identical"}


def test_another_machine_reproduces_inside_the_interval_and_says_why_bits_differ():
    v = res.compare(ROW, {0: seed_run(68.5, "other", kind="amx", precision="bf16")})
    assert v.ok and v.seeds == {0: "inside"}
    assert v.reason == ("reproduced: every new seed inside the recorded 95% interval; different machine (kind amx "
                        "here, avx2 recorded, precision bf16 here, fp32 recorded): bit identity is not expected")


def test_a_seed_outside_the_interval_does_not_reproduce_with_its_reason():
    v = res.compare(ROW, {0: seed_run(70.0, "a"), 1: seed_run(60.0, "z")})
    assert not v.ok and v.seeds == {0: "bit-identical", 1: "outside"}
    assert v.reason == ("not reproduced: seed 1: 60.00 outside [67.03, 76.97]; same machine kind, precision, "
                        "layout, torch and threads")


def test_a_row_of_one_seed_has_no_interval_so_only_bits_reproduce_it():
    one = res.Row("x", (), "target_acc", {0: seed_run(70.0, "a")})
    assert res.compare(one, {0: seed_run(70.0, "a")}).ok
    v = res.compare(one, {0: seed_run(70.0, "b")})
    assert not v.ok and "the row has one seed, so no interval" in v.reason


def test_an_fp32_row_re_runs_in_fp32_and_its_layout_unless_its_command_sets_them():
    assert res.pinned(ROW, 0) == ["trainer.precision=fp32", "trainer.channels_last=false"]
    cl = res.Row("x", ("method=dann",), "target_acc", {0: seed_run(70.0, "a", channels_last=True)})
    assert res.pinned(cl, 0) == ["trainer.precision=fp32", "trainer.channels_last=true"]
    own = res.Row("x", ("method=dann", "trainer.precision=fp32"), "target_acc", {0: seed_run(70.0, "a")})
    assert res.pinned(own, 5) == ["trainer.channels_last=false"]  # a seed the row lacks: its first seed's
    bf16 = res.Row("x", ("method=dann",), "target_acc", {0: seed_run(70.0, "a", precision="bf16")})
    assert res.pinned(bf16, 0) == []  # left to the command: bf16 where a CPU lacks it is ~7x slower


def test_a_row_round_trips_and_a_damaged_one_is_one_line_naming_it(tmp_path):
    path = res.write_row(ROW, tmp_path)
    assert path == tmp_path / "dann_x.json" and res.read_row(path) == ROW
    assert json.loads(path.read_text())["command"] == "uda train method=dann"
    broken = copy.deepcopy(json.loads(path.read_text()))
    del broken["seeds"]["1"]["weights_sha256"]
    path.write_text(json.dumps(broken))
    with pytest.raises(res.ResultError, match=r"dann_x.json: not a readable result row \(KeyError"):
        res.read_row(path)
    path.write_text("{not json")
    with pytest.raises(res.ResultError, match=r"dann_x.json: not a readable result row \(JSONDecodeError"):
        res.read_row(path)


def test_the_generated_block_of_docs_results_md_is_up_to_date():
    """docs/results.md's recorded rows are generated from results/: `python scripts/results_table.py`."""
    text = (ROOT / "docs" / "results.md").read_text()
    assert res.update_docs(text, res.rows(ROOT / "results")) == text, "run: python scripts/results_table.py"


def test_every_recorded_row_reads_and_names_its_file():
    found = res.rows(ROOT / "results")
    assert found, "results/ holds the recorded rows"
    for name, row in found.items():
        assert res.NAME.match(name) and row.name == name and len(row.seeds) >= 1
        assert all(r["machine"]["kind"] and r["weights_sha256"] for r in row.seeds.values())


def test_record_then_repro_end_to_end(tmp_path, monkeypatch):
    """Two seeds of a short run recorded; repro of seed 0 is bit-identical (exit 0), a finished seed is not
    run again, and a row changed on purpose fails with its reason (exit 1)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # repro's runs: as many threads as the recorded ones
    runs = tmp_path / "runs"
    for seed in (0, 1):
        r = run_cli("train", *FAST, f"seed={seed}", f"hydra.run.dir={runs / str(seed)}", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
    store = tmp_path / "results"
    r = cli("report", str(runs), "--record", "source_only_synthetic", "--results", str(store), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    row = res.read_row(store / "source_only_synthetic.json")
    assert row.overrides == tuple(FAST) and sorted(row.seeds) == [0, 1]
    args = ["repro", "source_only_synthetic", "--seeds", "0", "--results", str(store), "--out", str(tmp_path / "re")]
    r = cli(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "reproduced: bit-identical on every seed" in r.stdout
    again = cli(*args, cwd=tmp_path)
    assert again.returncode == 0 and "finished earlier" in again.stdout
    changed = json.loads((store / "source_only_synthetic.json").read_text())
    for s in changed["seeds"].values():  # a row that claims other weights and 99% on every seed
        s["weights_sha256"], s["target_acc"] = "0" * 64, 99.0
    (store / "source_only_synthetic.json").write_text(json.dumps(changed))
    bad = cli(*args, cwd=tmp_path)
    assert bad.returncode == 1 and "not reproduced: seed 0:" in bad.stdout and "outside [99.00, 99.00]" in bad.stdout


def test_unknown_names_and_damaged_rows_are_one_line_exit_2(tmp_path):
    res.write_row(ROW, tmp_path)
    r = cli("repro", "dann_y", "--results", str(tmp_path), cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"uda: error: no recorded row 'dann_y' in {tmp_path} (did you mean dann_x?); valid: dann_x"]
    (tmp_path / "dann_x.json").write_text("[]")
    r = cli("repro", "--list", "--results", str(tmp_path), cwd=tmp_path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "dann_x.json" in r.stderr
    r = cli("report", str(tmp_path), "--record", "Bad-Name", "--results", str(tmp_path), cwd=tmp_path)
    assert r.returncode == 2 and "a name is lower-case letters, digits and _" in r.stderr


def test_runs_that_differ_by_more_than_their_seed_are_not_one_row(tmp_path):
    for i, extra in enumerate(([], ["optimizer.lr=0.02"])):
        r = run_cli("train", *FAST, *extra, f"hydra.run.dir={tmp_path / 'runs' / str(i)}", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
    r = cli("report", str(tmp_path / "runs"), "--record", "mixed", "--results", str(tmp_path), cwd=tmp_path)
    assert r.returncode == 2 and "the runs differ by more than their seed" in r.stderr


def test_listing_shows_each_row_with_its_cost(tmp_path):
    res.write_row(ROW, tmp_path)
    text = res.listing(tmp_path)
    assert "dann_x: uda train method=dann" in text and "0.2 min a seed on Some CPU (avx2)" in text


def test_importing_results_imports_no_torch():
    code = "import sys, uda.results; print(any(m.split('.')[0] == 'torch' for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
