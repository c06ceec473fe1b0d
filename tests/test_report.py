"""`uda report` over a fixture tree of runs: grouping, mean ± std over seeds per criterion, unfinished
runs, the segmentation metric, the files it writes, and its CLI error on an empty tree."""
import csv
import json
import math

from uda.report import report

from helpers import run_cli


def _fake_run(d, method, seed, accs, *, setting=(), finished=True, data="mnist_mnistm"):
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "config.yaml").write_text(
        f"method:\n  name: {method}\ndata:\n  name: {data}\nseed: {seed}\ntrainer:\n  max_steps: {len(accs) * 100}\n")
    (d / ".hydra" / "overrides.yaml").write_text(
        "".join(f"- {o}\n" for o in (f"method={method}", f"seed={seed}", *setting)))
    rows = []
    for i, acc in enumerate(accs):
        rows.append({"step": 100 * (i + 1), "source_acc": 99.0, "target_acc": acc,
                     "source_val_acc": 90.0 + i, "target_entropy": 1.0 - 0.1 * i if i != 1 else 0.01,
                     "dev": 0.5, "snd": float(i)})
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if finished:
        (d / "summary.json").write_text(json.dumps({"method": method, "data": data, "seed": seed,
                                                    "target_acc": accs[-1], "source_acc": 99.0}))


def test_report_over_a_fixture_tree(tmp_path):
    sweep = tmp_path / "sweep"
    _fake_run(sweep / "0_source_only_seed0", "source_only", 0, [50.0, 52.0, 54.0])
    _fake_run(sweep / "1_source_only_seed1", "source_only", 1, [48.0, 60.0, 58.0])
    for i, (w, seed, accs) in enumerate([(0.5, 0, [60.0, 70.0, 80.0]), (0.5, 1, [62.0, 72.0, 76.0]),
                                         (1.0, 0, [61.0, 66.0, 70.0])]):
        _fake_run(sweep / f"{i + 2}_dann_seed{seed}", "dann", seed, accs, setting=[f"method.adv_weight={w}"])
    _fake_run(sweep / "5_dann_seed2", "dann", 2, [10.0], setting=["method.adv_weight=0.5"], finished=False)
    res = report([sweep], tmp_path / "out")
    rows = {(r["method"], r["setting"]): r for r in res["rows"]}
    assert set(rows) == {("source_only", "-"), ("dann", "method.adv_weight=0.5"), ("dann", "method.adv_weight=1.0")}
    so = rows[("source_only", "-")]
    assert so["seeds"] == "2" and so["last"] == f"56.00 ± {math.sqrt(8):.2f}"
    assert so["oracle"] == f"57.00 ± {math.sqrt(18):.2f}"  # best per seed: 54, 60
    assert so["entropy"] == "56.00 ± 5.66"  # lowest entropy is the second evaluation: 52, 60
    assert so["source_val"] == f"56.00 ± {math.sqrt(8):.2f}"  # highest source_val: the last
    d05 = rows[("dann", "method.adv_weight=0.5")]
    assert d05["seeds"] == "2" and d05["last"] == f"78.00 ± {math.sqrt(8):.2f}"  # the unfinished seed 2 is not in
    assert rows[("dann", "method.adv_weight=1.0")]["last"] == "70.00 ± 0.00"
    assert [r.seed for r in res["unfinished"]] == [2]
    md = (tmp_path / "out" / "report.md").read_text()
    assert "Unfinished runs" in md and "5_dann_seed2" in md and "76.66" in md
    with open(tmp_path / "out" / "report.csv") as f:
        table = list(csv.DictReader(f))
    assert {r["method"] for r in table} == {"source_only", "dann"}
    assert float(next(r for r in table if r["method"] == "source_only")["last_mean"]) == 56.0
    png = tmp_path / "out" / "target_acc_mnist_mnistm.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_labels_segmentation_groups_as_miou(tmp_path):
    d = tmp_path / "seg" / "0_adaptsegnet_seed0"
    _fake_run(d, "adaptsegnet", 0, [20.0, 30.0], data="digits_seg", finished=False)
    rows = [{"step": r["step"], "source_miou": 60.0, "target_miou": r["target_acc"], "source_val_miou": 50.0}
            for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines())]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "summary.json").write_text(json.dumps({"method": "adaptsegnet", "data": "digits_seg", "seed": 0,
                                                "target_miou": 30.0, "source_miou": 60.0}))
    _fake_run(tmp_path / "cls" / "0_dann_seed0", "dann", 0, [70.0])
    res = report([tmp_path], tmp_path / "out", figures=False)
    rows = {r["method"]: r for r in res["rows"]}
    assert rows["adaptsegnet"]["metric"] == "mIoU" and rows["adaptsegnet"]["last"] == "30.00 ± 0.00"
    assert rows["adaptsegnet"]["oracle"] == "30.00 ± 0.00" and rows["dann"]["metric"] == "acc"
    with open(tmp_path / "out" / "report.csv") as f:
        assert {r["method"]: r["metric"] for r in csv.DictReader(f)} == {"adaptsegnet": "mIoU", "dann": "acc"}


def test_report_cli_errors_on_an_empty_tree(tmp_path):
    res = run_cli("report", str(tmp_path), cwd=tmp_path, timeout=60)
    assert res.returncode == 2 and "no runs" in res.stderr
