"""The package's modules form layers: no module imports, even inside a function, a module that
imports it back. A cycle is what forced imports into function bodies and import-time
registration; this test names the first one it finds, with the lines that make it."""
import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "bertdims"


def _modules(package: Path) -> dict[str, Path]:
    """``{module: file}`` for every module in the package's layer folders (names are unique)."""
    files = [p for p in package.glob("*/*.py") if p.stem not in ("__init__", "__main__")]
    found = {p.stem: p for p in files}
    assert len(found) == len(files), "two modules share a name"
    return found


def _imported(path: Path, node: ast.AST, package: Path, modules: set[str]) -> list[str]:
    """The package's modules an import statement in ``path`` names (by module name)."""
    here = path.relative_to(package.parent).with_suffix("").parts      # ("bertdims", layer, m)
    if isinstance(node, ast.ImportFrom):
        if node.level:
            base = list(here[:len(here) - node.level])
        elif (node.module or "").split(".")[0] == package.name:
            base = []
        else:
            return []
        dotted = base + (node.module.split(".") if node.module else [])
        names = [dotted[-1]] if dotted[-1] in modules else [a.name for a in node.names]
    elif isinstance(node, ast.Import):
        names = [a.name.split(".")[-1] for a in node.names if a.name.startswith(package.name + ".")]
    else:
        names = []
    return [n for n in names if n in modules and n != path.stem]


def import_graph(package: Path = PACKAGE) -> tuple[dict[str, set[str]], dict]:
    """``{module: modules it imports}`` over every import statement (top level, in functions,
    under ``TYPE_CHECKING``), and ``{(a, b): [line, ...]}`` saying where."""
    files = _modules(package)
    graph: dict[str, set[str]] = {m: set() for m in files}
    lines: dict = {}
    for m, path in files.items():
        for node in ast.walk(ast.parse(path.read_text())):
            for target in _imported(path, node, package, set(files)):
                graph[m].add(target)
                lines.setdefault((m, target), []).append(node.lineno)
    return graph, lines


def test_the_graph_sees_imports_inside_functions(tmp_path):
    package = tmp_path / "bertdims"
    for layer in ("low", "high"):
        (package / layer).mkdir(parents=True)
    (package / "high" / "a.py").write_text("from .b import x\n")
    (package / "high" / "b.py").write_text("def f():\n    from .a import y\n    from bertdims.low.c import z\n")
    (package / "low" / "c.py").write_text("import numpy\nfrom ..high import a\n")
    graph, lines = import_graph(package)
    assert graph == {"a": {"b"}, "b": {"a", "c"}, "c": {"a"}}
    assert lines[("b", "a")] == [2]
    with pytest.raises(CycleError):
        tuple(TopologicalSorter(graph).static_order())


def test_the_package_has_no_import_cycle():
    graph, lines = import_graph()
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as err:
        cycle = err.args[1]
        files = _modules(PACKAGE)
        where = [f"{a} -> {b} ({files[a].relative_to(PACKAGE.parent)} line {', '.join(map(str, lines[a, b]))})"
                 for a, b in zip(cycle, cycle[1:])]
        pytest.fail("import cycle: " + "; ".join(where))
    assert set(order) == set(graph)


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


@pytest.mark.parametrize("module, upper", [
    ("_embedded", ["tasks", "_hub"]),           # catalogues: no registration by side effect
    ("_hub", ["tasks"]),
    ("task_spec", ["tasks", "_embedded", "_hub"]),
    ("finetune_config", ["finetuning", "heads", "training"]),
    ("loop", ["finetuning", "sparse", "multitask", "heads", "training", "store"]),   # the one loop
    ("probes", ["pca", "neurons", "dims"]),
    ("parameters", ["chapters", "plan"]),
    ("executor", ["sparse", "dims", "crossft", "distances"]),
    ("stats", ["report", "scorecard", "chapters"]),
])
def test_a_lower_module_never_reaches_an_upper_one(module, upper):
    """Nothing ``module`` imports, directly or through others, is one of ``upper``."""
    graph, _ = import_graph()
    assert not set(upper) & _reachable(graph, module)


def test_the_registry_lists_embedded_tasks_first_then_the_hub():
    from bertdims.data import _embedded, _hub
    from bertdims.data.tasks import task_names
    names = task_names()
    assert names[:len(_embedded.TASKS)] == [t.name for t in _embedded.TASKS]
    assert names[len(_embedded.TASKS):len(_embedded.TASKS) + len(_hub.TASKS)] == \
        [t.name for t in _hub.TASKS]
    assert task_names("hub") == [t.name for t in _hub.TASKS]


