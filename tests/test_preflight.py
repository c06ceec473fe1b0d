"""What ``uda train`` checks before Hydra writes anything (``uda.preflight``): every kind of rejection is one
line and exit status 2, and a rejected command leaves the run it was pointed at byte for byte as it was.
No data is read and nothing is trained here: a rejected command stops before both."""
import hashlib
import json
import os
from pathlib import Path

import pytest

from helpers import run_cli
from uda.cli import main
from uda.preflight import check_writable
from uda.schema import ConfigError
from uda.schema.trainer import TrainerConfig


def fake_run(d: Path, *, finished: bool = True) -> Path:
    """A run directory as ``uda train`` leaves it: .hydra/, train.log, a checkpoint, metrics and a summary."""
    (d / ".hydra").mkdir(parents=True)
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
        (d / ".hydra" / name).write_text(f"# {name} of the finished run\n")
    (d / "checkpoints").mkdir()
    (d / "checkpoints" / "last.pt").write_bytes(b"weights")
    (d / "train.log").write_text("trained\n")
    (d / "metrics.jsonl").write_text('{"step": 10, "target_acc": 50.0}\n')
    if finished:
        (d / "summary.json").write_text('{"target_acc": 50.0}\n')
    return d


def digests(d: Path) -> dict[str, str]:
    return {
        str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*")) if p.is_file()
    }


