"""`uda report` over a fixture tree of runs: grouping, mean ± std over seeds per criterion, unfinished
runs, the segmentation metric, the files it writes, and its CLI error on an empty tree."""
import csv
import json
import math

import pytest

from helpers import cli
from uda.report import report


def _fake_run(d, method, seed, accs, *, setting=(), finished=True, data="mnist_mnistm", scores=None, paths=None):
    """A run directory: ``accs`` the target accuracy per evaluation (every 100 steps); ``scores`` extra
    metrics.jsonl columns (name -> one value per evaluation); ``paths`` (source, target) for data=custom."""
    (d / ".hydra").mkdir(parents=True)
    data_yaml = f"  name: {data}\n" + (
        "".join(f"  {role}:\n    path: {p}\n" for role, p in zip(("source", "target"), paths)) if paths else ""
    )
    (d / ".hydra" / "config.yaml").write_text(
        f"method:\n  name: {method}\ndata:\n{data_yaml}seed: {seed}\ntrainer:\n  max_steps: {len(accs) * 100}\n")
    (d / ".hydra" / "overrides.yaml").write_text(
        "".join(f"- {o}\n" for o in (f"method={method}", f"seed={seed}", *setting)))
    rows = []
    for i, acc in enumerate(accs):
        rows.append({"step": 100 * (i + 1), "source_acc": 99.0, "target_acc": acc,
                     "source_val_acc": 90.0 + i, "target_entropy": 1.0 - 0.1 * i if i != 1 else 0.01,
                     "dev": 0.5, "snd": float(i)} | {k: v[i] for k, v in (scores or {}).items()})
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if finished:
        (d / "summary.json").write_text(json.dumps({"method": method, "data": data, "seed": seed,
                                                    "target_acc": accs[-1], "source_acc": 99.0}))


T975 = {1: 12.7062047, 2: 4.30265273}  # Student's t quantile 0.975 by degrees of freedom (tables)


def cell(mean, std, n):
    """A report cell by hand: mean ± std [mean -+ t_{0.975, n-1} std / sqrt(n)]."""
    if n < 2:
        return f"{mean:.2f} ± {std:.2f}"
    half = T975[n - 1] * std / math.sqrt(n)
    return f"{mean:.2f} ± {std:.2f} [{mean - half:.2f}, {mean + half:.2f}]"


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
    assert so["seeds"] == "2" and so["last"] == cell(56, math.sqrt(8), 2)  # 54, 58
    assert so["oracle"] == cell(57, math.sqrt(18), 2)  # best per seed: 54, 60
    assert so["entropy"] == cell(56, math.sqrt(32), 2)  # lowest entropy is the second evaluation: 52, 60
    assert so["source_val"] == cell(56, math.sqrt(8), 2)  # highest source_val: the last
    d05 = rows[("dann", "method.adv_weight=0.5")]
    assert d05["seeds"] == "2" and d05["last"] == cell(78, math.sqrt(8), 2)  # the unfinished seed 2 is not in
    assert rows[("dann", "method.adv_weight=1.0")]["last"] == "70.00 ± 0.00"  # one seed: no interval
    # paired by seed against source-only: d = 80 - 54, 76 - 58 = 26, 18; t = 22 / (sqrt(32) / sqrt(2)) = 5.5,
    # one degree of freedom (a Cauchy): p = 1 - 2 atan(5.5) / pi
    assert d05["vs_source_only"] == f"+22.00 (p={1 - 2 * math.atan(5.5) / math.pi:.3f}, n=2)"
    assert so["vs_source_only"] == "-"
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
    assert rows["adaptsegnet"]["dev"] == "-"  # no per-pixel reading: never scored
    with open(tmp_path / "out" / "report.csv") as f:
        assert {r["method"]: r["metric"] for r in csv.DictReader(f)} == {"adaptsegnet": "mIoU", "dann": "acc"}


def test_report_cli_errors_on_an_empty_tree(tmp_path):
    res = cli("report", str(tmp_path), cwd=tmp_path, timeout=60)
    assert res.returncode == 2 and "no runs" in res.stderr