#: The layers that compute (the store, statistics, data, models, configs, training, the
#: papers' methods) and the ones that only present or take input (the book: charts, sentences,
#: the chapter runner, the scorecard and its claims; the command line).
COMPUTING = ["core", "data", "modeling", "config", "train", "analysis"]
PRESENTING = ["book", "cli"]
NUMERICS = sorted(p.stem for layer in COMPUTING for p in (PACKAGE / layer).glob("*.py") if p.stem != "__init__")
PRESENTATION = sorted(p.stem for layer in PRESENTING for p in (PACKAGE / layer).glob("*.py")
                      if p.stem not in ("__init__", "__main__"))


def _imports(module: str, packages: tuple[str, ...]) -> list[int]:
    """Lines where ``module`` imports one of ``packages`` (third-party names)."""
    tree = ast.parse(_modules(PACKAGE)[module].read_text())
    return [node.lineno for node in ast.walk(tree)
            if isinstance(node, ast.Import) and any(a.name.split(".")[0] in packages for a in node.names)
            or isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in packages]


@pytest.mark.parametrize("module", NUMERICS)
def test_a_numerics_module_never_reaches_charts_sentences_or_the_command_line(module):
    """A change to a chart, a sentence of findings or a command's flags touches no module that
    computes: no numerics module imports, even through others, a presentation module, Altair
    or argparse."""
    graph, _ = import_graph()
    assert set(COMPUTING) | set(PRESENTING) == set(_layers())       # every layer is one or the other
    assert set(NUMERICS) | set(PRESENTATION) == set(graph)
    reached = _reachable(graph, module) | {module}
    assert not reached & set(PRESENTATION), sorted(reached & set(PRESENTATION))
    front = {m: _imports(m, ("altair", "argparse")) for m in reached if _imports(m, ("altair", "argparse"))}
    assert not front, f"imports altair or argparse: {front}"


def test_no_public_name_shadows_a_module():
    """``bertdims.<layer>.<name>`` is the module ``bertdims/<layer>/<name>.py`` whenever that
    file exists, and ``bertdims.<layer>`` is the layer (the fine-tuning module is
    ``finetuning``, so ``bd.finetune`` can be the function)."""
    import types

    import bertdims as bd
    shadowed = {}
    for name, path in _modules(PACKAGE).items():
        layer = getattr(bd, path.parent.name)
        if not isinstance(layer, types.ModuleType) or not isinstance(getattr(layer, name), types.ModuleType):
            shadowed[f"{path.parent.name}.{name}"] = path
    assert not shadowed


# ------------------------------------------------------------------------------ the folders
def _layers() -> list[str]:
    import bertdims as bd
    return list(bd._LAYERS)


def test_the_folders_are_the_declared_layers():
    """Each folder of the package is a layer of ``bertdims._LAYERS`` holding exactly the
    modules declared there, and no module sits outside a layer."""
    import bertdims as bd
    folders = {p.parent.name for p in PACKAGE.glob("*/__init__.py") if p.parent.name != "__pycache__"}
    assert folders == set(bd._LAYERS)
    for layer, modules in bd._LAYERS.items():
        on_disk = {p.stem for p in (PACKAGE / layer).glob("*.py") if p.stem not in ("__init__", "__main__")}
        assert on_disk == set(modules), layer
    assert {p.name for p in PACKAGE.glob("*.py")} == {"__init__.py", "_version.py"}


def test_a_layer_imports_only_the_layers_below_it():
    """A lower layer never imports an upper one, even inside a function: the order is
    core, data, modeling, config, train, analysis, book, cli."""
    graph, lines = import_graph()
    files = _modules(PACKAGE)
    rank = {layer: i for i, layer in enumerate(_layers())}
    upward = [f"{files[a].relative_to(PACKAGE.parent)} line {lines[a, b][0]} imports {files[b].parent.name}.{b}"
              for a, targets in graph.items() for b in targets
              if rank[files[b].parent.name] > rank[files[a].parent.name]]
    assert not upward, upward


def test_the_layer_test_sees_an_upward_import(tmp_path):
    package = tmp_path / "bertdims"
    for layer in ("core", "book"):
        (package / layer).mkdir(parents=True)
    (package / "core" / "low.py").write_text("def f():\n    from ..book import high\n")
    (package / "book" / "high.py").write_text("from ..core.low import f\n")
    graph, _ = import_graph(package)
    assert graph == {"low": {"high"}, "high": {"low"}}
