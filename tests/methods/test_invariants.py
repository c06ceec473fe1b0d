"""What every entry of ``METHODS`` holds, one test id per method (``[name]``, or ``[name-task]`` for a method
of both tasks), so a new method is covered the moment it is listed (as DomainBed's test_models.py):

- a smoke run of a few steps on the synthetic pair of each task it declares, finite and complete;
- exact resume: stopped mid-run and resumed, it ends bit for bit as the uninterrupted run (networks and
  every optimizer's state);
- each optimizer step changes exactly the parameter groups it names, in every stage;
- a state_dict round trip gives the same networks and the same predictions;
- its entries elsewhere: a scripts/bench.py row, a docs/fidelity.md ledger row, a README line.

The hand computations of each update stay in ``test_<name>.py``.
"""
import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from helpers import SEG_INFO, SEG_SMALL, SMALL, ApplySpy, make_cfg, seg_batches, state_equal
from uda.data.pairs import PairInfo
from uda.engine import checkpoint as ckpt
from uda.engine.loop import TrainingInterrupted, train
from uda.methods import METHODS, Batch, get_method
from uda.schema import CLASSIFICATION, SEGMENTATION, validate

ROOT = Path(__file__).resolve().parents[2]
CASES = [(name, task) for name, cls in METHODS.items() for task in cls.Config.TASKS]
IDS = [name if len(METHODS[name].Config.TASKS) == 1 else f"{name}-{task}" for name, task in CASES]
# a method's own networks made small enough for a few CPU steps (the synthetic pairs' are small already)
# (and its stages fitted into the 6 steps)
TINY = {"cyclegan": ["method.ngf=8", "method.n_blocks=2", "method.ndf=16"],
        "cycada": ["method.ngf=8", "method.n_blocks=2", "method.ndf=16", "method.source_steps=2",
                   "method.translate_steps=2"],
        "lsd": ["method.ngf=4", "method.ndf=4", "method.warmup_steps=2"],
        "road": ["method.disc_hidden=4", "method.warmup_steps=3"]}
SYNTHETIC_INFO = PairInfo("synthetic", "synthetic_source", "synthetic_target", 3, 28, 4, mean=(0.5,) * 3,
                          std=(0.5,) * 3)


# a method of both tasks whose default suits one of them (MIC's default host, SDAT, is a classifier)
PER_TASK = {("mic", SEGMENTATION): ["method/host=daformer"]}


def overrides(name: str, task: str) -> list[str]:
    return [*(SMALL if task == CLASSIFICATION else SEG_SMALL), f"method={name}", *TINY.get(name, []),
            *PER_TASK.get((name, task), [])]


def built(name: str, task: str, seed: int = 0):
    torch.manual_seed(seed)
    info = SYNTHETIC_INFO if task == CLASSIFICATION else SEG_INFO
    return get_method(name).from_config(make_cfg(*overrides(name, task)), info)


def batches(task: str) -> tuple[Batch, Batch]:
    if task == SEGMENTATION:
        return seg_batches()
    g = torch.Generator().manual_seed(0)
    return (Batch(torch.randn(6, 3, 28, 28, generator=g), torch.randint(0, 4, (6,), generator=g)),
            Batch(torch.randn(6, 3, 28, 28, generator=g) * 0.5 + 0.3, None, torch.arange(6)))


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    """The uninterrupted run of each case, trained once (the smoke test reads it, the resume test compares)."""
    cache = {}

    def get(name: str, task: str):
        if (name, task) not in cache:
            d, cfg = tmp_path_factory.mktemp(f"ref_{name}_{task}"), make_cfg(*overrides(name, task))
            validate(cfg)  # the small setting is a valid one
            cache[(name, task)] = (train(cfg, d), ckpt.load(d / "checkpoints" / "last.pt"), d)
        return cache[(name, task)]

    return get


@pytest.mark.parametrize("name, task", CASES, ids=IDS)
def test_a_few_steps_on_the_synthetic_pair(name, task, references):
    summary, state, _ = references(name, task)
    metric = "acc" if task == CLASSIFICATION else "miou"
    assert summary["method"] == name and summary["steps"] == 6 and state["step"] == 6
    assert summary["skipped_updates"] == 0
    assert all(math.isfinite(summary[f"{role}_{metric}"]) for role in ("source", "target"))
    assert set(state["optimizers"]) == set(built(name, task).param_groups())


