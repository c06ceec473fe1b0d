"""Label-free selection scores against hand computations, best checkpoints, `uda eval`, `uda report`."""
import csv
import json
import math

import pytest
import torch

from uda import selection
from uda.engine import checkpoint as ckpt
from uda.engine.loop import train
from uda.report import report

from conftest import SMALL, make_cfg, run_cli


# --- scores ------------------------------------------------------------------------------------

def test_entropy_by_hand_and_only_of_distributions():
    p = torch.tensor([[0.5, 0.5], [1.0, 0.0], [0.25, 0.75]])
    hand = (math.log(2) + 0.0 - (0.25 * math.log(0.25) + 0.75 * math.log(0.75))) / 3
    assert selection.entropy(p).item() == pytest.approx(hand, abs=1e-9)
    with pytest.raises(ValueError, match="sum to 1"):
        selection.entropy(torch.tensor([[0.5, 0.2]]))


def test_snd_by_hand():
    p = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9]])
    t = 0.05
    unit = [[a / math.hypot(*r) for a in r] for r in p.tolist()]
    total = 0.0
    for i in range(3):
        sims = [sum(a * b for a, b in zip(unit[i], unit[j])) / t for j in range(3) if j != i]
        z = sum(math.exp(s) for s in sims)
        q = [math.exp(s) / z for s in sims]
        total += -sum(x * math.log(x) for x in q)
    assert selection.snd(p, t).item() == pytest.approx(total / 3, rel=1e-9)


def test_dev_risk_by_hand():
    # w = [1, 2, 3], L = [1, 1, 4]: wL = [1, 2, 12], mean 5; Cov(wL, w) = 11 / 2; Var(w) = 1
    # eta = -5.5; risk = 5 + eta * 2 - eta = -0.5
    assert selection.dev_risk(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 1.0, 4.0])).item() == pytest.approx(-0.5)


def test_dev_weights_follow_the_domain_classifier():
    g = torch.Generator().manual_seed(0)
    src = torch.randn(400, 5, generator=g)
    tgt = torch.randn(400, 5, generator=g) + torch.tensor([2.0, 0, 0, 0, 0])
    p_t = selection.fit_domain_classifier(src, tgt)
    assert p_t(tgt).mean() > 0.75 and p_t(src).mean() < 0.25
    # same distributions: weights ~1, DEV ~ the plain mean loss
    same = torch.randn(400, 5, generator=g)
    losses = torch.rand(300, generator=g)
    risk = selection.dev_score(src, same, torch.randn(300, 5, generator=g), losses)
    assert risk.item() == pytest.approx(losses.mean().item(), abs=0.05)


def test_select_directions_and_ties():
    rows = [{"step": 1, "source_val_acc": 90.0, "target_entropy": 0.5, "dev": 0.3, "snd": 2.0, "target_acc": 50.0},
            {"step": 2, "source_val_acc": 95.0, "target_entropy": 0.7, "dev": 0.1, "snd": 1.0, "target_acc": 60.0},
            {"step": 3, "source_val_acc": 95.0, "target_entropy": 0.9, "dev": 0.2, "snd": 3.0, "target_acc": 55.0}]
    assert selection.select(rows, "source_val")["step"] == 3  # tie: the later step
    assert selection.select(rows, "entropy")["step"] == 1
    assert selection.select(rows, "dev")["step"] == 2
    assert selection.select(rows, "snd")["step"] == 3
    assert selection.select(rows, "oracle")["step"] == 2
    assert selection.select([{"step": 1, "target_acc": 1.0}], "dev") is None


# --- the loop and `uda eval` -------------------------------------------------------------------

def test_evaluation_never_reads_target_validation_labels(mnist_root):
    from uda.data.pairs import Normalize, build_pair
    from uda.metrics import evaluate
    from uda.registry import get_method

    cfg = make_cfg(*SMALL)
    source, target, info = build_pair(cfg.data)
    method = get_method("dann").from_config(cfg, info)
    prepare = Normalize(cfg.data.mean, cfg.data.std, torch.device("cpu"), False)
    a = evaluate(method, source, target, prepare=prepare, batch_size=64)
    target.val_y = None  # any read would fail
    b = evaluate(method, source, target, prepare=prepare, batch_size=64)
    assert a == b and {"source_val_acc", "target_entropy", "snd", "dev"} <= a.keys()


def test_run_records_scores_keeps_best_and_summarises_selection(tmp_path, mnist_root):
    summary = train(make_cfg(*SMALL, "trainer.select=entropy"), tmp_path)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all({"source_val_acc", "target_entropy", "snd", "dev"} <= r.keys() for r in rows)
    chosen = min(rows, key=lambda r: (r["target_entropy"], -r["step"]))
    best = ckpt.load(tmp_path / "checkpoints" / "best.pt")
    assert best["step"] == chosen["step"] == summary["best_checkpoint"]["step"]
    assert summary["selected"]["entropy"]["step"] == chosen["step"]
    assert summary["selected"]["oracle"]["target_acc"] == max(r["target_acc"] for r in rows)


def test_uda_eval_reproduces_the_final_evaluation(tmp_path, mnist_root):
    run = tmp_path / "run"
    res = run_cli("train", *SMALL, f"hydra.run.dir={run}", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    out = run_cli("eval", str(run), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads((run / "eval_last_mnist_mnistm.json").read_text())
    last = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()][-1]
    assert result["step"] == 6
    for key in ("source_acc", "target_acc", "source_val_acc"):
        assert result[key] == pytest.approx(last[key])
    bad = run_cli("eval", str(run), "checkpoint=nope", cwd=tmp_path)
    assert bad.returncode == 2 and "last" in bad.stderr and "best" in bad.stderr


# --- `uda report` ------------------------------------------------------------------------------

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
