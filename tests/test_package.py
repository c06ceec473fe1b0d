"""The package as a newcomer and a wheel see it: the wheel ships every config file; inside ``uda/`` there
are no import cycles and the layers only point down (data, nets and methods never import the engine)."""
import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import uda

ROOT = Path(uda.__file__).resolve().parent  # the uda/ package


def imports() -> dict[str, set[str]]:
    """module -> the uda modules it imports anywhere in its file (function-level imports included)."""
    mods = {}
    for f in sorted(ROOT.rglob("*.py")):
        name = ".".join(("uda", *f.relative_to(ROOT).with_suffix("").parts)).removesuffix(".__init__")
        deps = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("uda"):
                deps |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("uda")}
        mods[name] = deps
    return {m: {d for d in ds if d in mods and d != m} for m, ds in mods.items()}


def test_there_are_no_import_cycles_inside_uda():
    graph, cycles = imports(), []

    def visit(m, path):
        for d in graph[m]:
            if d in path:
                cycles.append(" -> ".join(path[path.index(d):] + [d]))
            elif len(path) < 12:
                visit(d, path + [d])

    for m in graph:
        visit(m, [m])
    assert not cycles, cycles[:5]


@pytest.mark.parametrize("layer, forbidden", [
    ("uda.schema", ("uda.engine", "uda.methods", "uda.nets")),
    ("uda.data", ("uda.engine", "uda.methods", "uda.nets")),
    ("uda.nets", ("uda.engine", "uda.methods")),
    ("uda.methods", ("uda.engine",)),
])
def test_layers_only_point_down(layer, forbidden):
    bad = [f"{m} imports {d}" for m, ds in imports().items() if m == layer or m.startswith(layer + ".")
           for d in ds if d.startswith(forbidden)]
    assert not bad, bad


def test_schema_reads_only_the_domain_catalog_which_loads_no_reader():
    """The one arrow from schema/ to data/ goes to the catalog, which loads no reader and no torch."""
    graph = imports()
    from_schema = {d for m in graph if m.startswith("uda.schema") for d in graph[m] if d.startswith("uda.data")}
    assert from_schema <= {"uda.data.catalog"}, from_schema
    code = "import sys, uda.data.catalog; print(sorted(m for m in sys.modules if m.split('.')[0] in ('uda', 'torch')))"
    loaded = set(eval(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout))
    readers = {m for m in loaded if m.startswith("uda.data.")} - {"uda.data.catalog", "uda.data.files",
                                                                   "uda.data.published"}
    assert not readers and not any(m.startswith("torch") for m in loaded), loaded


def test_the_wheel_ships_every_config_file(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT, src / "uda", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT.parent / name, src / name)
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                          "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    wheel, = (tmp_path / "dist").glob("uda-*.whl")
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("uda/configs/")}
    want = {f"uda/configs/{p.relative_to(ROOT / 'configs').as_posix()}" for p in (ROOT / "configs").rglob("*.yaml")}
    assert len(want) > 40 and want == shipped


def test_config_and_the_criteria_table_import_no_torch():
    """`uda.schema` (and the criteria table it reads) load without torch: config errors and --help are fast."""
    code = "import sys, uda.schema, uda.selection; print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_constructors_of_methods_take_keywords_only():
    """Design rule 3: a method's ``__init__`` takes its built parts by keyword (``from_config`` builds them)."""
    import inspect

    from uda.methods import METHODS

    positional = {name: [p.name for p in inspect.signature(cls.__init__).parameters.values()
                         if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self"]
                  for name, cls in METHODS.items()}
    assert {name: ps for name, ps in positional.items() if ps} == {}
