"""Every ``method=X`` default and every paper recipe holds its paper's settings, as written once in the
ledger's data (uda/fidelity.py); every method has a ledger row there and in docs/fidelity.md."""
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from helpers import make_cfg
from uda.fidelity import PAPER, PAPER_RECIPES
from uda.methods import METHODS
from uda.schema import CLASSIFICATION

SEG_METHODS = {name for name, m in METHODS.items() if CLASSIFICATION not in m.Config.TASKS}
LEDGER = Path(__file__).resolve().parents[1] / "docs" / "fidelity.md"


def composed(*overrides: str) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(make_cfg(*overrides)), resolve=True, enum_to_str=True)


def value_at(cfg: dict, key: str):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def mismatches(cfg: dict, paper: dict[str, object]) -> dict[str, tuple]:
    return {k: (value_at(cfg, k), v) for k, v in paper.items() if value_at(cfg, k) != v}


def test_every_method_has_a_ledger_row_in_the_data_and_in_the_docs():
    assert set(PAPER) == set(METHODS)
    text = LEDGER.read_text()
    missing = [m for m in METHODS if f'<a id="{m}"></a>' not in text]
    assert not missing, f"docs/fidelity.md lacks a row anchor for {missing}"


@pytest.mark.parametrize("method", sorted(PAPER))
def test_the_default_of_each_method_is_its_papers_setting(method):
    data = ["data=digits_seg"] if method in SEG_METHODS else []
    cfg = composed(f"method={method}", *data)
    assert mismatches(cfg, PAPER[method]) == {}  # {key: (uda's default, the paper's value)}


@pytest.mark.parametrize("recipe", sorted(PAPER_RECIPES))
def test_each_paper_recipe_holds_its_papers_setting(recipe):
    cfg = composed(f"+experiment={recipe}")
    assert mismatches(cfg, PAPER_RECIPES[recipe]) == {}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_each_methods_docstring_links_its_ledger_row(method):
    import sys
    doc = sys.modules[METHODS[method].__module__].__doc__
    assert f"docs/fidelity.md#{method}" in doc
