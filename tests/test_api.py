"""The public namespace: ``bd.__all__`` is short and documented, every name that used to be at
the top level still resolves (with a FutureWarning naming its module), the renamed verbs are
gone from their modules, and every chapter calls only names that exist (a static check of the
``bd.<a>.<b>`` chains in book/*.ipynb, long before CI executes the chapters)."""
from __future__ import annotations

import ast
import importlib
import sys
import inspect
import re
import types
import warnings
from pathlib import Path

import nbformat
import pytest

import bertdims as bd
from former_names import FORMER, FORMER_MODULES, RENAMED

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "book").glob("*.ipynb"))
MOVED = sorted(set(FORMER) - set(bd.__all__))


def _module(name: str) -> types.ModuleType:
    """The module a former name lives in, by its old short name, at its place in the layers."""
    return importlib.import_module(f"bertdims.{FORMER_MODULES[name]}")


def _quietly(fn):
    """``fn()`` with every warning turned into an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return fn()


# ------------------------------------------------------------------------ curated names
def test_all_is_short_unique_and_resolves():
    assert len(bd.__all__) <= 40
    assert len(set(bd.__all__)) == len(bd.__all__)
    for name in bd.__all__:
        obj = _quietly(lambda: getattr(bd, name))
        assert not name.startswith("_"), name
        assert not isinstance(obj, types.ModuleType), name
        assert (inspect.getdoc(obj) or "").strip(), f"bd.{name} has no docstring"


def test_the_experiment_verbs_and_studies_are_curated():
    verbs = {"finetune", "rank_dims", "cross_finetune", "finetune_multitask", "sparse_finetune"}
    studies = {"pca_study", "neurons_study", "distance_study", "layer_study", "sparse_study",
               "rankings_study"}
    assert verbs | studies <= set(bd.__all__)
    assert not set(RENAMED) & set(bd.__all__)


def test_star_import_gives_exactly_the_curated_names():
    namespace: dict = {}
    _quietly(lambda: exec("from bertdims import *", namespace))
    assert set(namespace) - {"__builtins__"} == set(bd.__all__)


def test_dir_lists_the_curated_names_and_the_layers():
    listed = set(dir(bd))
    assert listed == {*bd.__all__, "__version__", *bd._LAYERS}
    for layer, modules in bd._LAYERS.items():
        assert isinstance(_quietly(lambda: getattr(bd, layer)), types.ModuleType), layer
        for name in modules:                         # bd.<layer>.<module>, quietly
            assert _quietly(lambda: getattr(getattr(bd, layer), name)).__name__ == f"bertdims.{layer}.{name}"
    for name in listed:                              # everything dir() offers is there, quietly
        _quietly(lambda: getattr(bd, name))


def test_the_layers_hold_every_module_and_only_once():
    assert sorted(m for ms in bd._LAYERS.values() for m in ms) == sorted(bd._MODULES)
    assert bd._FORMER_MODULES == FORMER_MODULES          # exactly the paths that existed before


@pytest.mark.parametrize("old", sorted(FORMER_MODULES))
def test_a_former_module_attribute_warns_and_is_the_same_module(old, monkeypatch):
    if old in vars(bd):                              # an earlier ``import bertdims.<old>`` set it
        monkeypatch.delattr(bd, old)
    with pytest.warns(FutureWarning) as caught:
        module = getattr(bd, old)
    assert len(caught) == 1
    assert str(caught[0].message).startswith(f"the module bertdims.{old} is now bertdims.{FORMER_MODULES[old]} ")
    assert caught[0].filename == __file__
    assert module is importlib.import_module(f"bertdims.{FORMER_MODULES[old]}")


@pytest.mark.parametrize("old", ["dims", "finetuning", "tasks", "scorecard"])
def test_a_former_module_path_imports_with_a_warning(old, monkeypatch):
    """``import bertdims.dims`` / ``from bertdims.dims import x``: the module from its layer."""
    monkeypatch.delitem(sys.modules, f"bertdims.{old}", raising=False)
    if old in vars(bd):
        monkeypatch.delattr(bd, old)
    with pytest.warns(FutureWarning, match=rf"bertdims\.{old} is now bertdims\.{FORMER_MODULES[old]}"):
        module = importlib.import_module(f"bertdims.{old}")
    assert module is importlib.import_module(f"bertdims.{FORMER_MODULES[old]}")
    assert sys.modules[f"bertdims.{old}"] is module


def test_an_unknown_module_path_is_still_an_import_error():
    with pytest.raises(ModuleNotFoundError, match="bertdims.no_such_module"):
        importlib.import_module("bertdims.no_such_module")


# ------------------------------------------------------------------ former top-level names
def test_the_shim_covers_exactly_the_former_names():
    """Every former name is curated, moved (FutureWarning) or renamed: none was dropped."""
    assert set(FORMER) - set(bd.__all__) == set(bd._MOVED)
    assert set(RENAMED) == set(bd._RENAMED)


@pytest.mark.parametrize("name", MOVED)
def test_a_former_name_resolves_with_a_warning_naming_its_module(name):
    module = FORMER[name]
    with pytest.warns(FutureWarning) as caught:
        obj = getattr(bd, name)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert message == (f"bertdims.{name} is no longer part of the top-level namespace; "
                       f"use bertdims.{FORMER_MODULES[module]}.{name}")
    assert caught[0].filename == __file__          # the warning points at the caller
    assert obj is getattr(_module(module), name)


@pytest.mark.parametrize("name", sorted(set(FORMER) & set(bd.__all__)))
def test_a_curated_former_name_resolves_without_a_warning(name):
    assert _quietly(lambda: getattr(bd, name)) is getattr(_module(FORMER[name]), name)


@pytest.mark.parametrize("old", sorted(RENAMED))
def test_a_renamed_verb_is_gone_from_its_module_and_warns_at_the_top(old):
    module, new = RENAMED[old]
    assert not hasattr(_module(module), old)
    assert not hasattr(bd.analysis.crossft, old)           # crossft re-exported the multi-task verb
    assert new in bd.__all__
    with pytest.warns(FutureWarning, match=rf"bertdims\.{old} .*use bertdims\.{new}\b") as caught:
        obj = getattr(bd, old)
    assert f"bertdims.{FORMER_MODULES[module]}.{new}" in str(caught[0].message)
    assert obj is getattr(bd, new) is getattr(_module(module), new)


def test_an_unknown_name_is_an_attribute_error_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not hasattr(bd, "no_such_name")
        with pytest.raises(AttributeError, match="no_such_name"):
            bd.no_such_name  # noqa: B018


def test_a_module_imports_from_its_layer_quietly():
    namespace: dict = {}
    _quietly(lambda: exec("from bertdims.train import executor\nfrom bertdims.book import webassets", namespace))
    assert namespace["executor"].__name__ == "bertdims.train.executor"
    assert namespace["webassets"].__name__ == "bertdims.book.webassets"


# ------------------------------------------------------- the chapters call existing names
def _code(path: Path) -> str:
    """The code cells of a notebook as one module (IPython magics and shell lines dropped)."""
    cells = [c.source for c in nbformat.read(path, 4).cells if c.cell_type == "code"]
    lines = [ln for cell in cells for ln in cell.splitlines()
             if not ln.lstrip().startswith(("%", "!"))]
    return "\n".join(lines)


def _readme_code() -> str:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    return "\n".join(b for b in blocks if "import bertdims" in b)


def _chains(tree: ast.AST, alias: str) -> set[tuple[str, ...]]:
    """Every ``alias.a`` / ``alias.a.b`` / ``alias.layer.module.c`` attribute chain in the tree
    (at most three names)."""
    found = set()
    for node in ast.walk(tree):
        names = []
        while isinstance(node, ast.Attribute):
            names.append(node.attr)
            node = node.value
        if isinstance(node, ast.Name) and node.id == alias and names:
            found.add(tuple(reversed(names))[:3])
    return found


def _forget_former_module_paths() -> None:
    """Drop what an earlier ``import bertdims.<old>`` left (``sys.modules`` and the package
    attribute), so the next use of a former module path warns again."""
    for old in FORMER_MODULES:
        sys.modules.pop(f"bertdims.{old}", None)
        vars(bd).pop(old, None)


def problems(source: str) -> list[str]:
    """What in ``source`` does not resolve on ``bertdims`` or only resolves with a warning."""
    tree = ast.parse(source)
    found = []

    def resolve(label, fn):
        _forget_former_module_paths()
        try:
            _quietly(fn)
        except (AttributeError, ImportError, Warning) as err:
            found.append(f"{label}: {type(err).__name__}: {err}")

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "bertdims":
            for a in node.names:
                resolve(f"from {node.module} import {a.name}",
                        lambda n=node.module, a=a.name: exec(f"from {n} import {a}", {}))
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "bertdims":
                    resolve(f"import {a.name}", lambda n=a.name: importlib.import_module(n))
    aliases = {a.asname or a.name for node in ast.walk(tree) if isinstance(node, ast.Import)
               for a in node.names if a.name == "bertdims"}
    for alias in aliases:
        for chain in sorted(_chains(tree, alias)):
            def walk(chain=chain):
                obj = bd
                for name in chain:
                    obj = getattr(obj, name)
            resolve(f"{alias}." + ".".join(chain), walk)
    return found


def test_the_static_check_sees_a_removed_and_a_moved_name():
    found = problems("import bertdims as bd\nbd.analysis.dims.summarize_runs\nbd.summarize_runs\n"
                     "bd.no_such_function()\nbd.analysis.dims.run_dims\nfrom bertdims import record_verdict\n"
                     "bd.dims.summarize_runs\nfrom bertdims.dims import summarize_runs\n")
    assert len(found) == 7, found                   # bd.dims is reported, and bd.dims.summarize_runs
    assert any("bd.dims.summarize_runs: FutureWarning" in p for p in found)
    assert any("from bertdims.dims import summarize_runs: FutureWarning" in p for p in found)
    assert any("bd.summarize_runs: FutureWarning" in p for p in found)
    assert any("bd.no_such_function: AttributeError" in p for p in found)
    assert any("bd.analysis.dims.run_dims: AttributeError" in p for p in found)
    assert any("from bertdims import record_verdict: FutureWarning" in p for p in found)


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_a_chapter_calls_only_existing_names(path):
    source = _code(path)
    assert "import bertdims" in source or "from bertdims" in source
    assert not problems(source)


def test_the_readme_examples_call_only_existing_names():
    source = _readme_code()
    assert "bd." in source
    assert not problems(source)


SOURCES = sorted(p for p in [*(ROOT / "tests").glob("*.py"), *(ROOT / "benchmarks").glob("*.py")]
                 if p.name != "test_api.py")


@pytest.mark.parametrize("path", SOURCES, ids=[f"{p.parent.name}/{p.name}" for p in SOURCES])
def test_tests_and_benchmarks_use_no_former_top_level_name(path):
    """Code that CI does not run (benchmarks, rarely taken branches) warns nowhere either."""
    assert not problems(path.read_text())


def _shown_calls(path: Path) -> list[str]:
    """The calls that end a code cell of a chapter (their value is displayed) and that only glue
    or record (``glue_*``, ``record_*``): their return value is bookkeeping, not a result."""
    found = []
    for i, cell in enumerate(nbformat.read(path, 4).cells):
        if cell.cell_type != "code":
            continue
        body = ast.parse("\n".join(ln for ln in cell.source.splitlines()
                                   if not ln.lstrip().startswith(("%", "!")))).body
        if body and isinstance(body[-1], ast.Expr) and isinstance(body[-1].value, ast.Call):
            name = ast.unparse(body[-1].value.func).split(".")[-1]
            if name.startswith(("glue_", "record_")) and name != "glue_values":   # that one returns None
                found.append(f"cell {i}: {name}")
    return found


def test_the_shown_call_check_sees_a_recording_call_at_the_end(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1\nbd.book.report.record_least_favourable(s, 'c', 'id', e, p)"),
                nbformat.v4.new_code_cell("bd.book.report.glue_effects(e)\ntable"),
                nbformat.v4.new_code_cell("bd.book.report.glue_values(a=1)")]
    nbformat.write(nb, str(tmp_path / "c.ipynb"))
    assert _shown_calls(tmp_path / "c.ipynb") == ["cell 0: record_least_favourable"]


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_no_chapter_cell_shows_what_it_only_glued_or_recorded(path):
    """A cell ending with ``glue_effects(...)`` would print the dict it glued into the book."""
    assert not _shown_calls(path)