def test_criteria_regret_and_rank_correlation_by_hand(tmp_path):
    # seed 0: target 50, 70, 60 with IM 0.1, 0.2, 0.3 -> IM picks the last (60), oracle 70: regret 10;
    # ranks of IM 1 2 3 vs target 1 3 2: Spearman 0.5, Kendall (2 - 1) / 3
    # seed 1: target 40, 45, 80 with IM 0.3, 0.2, 0.1 -> picks 40, regret 40; Spearman -1, Kendall -1
    _fake_run(tmp_path / "r0", "dann", 0, [50.0, 70.0, 60.0], scores={"target_im": [0.1, 0.2, 0.3]})
    _fake_run(tmp_path / "r1", "dann", 1, [40.0, 45.0, 80.0], scores={"target_im": [0.3, 0.2, 0.1]})
    res = report([tmp_path], tmp_path / "out", figures=False)
    im = next(r for r in res["criteria"] if r["criterion"] == "im" and r["method"] == "dann")
    assert im["runs"] == 2 and im["regret_mean"] == 25.0 and im["regret_std"] == pytest.approx(math.sqrt(450))
    assert im["spearman"] == pytest.approx((0.5 - 1) / 2) and im["kendall"] == pytest.approx((1 / 3 - 1) / 2)
    # keeping the last checkpoint: regrets 10 and 0
    last = next(r for r in res["criteria"] if r["criterion"] == "last" and r["method"] == "dann")
    assert last["regret_mean"] == 5.0
    # entropy is 1.0, 0.01, 0.8 in both runs (the fixture's): picks the middle evaluation, regret 0 and 35;
    # lower is better, so its signed score -entropy ranks 1 3 2 against target 1 3 2 (seed 0): Spearman 1
    ent = next(r for r in res["criteria"] if r["criterion"] == "entropy" and r["method"] == "dann")
    assert ent["regret_mean"] == 17.5
    with open(tmp_path / "out" / "criteria.csv") as f:
        table = list(csv.DictReader(f))
    assert {r["criterion"] for r in table} >= {"last", "im", "entropy", "source_val", "dev", "snd"}
    assert {r["method"] for r in table} == {"dann", "(all)"}
    md = (tmp_path / "out" / "report.md").read_text()
    assert "How far to trust each criterion: mnist_mnistm" in md and f"| `im` | {cell(25, math.sqrt(450), 2)} |" in md


def test_selection_across_the_sweep_by_hand(tmp_path):
    from uda.report import SELECTION_COLUMNS, recommended_criterion

    # MaNo scores per evaluation; each (configuration, step) is scored by the mean over its two seeds
    _fake_run(tmp_path / "so0", "source_only", 0, [50.0, 52.0], scores={"target_mano": [0.9, 0.2]})
    _fake_run(tmp_path / "so1", "source_only", 1, [54.0, 56.0], scores={"target_mano": [0.7, 0.2]})  # step 100: 0.8
    _fake_run(tmp_path / "a0", "dann", 0, [60.0, 80.0], setting=["method.adv_weight=0.3"],
              scores={"target_mano": [0.1, 0.5]})
    _fake_run(tmp_path / "a1", "dann", 1, [62.0, 90.0], setting=["method.adv_weight=0.3"],
              scores={"target_mano": [0.1, 0.6]})  # step 200: 0.55
    res = report([tmp_path], tmp_path / "out", figures=False)
    rows = {r["criterion"]: r for r in res["selection"]}
    mano = rows["mano"]  # source-only is a candidate like any other, and MaNo chooses it
    assert (mano["chosen"], mano["step"]) == ("source_only", 100)
    assert mano["target_mean"] == 52.0 and mano["target_std"] == pytest.approx(math.sqrt(8))
    assert (mano["oracle_chosen"], mano["oracle_step"], mano["oracle_mean"]) == (
        "dann method.adv_weight=0.3",
        200,
        85.0,
    )
    assert mano["regret"] == 33.0
    # source_val (90 + i in the fixture) ties across configurations at the last step: the first configuration
    assert rows["source_val"]["step"] == 200
    with open(tmp_path / "out" / "selection.csv") as f:
        reader = csv.reader(f)
        assert tuple(next(reader)) == SELECTION_COLUMNS
        body = list(reader)
    assert sum(r[2] == "yes" for r in body) == 1
    assert next(r for r in body if r[2] == "yes")[1] == recommended_criterion()
    mano_row = next(r for r in body if r[1] == "mano")
    assert mano_row[3] == "source_only" and float(mano_row[8]) == 33.0
    assert "Choosing across the sweep" in (tmp_path / "out" / "report.md").read_text()


def _border_is_white(png, width=3):
    from PIL import Image

    img = Image.open(png).convert("RGB")
    w, h = img.size
    px = img.load()
    edge = [(x, y) for x in range(w) for y in (*range(width), *range(h - width, h))]
    edge += [(x, y) for y in range(h) for x in (*range(width), *range(w - width, w))]
    return all(px[p] == (255, 255, 255) for p in edge)


def test_one_figure_per_custom_pair_with_short_unclipped_labels(tmp_path):
    long = "/data/" + "a_very_long_directory_name_for_the_photographs/" * 3
    pairs = {"mnist_photos": (long + "mnist.npz", long + "photos"), "usps_paintings": ("/x/usps.npz", "/y/paintings")}
    for n, (pair, paths) in enumerate(pairs.items()):
        over = [f"data.source.path={paths[0]}", f"data.target.path={paths[1]}"]
        for w in ("0.1", "0.3"):
            _fake_run(tmp_path / f"{pair}_{w}", "dann", 0, [40.0 + n, 60.0], data="custom", paths=paths,
                      setting=[*over, f"method.adv_weight={w}", "trainer.max_steps=200"])
    res = report([tmp_path], tmp_path / "out")
    names = sorted(p.name for p in res["figures"])
    assert names == ["regret_custom_mnist_photos.png", "regret_custom_usps_paintings.png",
                     "target_acc_custom_mnist_photos.png", "target_acc_custom_usps_paintings.png"]
    labels = sorted(g.label for g in res["groups"])  # the override all groups share is left out, paths too
    assert labels == ["dann method.adv_weight=0.1"] * 2 + ["dann method.adv_weight=0.3"] * 2
    for png in res["figures"]:
        assert _border_is_white(png), f"{png.name}: text reaches the image's edge"
    assert {r["pair"] for r in res["selection"]} == {"custom_mnist_photos", "custom_usps_paintings"}


