"""The one table of domains: every domain validation accepts loads through it, each has a task, and
``uda data list | verify | prepare`` reads it (present and missing domains, checksum errors, unknown names)."""
import pytest

from helpers import cli, make_cfg, write_usps
from uda.data.catalog import DOMAINS, LISTED, Family
from uda.schema import CLASSIFICATION, SEGMENTATION, ConfigError, validate


def test_every_domain_has_a_task_a_loader_and_notes_and_uda_data_lists_all_but_custom():
    for name, dom in DOMAINS.items():
        assert dom.name == name and dom.task in (CLASSIFICATION, SEGMENTATION) and dom.notes
        assert type(dom).load is not Family.load, f"{name} does not say how it loads"
        if dom.task == SEGMENTATION:  # names its classes (the 16-class protocol: GTA5, SYNTHIA and Cityscapes)
            assert all(isinstance(c, str) for c in dom.classes(16)) and len(dom.classes(16)) >= 2
        else:
            with pytest.raises(NotImplementedError, match=f"{name} names no classes"):
                dom.classes(10)
        if dom.listed:  # uda data says where it is and checks it
            assert all(getattr(type(dom), f) is not getattr(Family, f) for f in ("status", "verify")), name
    assert set(LISTED) == set(DOMAINS) - {"custom"}
    read_from_files = {"gta5", "synthia", "cityscapes", "visda17_train", "visda17_validation"}
    read_from_files |= {f"officehome_{d}" for d in ("art", "clipart", "product", "realworld")}
    read_from_files |= {f"domainnet_{d}" for d in ("clipart", "infograph", "painting", "quickdraw", "real", "sketch")}
    assert {n for n, s in DOMAINS.items() if s.files} == read_from_files


def test_an_unknown_domain_names_the_key_and_every_valid_one():
    with pytest.raises(
        ConfigError, match=r"unknown domain data.target.name='mnistx'; valid domains: mnist, mnistm, usps"
    ):
        validate(make_cfg("data.target.name=mnistx"))
    with pytest.raises(ConfigError, match="one is a segmentation domain and one is not"):
        validate(make_cfg("data.target.name=mnistm_seg"))


def test_data_list_shows_present_and_missing(tmp_path):
    write_usps(tmp_path / "usps")
    res = cli("data", "list", "--root", str(tmp_path), cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr
    lines = {ln.split()[0]: ln for ln in res.stdout.splitlines() if ln.startswith("  ") and ln.split()}
    assert "present" in lines["usps"] and "missing" in lines["svhn"] and "train_32x32.mat" in lines["svhn"]
    assert "missing" in lines["syndigits"] and "yaroslav.ganin.net" in lines["syndigits"]
    assert "missing" in lines["amazon"] and "office31/amazon/images" in lines["amazon"]
    bad = cli("data", "verify", "usps", "--root", str(tmp_path), cwd=tmp_path, timeout=120)
    assert bad.returncode == 2 and "checksum mismatch" in bad.stderr


def test_data_verify_of_an_unknown_domain_lists_the_known_ones(tmp_path):
    res = cli("data", "verify", "mnistx", "--root", str(tmp_path), cwd=tmp_path, timeout=60)
    assert res.returncode == 2 and "unknown domain 'mnistx'; valid: mnist, mnistm" in res.stderr
