"""Evaluation: target validation labels are never read, each evaluation records the selection scores
and best.pt keeps the evaluation the label-free criterion prefers, and `uda eval` reproduces the loop's
final evaluation (classification and segmentation) and names the checkpoints a run has."""
import json
import math
import shutil

import pytest
import torch

from helpers import SEG_SMALL, SMALL, cli, make_cfg, run_cli
from uda import selection
from uda.data.pairs import Normalize, build_pair
from uda.engine import checkpoint as ckpt
from uda.engine.evaluation import evaluate_pair, mixval_predictions
from uda.engine.loop import train
from uda.methods import get_method

SCORE_KEYS = {selection.criterion_key(c)[0] for c in selection.LABEL_FREE}


def test_evaluation_never_reads_target_validation_labels():
    cfg = make_cfg(*SMALL)
    source, target, info = build_pair(cfg.data)
    method = get_method("dann").from_config(cfg, info)
    prepare = Normalize(cfg.data.mean, cfg.data.std, torch.device("cpu"), False)
    a = evaluate_pair(method, source, target, info, prepare=prepare, batch_size=64, device=torch.device("cpu"))
    target.val_y = None  # any read would fail
    b = evaluate_pair(method, source, target, info, prepare=prepare, batch_size=64, device=torch.device("cpu"))
    assert a == b and SCORE_KEYS <= a.keys()
    assert all(math.isfinite(a[k]) for k in SCORE_KEYS)


def test_mixval_mixes_the_pairs_it_is_given():
    seen = []

    class Recorder:
        def predict(self, x):
            seen.append(x.clone())
            return torch.zeros(len(x), 3)

    x = torch.arange(5, dtype=torch.uint8).view(5, 1, 1, 1).expand(5, 1, 2, 2).contiguous() * 10
    a, b = torch.tensor([0, 1, 4]), torch.tensor([4, 3, 4])
    mixval_predictions(Recorder(), x, a, b, prepare=lambda u: u.float(), batch_size=2)
    mixed = torch.cat(seen)[:, 0, 0, 0]
    lam = selection.MIXVAL_LAMBDA
    assert mixed.tolist() == pytest.approx([lam * 10 * i + (1 - lam) * 10 * j for i, j in zip(a.tolist(), b.tolist())])


@pytest.mark.parametrize("criterion", ["entropy", "iwcv", "mixval"])
def test_run_records_scores_keeps_best_and_summarises_selection(tmp_path, criterion):
    summary = train(make_cfg(*SMALL, f"trainer.select={criterion}"), tmp_path)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(SCORE_KEYS <= r.keys() for r in rows)
    key, higher = selection.criterion_key(criterion)
    chosen = max(rows, key=lambda r: ((r[key] if higher else -r[key]), r["step"]))
    best = ckpt.load(tmp_path / "checkpoints" / "best.pt")
    assert best["step"] == chosen["step"] == summary["best_checkpoint"]["step"]
    assert summary["best_checkpoint"]["criterion"] == criterion
    assert summary["selected"][criterion]["step"] == chosen["step"]
    assert summary["selected"]["oracle"]["target_acc"] == max(r["target_acc"] for r in rows)


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """A run as `uda train` leaves it (.hydra/ included), trained once for the `uda eval` tests."""
    d = tmp_path_factory.mktemp("cli_run")
    res = run_cli("train", *SMALL, "trainer.keep_every=3", f"hydra.run.dir={d / 'run'}", cwd=d)
    assert res.returncode == 0, res.stderr[-2000:]
    return d / "run"


def test_uda_eval_reproduces_the_final_evaluation(cli_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(cli_run, run)
    out = cli("eval", str(run))
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads((run / "eval_last_synthetic.json").read_text())
    last = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()][-1]
    assert result["step"] == 6
    for key in ("source_acc", "target_acc", "source_val_acc"):
        assert result[key] == pytest.approx(last[key])
    bad = cli("eval", str(run), "checkpoint=nope")
    assert bad.returncode == 2 and "last" in bad.stderr and "best" in bad.stderr


def test_uda_eval_prints_its_result_when_the_run_cannot_be_written(cli_run, tmp_path, monkeypatch, capsys):
    """A read-only run directory (simulated at the write: root may write anywhere) loses only the file."""
    from uda import eval_run
    from uda.cli import main

    run = tmp_path / "run"
    shutil.copytree(cli_run, run)

    def refuse(data, path, before_replace=None):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(eval_run, "write_durable", refuse)
    assert main(["eval", str(run)]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out)
    assert result["step"] == 6 and result["written_to"] is None and "target_acc" in result
    assert err.strip() == (f"uda: warning: could not write {run / 'eval_last_synthetic.json'} (Permission denied); "
                           f"the result is printed above")
    assert not (run / "eval_last_synthetic.json").exists()


def test_cli_source_only_on_a_segmentation_pair_prints_miou(tmp_path):
    res = run_cli("train", "method=source_only", *SEG_SMALL, "trainer.select=mano", f"hydra.run.dir={tmp_path / 'run'}",
                  cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "target_miou=" in res.stdout
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["method"] == "source_only" and "target_miou" in summary
    # the per-pixel scores, and best.pt following MaNo
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all({"source_val_miou", "target_entropy", "target_im", "target_mano"} <= r.keys() for r in rows)
    assert not any("dev" in r or "mixval" in r for r in rows)
    assert summary["best_checkpoint"]["step"] == max(rows, key=lambda r: (r["target_mano"], r["step"]))["step"]
    # `uda eval` on a segmentation run re-computes the final evaluation: mIoU and per-class IoUs
    out = cli("eval", str(tmp_path / "run"))
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads((tmp_path / "run" / "eval_last_synthetic_seg.json").read_text())
    assert "target_acc" not in result
    for key in ("source_miou", "target_miou"):
        assert result[key] == pytest.approx(summary[key], abs=1e-6)
    assert result["target_iou"] == summary["target_iou"]


def test_a_criterion_without_a_per_pixel_reading_is_refused_for_segmentation(tmp_path):
    res = cli("train", "method=source_only", *SEG_SMALL, "trainer.select=dev", f"hydra.run.dir={tmp_path / 'r'}")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "trainer.select=dev" in res.stderr and "source_val, entropy, im, mano" in res.stderr


def test_rescore_recomputes_a_score_from_the_kept_checkpoints(cli_run, tmp_path):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("rescore", Path(__file__).parents[2] / "scripts" / "rescore.py")
    rescore = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rescore)
    run = tmp_path / "run"
    shutil.copytree(cli_run, run)
    metrics = run / "metrics.jsonl"
    rows = [json.loads(x) for x in metrics.read_text().splitlines()]
    metrics.write_text("".join(json.dumps(r | {"mixval": -1.0}) + "\n" for r in rows))  # a wrong recorded score
    diffs = rescore.rescore(run, ["mixval"])
    assert diffs and max(diffs.values()) == 0.0  # every other score reproduced exactly
    again = [json.loads(x) for x in metrics.read_text().splitlines()]
    assert [r["mixval"] for r in again] == [r["mixval"] for r in rows]
    assert (run / "metrics.recorded.jsonl").is_file()