def test_figure_keeps_a_very_long_label_inside(tmp_path):
    from uda.report import figures
    from uda.report.runs import find_runs, group_runs

    setting = [f"method.option_number_{i}=a_long_value_{i}" for i in range(8)]
    _fake_run(tmp_path / "r" / "a", "dann", 0, [50.0, 60.0], setting=setting)
    _fake_run(tmp_path / "r" / "b", "source_only", 0, [50.0, 55.0])
    groups = group_runs(find_runs([tmp_path / "r"]))
    png = figures.plot_pair("a_pair_with_a_rather_long_name_" * 3, groups, tmp_path)
    assert _border_is_white(png)


def test_visda_is_reported_by_mean_class_accuracy(tmp_path):
    """VisDA-2017's protocol: the report's numbers are the mean class accuracy, not the accuracy."""
    for seed, (acc, mca) in enumerate([(70.0, 50.0), (72.0, 54.0)]):
        d = tmp_path / f"{seed}_dann_seed{seed}"
        _fake_run(d, "dann", seed, [60.0, acc], data="visda17", scores={"target_mean_class_acc": [40.0, mca]})
        summary = json.loads((d / "summary.json").read_text()) | {"target_mean_class_acc": mca}
        (d / "summary.json").write_text(json.dumps(summary))
    row = report([tmp_path], tmp_path / "out")["rows"][0]
    assert row["metric"] == "mean class acc" and row["last"] == cell(52, math.sqrt(8), 2)  # 50, 54, not 70, 72


def test_runs_that_differ_only_by_their_directory_are_counted_once(tmp_path):
    """The same configuration and seed found twice (a run copied, or re-run into another directory) is one
    seed, not two: the report lists the duplicate and averages the rest."""
    _fake_run(tmp_path / "a" / "run", "source_only", 0, [50.0, 52.0])
    _fake_run(tmp_path / "b" / "run", "source_only", 0, [50.0, 49.0])
    _fake_run(tmp_path / "b" / "run1", "source_only", 1, [40.0, 60.0])
    res = report([tmp_path], tmp_path / "out", figures=False)
    (row,) = res["rows"]
    assert row["seeds"] == "2" and row["last"] == cell(56.0, math.sqrt(32), 2)  # seeds 0 (a/run) and 1: 52, 60
    (group,) = res["groups"]
    assert [(str(d.path), str(k.path)) for d, k in group.duplicates] == [(str(tmp_path / "b" / "run"),
                                                                         str(tmp_path / "a" / "run"))]
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Duplicate runs (the same configuration and seed; counted once)" in md
    assert f"| {tmp_path / 'b' / 'run'} | {tmp_path / 'a' / 'run'} | 49.00, 52.00 |" in md


def test_runs_evaluated_once_are_named_and_left_out_of_the_criteria(tmp_path):
    """A run evaluated once gives every criterion the same pick (regret 0 by construction): not evidence."""
    _fake_run(tmp_path / "r0", "source_only", 0, [50.0])
    _fake_run(tmp_path / "r1", "source_only", 1, [48.0, 58.0, 54.0])
    res = report([tmp_path], tmp_path / "out", figures=False)
    last = [r for r in res["criteria"] if r["criterion"] == "last" and r["method"] == "source_only"]
    assert [r["runs"] for r in last] == [1] and last[0]["regret_mean"] == pytest.approx(4.0)  # r1 alone: 58 - 54
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Runs evaluated once (left out of the criteria tables)" in md and f"- {tmp_path / 'r0'} (" in md
    assert f"- {tmp_path / 'r1'} (" not in md


def test_runs_timed_beside_a_busy_process_are_flagged(tmp_path):
    _fake_run(tmp_path / "quiet", "source_only", 0, [50.0, 52.0])
    _fake_run(tmp_path / "busy", "source_only", 1, [50.0, 51.0])
    summary = json.loads((tmp_path / "busy" / "summary.json").read_text())
    summary |= {"contended": True, "contention_max_share": 0.68, "images_per_s": 210.0}
    (tmp_path / "busy" / "summary.json").write_text(json.dumps(summary))
    report([tmp_path], tmp_path / "out", figures=False)
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Runs timed beside a busy process (summary.json: contended)" in md
    assert f"- {tmp_path / 'busy'} (210.0 img/s; others used up to 68% of its cores)" in md
    assert f"- {tmp_path / 'quiet'} (" not in md
