"""The package's modules form layers: no module imports, even inside a function, a module that
imports it back. A cycle is what forced imports into function bodies and import-time
registration; this test names the first one it finds, with the lines that make it."""
import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "bertdims"


def _imported(module: str, node: ast.AST, modules: set[str]) -> list[str]:
    """The sibling modules an import statement of ``module`` names."""
    if isinstance(node, ast.ImportFrom):
        if node.level == 1:
            names = [node.module.split(".")[0]] if node.module else [a.name for a in node.names]
        elif node.module and node.module.split(".")[0] == "bertdims":
            parts = node.module.split(".")
            names = parts[1:2] if len(parts) > 1 else [a.name for a in node.names]
        else:
            names = []
    elif isinstance(node, ast.Import):
        names = [a.name.split(".")[1] for a in node.names
                 if a.name.startswith("bertdims.") and a.name.count(".") >= 1]
    else:
        names = []
    return [n for n in names if n in modules and n != module]


def import_graph(package: Path = PACKAGE) -> tuple[dict[str, set[str]], dict]:
    """``{module: modules it imports}`` over every import statement (top level, in functions,
    under ``TYPE_CHECKING``), and ``{(a, b): [line, ...]}`` saying where."""
    modules = {p.stem for p in package.glob("*.py") if p.stem != "__init__"}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    lines: dict = {}
    for m in modules:
        for node in ast.walk(ast.parse((package / f"{m}.py").read_text())):
            for target in _imported(m, node, modules):
                graph[m].add(target)
                lines.setdefault((m, target), []).append(node.lineno)
    return graph, lines


def test_the_graph_sees_imports_inside_functions(tmp_path):
    (tmp_path / "a.py").write_text("from .b import x\n")
    (tmp_path / "b.py").write_text("def f():\n    from .a import y\n    from bertdims.c import z\n")
    (tmp_path / "c.py").write_text("import numpy\n")
    graph, lines = import_graph(tmp_path)
    assert graph == {"a": {"b"}, "b": {"a", "c"}, "c": set()}
    assert lines[("b", "a")] == [2]
    with pytest.raises(CycleError):
        tuple(TopologicalSorter(graph).static_order())


def test_the_package_has_no_import_cycle():
    graph, lines = import_graph()
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as err:
        cycle = err.args[1]
        where = [f"{a} -> {b} (bertdims/{a}.py line {', '.join(map(str, lines[a, b]))})"
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
    from bertdims import _embedded, _hub
    from bertdims.tasks import task_names
    names = task_names()
    assert names[:len(_embedded.TASKS)] == [t.name for t in _embedded.TASKS]
    assert names[len(_embedded.TASKS):len(_embedded.TASKS) + len(_hub.TASKS)] == \
        [t.name for t in _hub.TASKS]
    assert task_names("hub") == [t.name for t in _hub.TASKS]


#: The modules that compute (training, analysis, statistics, the store) and the ones that only
#: present or take input (charts, sentences, the chapter runner, the scorecard and its claims,
#: the command line).
NUMERICS = ["params", "models", "heads", "training", "loop", "finetuning", "finetune_config", "multitask", "sparse",
            "extract", "probes", "dims", "pca", "neurons", "distances", "crossft", "agreement",
            "stats", "store", "tasks", "executor"]
PRESENTATION = ["charts", "fewdims_charts", "study_charts", "findings", "study_findings",
                "report", "scorecard", "claims", "chapters", "webassets", "overview", "plan",
                "cli", "commands", "flags"]


def _imports(module: str, packages: tuple[str, ...]) -> list[int]:
    """Lines where ``module`` imports one of ``packages`` (third-party names)."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    return [node.lineno for node in ast.walk(tree)
            if isinstance(node, ast.Import) and any(a.name.split(".")[0] in packages for a in node.names)
            or isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in packages]


@pytest.mark.parametrize("module", NUMERICS)
def test_a_numerics_module_never_reaches_charts_sentences_or_the_command_line(module):
    """A change to a chart, a sentence of findings or a command's flags touches no module that
    computes: no numerics module imports, even through others, a presentation module, Altair
    or argparse."""
    graph, _ = import_graph()
    assert set(NUMERICS) | set(PRESENTATION) <= set(graph)      # the lists name real modules
    reached = _reachable(graph, module) | {module}
    assert not reached & set(PRESENTATION), sorted(reached & set(PRESENTATION))
    front = {m: _imports(m, ("altair", "argparse")) for m in reached if _imports(m, ("altair", "argparse"))}
    assert not front, f"imports altair or argparse: {front}"


def test_no_public_name_shadows_a_module():
    """``bertdims.<name>`` is the module ``bertdims/<name>.py`` whenever that file exists (the
    fine-tuning module is ``finetuning``, so ``bd.finetune`` can be the function)."""
    import types

    import bertdims as bd
    shadowed = {p.stem: type(getattr(bd, p.stem)).__name__ for p in PACKAGE.glob("*.py")
                if not p.stem.startswith("__") and hasattr(bd, p.stem)
                and not isinstance(getattr(bd, p.stem), types.ModuleType)}
    assert not shadowed