@pytest.mark.parametrize("name, task", CASES, ids=IDS)
def test_resumes_exactly(name, task, references, tmp_path):
    summary, ref, ref_dir = references(name, task)
    with pytest.raises(TrainingInterrupted):
        train(make_cfg(*overrides(name, task)), tmp_path, stop_after=4)  # between the checkpoints at 3 and 6
    resumed = train(make_cfg(*overrides(name, task), "resume=true"), tmp_path)
    metric = "acc" if task == CLASSIFICATION else "miou"
    assert resumed[f"target_{metric}"] == summary[f"target_{metric}"]
    rows = [(tmp_path / "metrics.jsonl").read_text(), (ref_dir / "metrics.jsonl").read_text()]
    steps = [[json.loads(r)["step"] for r in t.splitlines()] for t in rows]
    assert steps[0] == steps[1] and 3 in steps[0] and 6 in steps[0]  # the evaluation before the stop kept once
    cut = ckpt.load(tmp_path / "checkpoints" / "last.pt")
    assert state_equal(ref["method"], cut["method"])
    assert ref["optimizers"].keys() == cut["optimizers"].keys()
    for group, opt in ref["optimizers"].items():  # momentum buffers, Adam's moments and step counts
        assert opt["state"].keys() == cut["optimizers"][group]["state"].keys(), group
        for k, s in opt["state"].items():
            assert state_equal(s, cut["optimizers"][group]["state"][k]), (group, k)


@pytest.mark.parametrize("name, task", CASES, ids=IDS)
def test_steps_change_named_groups(name, task):
    """In every stage, each ``apply`` (``opt.step``'s last part) changes exactly the groups it names (a refresh
    the method declares runs first, over the target batch as its whole training set)."""
    method = built(name, task)
    method.train()
    src, tgt = batches(task)
    step = 0
    for stage in method.stages(600):
        if method.refresh_due(step, 1):
            with torch.no_grad():
                method.refresh([tgt])
        spy = ApplySpy(method)
        method.update(src, tgt, step, spy)
        spy.end_iteration()
        assert spy.calls, f"stage {stage.name}: no optimizer step"
        for named, moved in spy.calls:
            assert moved == named, f"stage {stage.name}: stepped {sorted(named)}, changed {sorted(moved)}"
        step += stage.steps


@pytest.mark.parametrize("name, task", CASES, ids=IDS)
def test_state_dict_round_trip(name, task):
    a, b = built(name, task, seed=0), built(name, task, seed=1)
    assert not state_equal(a.state_dict(), b.state_dict())  # two different initialisations
    b.load_state_dict(a.state_dict())
    assert state_equal(a.state_dict(), b.state_dict())
    a.eval(), b.eval()
    x = batches(task)[1].x
    with torch.no_grad():
        assert torch.equal(a.features_and_logits(x)[1], b.features_and_logits(x)[1])


def _bench_methods() -> dict:
    spec = importlib.util.spec_from_file_location("bench", ROOT / "scripts" / "bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench.METHODS


@pytest.mark.parametrize("name", sorted(METHODS))
def test_is_listed_in_the_bench_the_ledger_and_the_readme(name):
    assert name in _bench_methods(), "scripts/bench.py METHODS"
    assert f'<a id="{name}"></a>' in (ROOT / "docs" / "fidelity.md").read_text(), "docs/fidelity.md ledger row"
    assert f"| `{name}` |" in (ROOT / "README.md").read_text(), "the README's table of methods"


@pytest.mark.parametrize("name", sorted(METHODS))
def test_has_its_own_hand_computed_tests(name):
    """Beside the invariants, each method's update is checked against a hand computation in its own file."""
    own = ROOT / "tests" / "methods" / f"test_{name}.py"
    assert own.is_file() and "hand" in own.read_text(), f"{own.name}: a test against a hand computation"