def refused(capsys, *argv: str) -> str:
    """``uda train argv`` in this process: exit 2 and exactly one line on stderr, nothing on stdout."""
    assert main(["train", *argv]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("uda: error: ") and not out, err
    return lines[0]


# every kind of rejection, with what its one line must say
REJECTIONS = [
    (["optimizer.lr=-1"], ["optimizer.lr must be > 0, got -1.0"]),
    (
        ["trainer.max_stpes=3"],
        ["unknown key trainer.max_stpes", "(did you mean trainer.max_steps?)", "valid keys of trainer:"],
    ),
    (
        ["+trainer.max_stpes=3"],
        ["unknown key +trainer.max_stpes", "(did you mean trainer.max_steps?)", "a + adds no setting"],
    ),
    (["++trainer.max_stpes=3"], ["unknown key ++trainer.max_stpes", "(did you mean trainer.max_steps?)"]),
    (["+foo=1"], ["unknown key +foo", "valid keys: method, data, backbone"]),
    (["foo=1"], ["unknown key foo", "valid keys: method, data, backbone"]),
    (["method.adv_weigth=1"], ["unknown key method.adv_weigth (did you mean method.adv_weight?)"]),
    (["trainer.max_steps=abc"], ["trainer.max_steps=abc: trainer.max_steps takes a value of type int, not 'abc'"]),
    (
        ["trainer.precision=fp8"],
        ["trainer.precision=fp8 is not a valid trainer.precision; valid: auto, fp32, bf16, fp16"],
    ),
    (["device=tpu"], ["device=tpu", "valid: auto, cpu, cuda"]),
    (["trainer.channels_last=maybe"], ["trainer.channels_last must be auto, true or false, got 'maybe'"]),
    (["method=foo"], ["unknown method=foo;", "valid method choices: adaptsegnet, adda,", "source_only"]),
    (["method=dnn"], ["unknown method=dnn (did you mean dann?)"]),
    (["+method=dsn"], ["+method=dsn: method is already chosen; set it without the +"]),
    (["+trainer.max_steps=3"], ["+trainer.max_steps=3: trainer.max_steps already exists; set it without the +"]),
    (["experiment=dann_office31"], ["added with a +: +experiment=dann_office31"]),
    (["+experiment=nope"], ["unknown experiment=nope", "dann_mnist_mnistm_paper"]),
    (["+nogroup=x"], ["unknown key +nogroup"]),
    (["trainer.max_steps=[1"], ["malformed override 'trainer.max_steps=[1'"]),
    (["=3"], ["the override '=3' names no key"]),
    (["seed=0,1"], ["seed=0,1 is a sweep: add -m"]),
    (["-m", "method=dann,foo"], ["unknown method=foo"]),
    (["--cfg", "jobs"], ["uda train: argument --cfg/-c: invalid choice: 'jobs'"]),
    (["data=digits_seg", "method=dann"], ["method=dann is a classification method"]),
    (
        ["data.root=/no/such/data/root"],
        [
            "the data root /no/such/data/root (data.root) does not exist",
            "uda data prepare mnist --root /no/such/data/root",
        ],
    ),
    (["resume=false"], ["holds a checkpoint: pass resume=true"]),
    (["method=source_only"], ["holds a checkpoint: pass resume=true"]),
]


@pytest.mark.parametrize("argv, needles", REJECTIONS, ids=[" ".join(a) for a, _ in REJECTIONS])
def test_a_rejected_command_is_one_line_and_never_touches_the_run(tmp_path, capsys, argv, needles):
    """Aimed at a finished run (test_..._partial_run: the same for one stopped before its summary)."""
    run = fake_run(tmp_path / "run")
    before = digests(run)
    where = f"hydra.sweep.dir={tmp_path / 'run'}" if "-m" in argv else f"hydra.run.dir={run}"
    line = refused(capsys, *argv, where)
    for needle in needles:
        assert needle in line, line
    assert digests(run) == before


@pytest.mark.parametrize("argv", [["optimizer.lr=-1"], ["trainer.max_stpes=3"], ["method=foo"], ["resume=false"]])
def test_a_rejected_command_never_touches_a_partial_run(tmp_path, capsys, argv):
    run = fake_run(tmp_path / "run", finished=False)
    before = digests(run)
    refused(capsys, *argv, f"hydra.run.dir={run}")
    assert digests(run) == before


def test_resume_without_a_checkpoint_is_refused_before_hydra_writes(tmp_path, capsys):
    line = refused(capsys, "resume=true", f"hydra.run.dir={tmp_path / 'new'}")
    assert "resume=true but there is no checkpoint in" in line and "resume=auto" in line
    assert not (tmp_path / "new").exists()


def test_a_sweep_is_checked_job_by_job_before_any_runs(tmp_path, capsys):
    """The second job's directory holds a checkpoint: the sweep is refused before the first job starts."""
    sweep = tmp_path / "sweep"
    fake_run(sweep / "1_dann_seed1", finished=False)
    before = digests(sweep)
    line = refused(capsys, "-m", "seed=0,1", f"hydra.sweep.dir={sweep}")
    assert "1_dann_seed1/checkpoints holds a checkpoint" in line
    assert digests(sweep) == before and not (sweep / "0_dann_seed0").exists()


def test_config_errors_are_one_line_from_a_subprocess_too(tmp_path):
    """The real command line, Hydra's logging included: one line, exit 2, no traceback, no hint to set
    HYDRA_FULL_ERROR, and the advice of a close match."""
    res = run_cli("train", "trainer.max_stpes=3", f"hydra.run.dir={tmp_path / 'r'}", cwd=tmp_path, timeout=120)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.strip().splitlines() == [res.stderr.strip()]
    assert "did you mean trainer.max_steps?" in res.stderr and not (tmp_path / "r").exists()


def test_cfg_job_reports_composition_errors_as_one_line(capsys):
    line = refused(capsys, "--cfg", "job", "method=dnn")
    assert "did you mean dann?" in line


# ------------------------------------------------------------------------------ unwritable places
def test_a_new_run_under_a_place_that_cannot_be_written(tmp_path, capsys):
    """/proc refuses a new directory even to root; a file in the way refuses it to everyone."""
    line = refused(capsys, "hydra.run.dir=/proc/uda_no_run")
    assert line.startswith("uda: error: cannot create the run directory /proc/uda_no_run: /proc is not writable")
    (tmp_path / "file").write_text("x")
    line = refused(capsys, f"hydra.run.dir={tmp_path / 'file' / 'run'}")
    assert f"{tmp_path / 'file'} is a file" in line
    line = refused(capsys, f"hydra.run.dir={tmp_path / 'file'}")
    assert "is a file; choose another with hydra.run.dir=" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only directory")
def test_resume_in_a_read_only_run_is_refused(tmp_path, capsys):
    run = fake_run(tmp_path / "run", finished=False)
    before = digests(run)
    run.chmod(0o555)
    try:
        line = refused(capsys, "resume=true", f"hydra.run.dir={run}")
    finally:
        run.chmod(0o755)
    assert f"cannot write the run directory {run}" in line and digests(run) == before


def test_an_existing_run_whose_parts_cannot_be_written_is_refused(tmp_path, monkeypatch):
    """The probe goes into the run directory and its .hydra/ and checkpoints/ (as root cannot be refused a
    chmod, the refusal is simulated at the probe for .hydra/)."""
    import tempfile

    run = fake_run(tmp_path / "run")
    real = tempfile.mkdtemp

    def mkdtemp(prefix=None, dir=None):
        if Path(dir).name == ".hydra":
            raise PermissionError(13, "Permission denied")
        return real(prefix=prefix, dir=dir)

    monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)
    with pytest.raises(
        ConfigError, match=r"cannot write the run directory .*/\.hydra is not writable \(Permission denied\)"
    ):
        check_writable(run, [".hydra", "checkpoints"])
    check_writable(run, ["checkpoints"])  # the rest of it can be written
    assert not list(run.rglob(".uda_probe*"))  # the probes are removed


