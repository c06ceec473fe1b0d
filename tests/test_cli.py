"""The ``uda`` command: a few training steps end to end, Hydra sweeps (their directories, re-runs that skip
finished runs and resume unfinished ones), the submitit / SLURM launchers, config mistakes as one clear
line, and ``--help`` (which imports no torch)."""
import json

import pytest

from helpers import MNIST_SMALL, SMALL, run_cli
from uda.cli import main


def test_cli_end_to_end_few_steps(tmp_path, mnist_root):
    res = run_cli("train", *MNIST_SMALL, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "target_acc=" in res.stdout
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["data"] == "mnist_mnistm"
    assert (tmp_path / "run" / ".hydra" / "config.yaml").is_file()
    # its first lines: what runs, where the data is, where it writes
    log = [ln.split(" - ", 1)[1] for ln in (tmp_path / "run" / "train.log").read_text().splitlines()[:3]]
    assert log[0] == "dann on mnist_mnistm (mnist -> mnistm), backbone dann_mnist, 6 steps evaluated every 3, seed 0"
    assert log[1].startswith(f"data root {mnist_root}; mnist present (") and "; mnistm present (" in log[1]
    assert log[2] == f"run directory: {tmp_path / 'run'}"


def test_a_short_run_is_evaluated_min_evals_times_and_at_its_last_step(tmp_path, caplog):
    import logging

    from helpers import make_cfg
    from uda.cli import announce
    from uda.engine.loop import train
    from uda.schema import validate

    cfg = make_cfg(*SMALL, "trainer.min_evals=5", "trainer.max_steps=12", "trainer.eval_every=1000")
    validate(cfg)
    with caplog.at_level(logging.INFO, logger="uda"):
        announce(cfg, tmp_path)
    assert "12 steps evaluated every 2 (trainer.eval_every=1000 lowered so that it is evaluated at least " \
           "trainer.min_evals=5 times)" in caplog.text
    train(cfg, tmp_path)
    steps = [json.loads(ln)["step"] for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6, 8, 10, 12]  # 12 // 5 = every 2 steps, instead of once at the end
    summary = train(make_cfg(*SMALL, "trainer.max_steps=7", "trainer.eval_every=3"), tmp_path / "b")
    rows = [json.loads(ln) for ln in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [3, 6, 7]  # the last step too: summary.json reports the last checkpoint's
    assert summary["target_acc"] == rows[-1]["target_acc"]


def test_cli_multirun_gives_each_run_its_own_directory(tmp_path):
    small = [o for o in SMALL if not o.startswith("trainer.max_steps")]
    res = run_cli("train", "-m", "method=source_only,dann", "seed=0", "trainer.max_steps=2", *small,
                  f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    runs = sorted(p.parent.name for p in (tmp_path / "sweep").glob("*/summary.json"))
    assert runs == ["0_source_only_seed0", "1_dann_seed0"]


@pytest.mark.slow  # several full CLI runs
def test_sweep_rerun_skips_finished_runs_and_resumes_unfinished_ones(tmp_path):
    small = [o for o in SMALL if not o.startswith("trainer.max_steps")]
    args = ["train", "-m", "method=source_only,dann", "seed=0", "trainer.max_steps=2", *small,
            f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    assert run_cli(*args, cwd=tmp_path).returncode == 0
    done0, done1 = (tmp_path / "sweep" / n / "summary.json" for n in ("0_source_only_seed0", "1_dann_seed0"))
    first0, first1 = done0.read_text(), done1.read_text()
    done1.unlink()  # run 1 as if killed after its last checkpoint, before its summary
    res = run_cli(*args, "resume=auto", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.count("target_acc=") == 2
    assert done0.read_text() == first0  # not trained again: the summary (with its wall time) is untouched
    log0 = (done0.parent / "train.log").read_text()
    assert "already finished" in log0
    again = json.loads(done1.read_text())
    assert again["target_acc"] == json.loads(first1)["target_acc"]  # resumed the finished checkpoint
    assert "resumed from" in (done1.parent / "train.log").read_text()
    # the same sweep directory with other settings is refused, naming the difference
    res = run_cli(*[a.replace("trainer.max_steps=2", "trainer.max_steps=3") for a in args], cwd=tmp_path)
    assert res.returncode == 2 and "trainer.max_steps" in res.stderr and "hydra.sweep.dir" in res.stderr, res.stderr


@pytest.mark.slow  # several full CLI runs
def test_sweep_through_the_submitit_launcher_and_its_rerun(tmp_path):
    """Hydra's submitit launcher (local executor: the SLURM one's code path without a cluster)."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    small = [o for o in SMALL if not o.startswith("trainer.max_steps")]
    args = ["train", "-m", "hydra/launcher=submitit_local", "seed=0,1", "trainer.max_steps=2", *small,
            f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    res = run_cli(*args, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    done = sorted((tmp_path / "sweep").glob("*/summary.json"))
    assert [p.parent.name for p in done] == ["0_dann_seed0", "1_dann_seed1"]
    before = [p.read_text() for p in done]
    res = run_cli(*args, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert [p.read_text() for p in done] == before  # the re-run skipped both finished runs
    assert all("already finished" in (p.parent / "train.log").read_text() for p in done)


def test_the_slurm_launcher_config_composes_with_requeue_on_timeout(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    res = run_cli("train", "hydra/launcher=slurm", "hydra.launcher.partition=gpu", "--cfg", "hydra",
                  "--package", "hydra.launcher", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "SlurmLauncher" in res.stdout and "max_num_timeout: 3" in res.stdout and "partition: gpu" in res.stdout


def test_a_launcher_whose_plugin_is_missing_names_the_extra(monkeypatch, capsys):
    import importlib.util

    from uda import cli

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SystemExit) as e:
        cli._check_launcher(["seed=0,1", "hydra/launcher=slurm"])
    assert e.value.code == 2 and '.[slurm]' in capsys.readouterr().err
    cli._check_launcher(["hydra/launcher=basic"])  # Hydra's own launchers need nothing


def test_cli_help_lists_subcommands(capsys):
    assert main(["--help"]) == 0
    assert "train" in capsys.readouterr().out
    assert main(["frobnicate"]) == 2
    assert "valid commands: train" in capsys.readouterr().err


def test_cli_help_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys; from uda.cli import main; main(['--help']); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False"