# ------------------------------------------------------------------------------ data root
def test_a_chosen_data_root_must_exist_only_the_default_is_created(tmp_path, monkeypatch, capsys):
    from uda.data.files import DataError, checked_root

    monkeypatch.setenv("UDA_DATA", str(tmp_path / "typo"))
    with pytest.raises(DataError, match=r"the data root .*/typo \(\$UDA_DATA\) does not exist; .*uda data prepare "
                                        r"mnist --root .*/typo"):
        checked_root("", "mnist")
    line = refused(capsys, f"hydra.run.dir={tmp_path / 'r'}")
    assert "$UDA_DATA" in line and not (tmp_path / "typo").exists() and not (tmp_path / "r").exists()
    monkeypatch.delenv("UDA_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert checked_root("", "mnist") == tmp_path / "cache" / "uda"  # the default: created on first use


# ------------------------------------------------------------------------------ evaluations in a short run
@pytest.mark.parametrize("max_steps, eval_every, min_evals, expected", [
    (10000, 1000, 5, 1000),  # the default run: 10 evaluations, unchanged
    (3000, 1000, 5, 600),
    (500, 1000, 5, 100),  # shorter than eval_every: still 5 evaluations
    (3, 1000, 5, 1),
    (500, 1000, 0, 1000),  # min_evals=0: eval_every as written (the last step is evaluated anyway)
])
def test_a_short_run_is_evaluated_at_least_min_evals_times(max_steps, eval_every, min_evals, expected):
    tr = TrainerConfig(max_steps=max_steps, eval_every=eval_every, min_evals=min_evals)
    assert tr.eval_interval() == expected


# ------------------------------------------------------------------------------ --help
def test_train_help_lists_the_groups_and_what_each_setting_means(capsys):
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    for group in ("method:", "data:", "backbone:", "optimizer:", "trainer:", "experiment:"):
        assert f"\n  {group}" in out
    assert "mean_teacher" in out and "officehome_<s>_<t> (12 pairs" in out and "dann_mnist_mnistm_paper" in out
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln.startswith("  ") and "[" in ln}
    assert "training iterations" in lines["trainer.max_steps"] and "[10000]" in lines["trainer.max_steps"]
    assert "where datasets live" in lines["data.root"]
    assert "schema/" not in out  # not Hydra's dump of the schema groups


def test_train_help_imports_no_torch():
    import subprocess
    import sys

    code = "import sys; from uda.cli import main; main(['train', '--help']); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False"


def test_a_finished_sweep_job_whose_checkpoints_were_deleted_is_known_by_its_summary(tmp_path):
    """(A finished job whose checkpoint holds other settings is refused: tests/test_cli.py, on real data.)"""
    from uda.preflight import finished

    run = tmp_path / "r"
    (run / "checkpoints").mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({"target_acc": 1.0}))
    assert finished(run, None) == {"target_acc": 1.0}  # no checkpoint left: the summary alone marks it done


def test_ctrl_c_before_training_takes_it_is_one_line_and_status_130(tmp_path, monkeypatch, capsys):
    """A Ctrl-C while the data loads (before the loop's handler) or a second one during training raises
    KeyboardInterrupt: one line and 128 + SIGINT, not a traceback (``uda tune`` reads 130 as interrupted)."""
    import uda.engine.loop

    def interrupted(cfg, run_dir, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(uda.engine.loop, "train", interrupted)
    assert main(["train", "trainer.max_steps=2", f"hydra.run.dir={tmp_path / 'run'}"]) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == "uda: interrupted; checkpoints written before it are kept"
