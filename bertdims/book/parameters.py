"""A chapter's parameters: where the chapters are, their presets, and the checks every value
passes before a kernel starts.

A chapter is ``book/<stem>.ipynb``; its ``parameters`` cell holds the ``default`` preset.
``book/presets.yml`` holds, per chapter, the overrides of the other presets (``smoke`` for
CI, ``paper`` for the papers' models and data on a GPU). Names and types are checked against
the parameters cell, values against the chapter's entry in ``book/parameters.yml``: a small
constraint language (:class:`Declared`, :func:`check_declared`) whose bounds may name sizes
of the chapter's model or tasks (:class:`SizeContext`).
"""
from __future__ import annotations

import ast
import json
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import yaml

from ..core._validate import ConfigError

PRESETS = ("smoke", "default", "paper")


# ----------------------------------------------------------------------------- locating
def project_root(start: str | os.PathLike | None = None) -> Path:
    """The folder holding ``_toc.yml`` and ``book/``: ``$BERTDIMS_ROOT``, or upwards from cwd."""
    if start is None and os.environ.get("BERTDIMS_ROOT"):
        start = os.environ["BERTDIMS_ROOT"]
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "_toc.yml").exists() and (folder / "book").is_dir():
            return folder
    raise ConfigError(f"no bertdims book found at or above {here}: run from the repository root "
                      "(the folder with _toc.yml and book/) or set BERTDIMS_ROOT")


def chapter_stems(root: Path | None = None) -> list[str]:
    """Chapter stems in table-of-contents order (notebooks only)."""
    root = root or project_root()
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    files: list[str] = []

    def walk(entries):
        for e in entries or []:
            if "file" in e:
                files.append(e["file"])
            walk(e.get("sections"))
            for part in e.get("parts", []) if isinstance(e, dict) else []:
                walk(part.get("chapters"))

    walk(toc.get("chapters"))
    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    return [Path(f).name for f in files if (root / f"{f}.ipynb").exists()
            or (root / f).with_suffix(".ipynb").exists()]


def chapter_path(name: str, root: Path | None = None) -> Path:
    """Resolve ``name`` (a stem, its number prefix such as ``01``, or a path) to a notebook."""
    root = root or project_root()
    stems = chapter_stems(root)
    cand = Path(name)
    if cand.suffix == ".ipynb" and cand.exists():
        return cand.resolve()
    matches = [s for s in stems if s == name or s.split("_", 1)[0] == name]
    if len(matches) != 1:
        raise ConfigError(f"parameter 'chapter' = {name!r} is not a chapter; choose one of: "
                          + ", ".join(stems))
    return root / "book" / f"{matches[0]}.ipynb"


# --------------------------------------------------------------------------- parameters
def declared_parameters(path: Path) -> dict[str, Any]:
    """Names and default values of the chapter's ``parameters`` cell."""
    import nbformat
    nb = nbformat.read(str(path), as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if not cells:
        raise ConfigError(f"{path.name} has no cell tagged 'parameters'")
    values: dict[str, Any] = {}
    for node in ast.parse(cells[0].source).body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            target = node.targets[0] if isinstance(node, ast.Assign) else node.target
            if isinstance(target, ast.Name):
                values[target.id] = ast.literal_eval(node.value)
    return values


def load_presets(root: Path | None = None) -> dict:
    root = root or project_root()
    path = root / "book" / "presets.yml"
    return yaml.safe_load(path.read_text()) or {} if path.exists() else {}


def _type_ok(default: Any, value: Any) -> bool:
    if default is None or value is None:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple))
    return isinstance(value, type(default))


def resolve_parameters(path: Path, preset: str = "default", overrides: dict | None = None,
                       root: Path | None = None) -> dict[str, Any]:
    """The parameters to inject: the preset's overrides, then the user's, all checked
    against the chapter's parameters cell (unknown names and wrong types are errors)."""
    if preset not in PRESETS:
        raise ConfigError(f"parameter 'preset' = {preset!r} is not allowed; choose one of: "
                          + ", ".join(PRESETS))
    declared = declared_parameters(path)
    params: dict[str, Any] = {}
    if preset != "default":
        params.update((load_presets(root).get(path.stem) or {}).get(preset) or {})
    params.update(overrides or {})
    for name, value in params.items():
        if name not in declared:
            raise ConfigError(f"parameter {name!r} is not declared by chapter {path.stem}; "
                              f"it declares: {', '.join(declared)}")
        if not _type_ok(declared[name], value):
            raise ConfigError(f"parameter {name!r} = {value!r} has type {type(value).__name__}; "
                              f"chapter {path.stem} expects {type(declared[name]).__name__} "
                              f"(default {declared[name]!r})")
    return params


def load_declarations(root: Path | None = None) -> dict:
    """``book/parameters.yml``: per chapter stem, the constraint of each parameter."""
    root = root or project_root()
    path = root / "book" / "parameters.yml"
    return (yaml.load(path.read_text(), Loader=_UniqueKeyLoader) or {}) if path.exists() else {}


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses a key given twice in one mapping (plain YAML keeps the
    last one silently: a second entry for a chapter would hide the first)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(f"book/parameters.yml: {key!r} is given twice "
                                  f"(line {key_node.start_mark.line + 1})")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def check_parameters(path: Path, params: dict | None = None, root: Path | None = None,
                     *, sizes: dict | None = None) -> dict[str, Any]:
    """Check every parameter of a chapter (its defaults with ``params`` over them) against its
    declaration in ``book/parameters.yml``; returns the full set of values.

    Reads the model's ``config.json`` (through ``transformers.AutoConfig``) when a bound depends
    on the model's size, never its weights or any data. ``sizes`` gives such sizes directly.
    Raises :class:`ConfigError` naming the chapter, the parameter, the value and what is
    allowed; a parameter with no declaration is an error too.
    """
    declared = declared_parameters(path)
    values = {**declared, **(params or {})}
    rules = load_declarations(root).get(path.stem)
    if rules is None:
        raise ConfigError(f"chapter {path.stem} has no entry in book/parameters.yml")
    missing = sorted(set(declared) - set(rules))
    if missing:
        raise ConfigError(f"chapter {path.stem}: parameter(s) {missing} have no constraint in "
                          "book/parameters.yml")
    check_declared(rules, values, where=f"chapter {path.stem}", sizes=sizes)
    return values


EXECUTE_LAST = ("scorecard",)


def execution_order(stems: list[str]) -> list[str]:
    """``stems`` in table-of-contents order, except the :data:`EXECUTE_LAST` pages at the end."""
    return [s for s in stems if s not in EXECUTE_LAST] + [s for s in stems if s in EXECUTE_LAST]


def results_root(root: Path) -> Path:
    return Path(os.environ.get("BERTDIMS_RESULTS", root / "results")).resolve()


# ----------------------------------------------------------------- declared constraints
# A small constraint language for parameters declared as data (``book/parameters.yml``):
# the range checks reuse scikit-learn's ``Interval``; bounds may name a size of the model
# or of the tasks, which :class:`SizeContext` supplies. See :func:`check_declared`.

#: Names a bound may use, and what they mean.
SIZE_NAMES = {
    "num_layers": "the model's number of encoder layers",
    "hidden_size": "the model's hidden size",
    "max_positions": "the model's maximum sequence length (max_position_embeddings)",
    "num_labels": "the smallest number of classes among the chosen tasks",
}
#: Constraint kinds written as a plain word.
NAMED_KINDS = ("model", "task", "token", "bool", "str")


class SizeContext:
    """Sizes that bounds may refer to, computed only when a bound asks for them.

    ``model`` is the value of the chapter's model parameter; ``tasks`` its task names.
    ``sizes`` fixes some values up front (tests, or presets for a model not available here).
    """

    def __init__(self, model: str | None = None, tasks: Sequence[str] = (),
                 sizes: dict | None = None):
        self.model, self.tasks, self._sizes = model, list(tasks), dict(sizes or {})

    def __getitem__(self, name: str) -> int:
        if name not in self._sizes:
            self._sizes.update(self._compute(name))
        return self._sizes[name]

    def _compute(self, name: str) -> dict:
        if name == "num_labels":
            from ..data.tasks import get_task
            labels = [get_task(t).num_labels for t in self.tasks if isinstance(t, str)]
            return {"num_labels": min(labels) if labels else 1}
        if self.model is None:
            raise ConfigError(f"a bound uses {name!r} but the chapter declares no model parameter")
        from transformers import AutoConfig

        from ..modeling.models import resolve_model
        cfg = AutoConfig.from_pretrained(resolve_model(self.model))
        return {"num_layers": int(cfg.num_hidden_layers), "hidden_size": int(cfg.hidden_size),
                "max_positions": int(getattr(cfg, "max_position_embeddings", 10 ** 9))}

    def explain(self, names: Iterable[str]) -> str:
        parts = [f"{n} = {self[n]}" for n in sorted(set(names))]
        if not parts:
            return ""
        src = (f" for model {self.model!r}" if self.model is not None
               and set(names) - {"num_labels"} else "")
        return " (" + ", ".join(parts) + src + ")"


def _bound(expr: Any, ctx: SizeContext) -> tuple[float | None, set]:
    """A bound: None, a number, or an arithmetic expression of :data:`SIZE_NAMES`."""
    import ast
    import operator
    if expr is None or isinstance(expr, (int, float)) and not isinstance(expr, bool):
        return expr, set()
    ops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.FloorDiv: operator.floordiv}
    used: set = set()

    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.Name) and node.id in SIZE_NAMES:
            used.add(node.id)
            return ctx[node.id]
        if isinstance(node, ast.BinOp) and type(node.op) in ops:
            return ops[type(node.op)](ev(node.left), ev(node.right))
        raise ValueError(f"bad bound {expr!r}: use numbers, + - * // and {', '.join(SIZE_NAMES)}")

    return ev(ast.parse(str(expr), mode="eval")), used


class Declared:
    """One parameter's constraint, parsed from its declaration (see ``book/parameters.yml``).

    Forms: ``model`` | ``task`` | ``token`` | ``bool`` | ``str`` (plain words);
    ``{int: [low, high]}``, ``{float: [low, high], open: low|high|both}`` (bounds may be
    null or expressions of :data:`SIZE_NAMES`); ``{choice: [a, b, ...]}``;
    ``{task: {classification: true}}``; ``{list: <constraint>, min_items: 1, distinct: true}``;
    ``{any_of: [<constraint>, ...]}``. Any dict form takes ``none: true`` to allow None.
    """

    def __init__(self, spec: Any):
        self.spec = spec
        if isinstance(spec, str):
            if spec not in NAMED_KINDS:
                raise ValueError(f"unknown constraint {spec!r}; plain words: {', '.join(NAMED_KINDS)}")
            self.kind, self.opts, self.nullable = spec, {}, False
            return
        if not isinstance(spec, dict):
            raise ValueError(f"a constraint is a word or a mapping, not {spec!r}")
        kinds = [k for k in ("int", "float", "choice", "list", "any_of", *NAMED_KINDS) if k in spec]
        if len(kinds) != 1:
            raise ValueError(f"constraint {spec!r} must name exactly one kind")
        self.kind, self.nullable = kinds[0], bool(spec.get("none", False))
        self.opts = dict(spec)
        if self.kind == "list":
            self.item = Declared(spec["list"])
        if self.kind == "any_of":
            self.options = [Declared(s) for s in spec["any_of"]]

    # -- the check: None when the value is allowed, else the text of what is allowed
    def problem(self, value: Any, ctx: SizeContext) -> str | None:
        if value is None:
            return None if self.nullable else f"expected {self.describe(ctx)}, not None"
        ok, allowed = self._satisfied(value, ctx)
        return None if ok else allowed + ctx.explain(self.size_names())

    def _satisfied(self, value: Any, ctx: SizeContext) -> tuple[bool, str]:
        k = self.kind
        if k in ("int", "float"):
            return self._in_interval(value, ctx)
        if k == "bool":
            return isinstance(value, bool), "expected True or False"
        if k == "str":
            return isinstance(value, str) and bool(value), "expected a non-empty string"
        if k == "choice":
            choices = list(self.opts["choice"])
            return (not isinstance(value, (list, dict)) and value in choices,
                    "choose one of: " + ", ".join(map(str, choices)))
        if k == "model":
            return isinstance(value, str) and bool(value), "expected a model name or folder"
        if k == "task":
            return self._task(value)
        if k == "token":
            from ..modeling.tokens import check_token
            try:
                check_token(value)
                return True, ""
            except ConfigError as err:
                return False, str(err).split("; ", 1)[-1]
        if k == "any_of":
            wrong = [o.problem(value, ctx) for o in self.options]
            return any(w is None for w in wrong), " or ".join(
                o.describe(ctx) for o in self.options)
        return self._list(value, ctx)

    def _in_interval(self, value: Any, ctx: SizeContext) -> tuple[bool, str]:
        from numbers import Integral, Real

        from sklearn.utils._param_validation import Interval
        low, _ = _bound(self.opts[self.kind][0], ctx)
        high, _ = _bound(self.opts[self.kind][1], ctx)
        opened = self.opts.get("open", "neither")
        left = low is not None and opened not in ("low", "both")
        right = high is not None and opened not in ("high", "both")
        closed = {(True, True): "both", (True, False): "left", (False, True): "right",
                  (False, False): "neither"}[(left, right)]
        interval = Interval(Integral if self.kind == "int" else Real, low, high, closed=closed)
        ok = not isinstance(value, bool) and interval.is_satisfied_by(value)
        return ok, f"expected {interval}"

    def _task(self, value: Any) -> tuple[bool, str]:
        from ..data.tasks import get_task, task_names
        need_class = isinstance(self.opts.get("task"), dict) and self.opts["task"].get("classification")
        names = [n for n in task_names() if not need_class or not get_task(n).is_regression]
        what = "a classification task" if need_class else "a task"
        return (isinstance(value, str) and value in names,
                f"expected {what} of the registry: " + ", ".join(names))

    def _list(self, value: Any, ctx: SizeContext) -> tuple[bool, str]:
        n_min = int(self.opts.get("min_items", 1))
        what = f"expected a list of at least {n_min} item(s), each {self.item.describe(ctx)}"
        if self.opts.get("distinct"):
            what += ", no repeats"
        if not isinstance(value, (list, tuple)) or len(value) < n_min:
            return False, what
        for v in value:
            if self.item.problem(v, ctx) is not None:
                return False, f"{what}; {v!r} is not"
        if self.opts.get("distinct"):
            seen = [json.dumps(v, sort_keys=True, default=str) for v in value]
            if len(set(seen)) != len(seen):
                return False, what
        return True, what

    def describe(self, ctx: SizeContext) -> str:
        k = self.kind
        if k in ("int", "float"):
            return self._in_interval(None, ctx)[1].removeprefix("expected ")
        if k == "choice":
            return "one of: " + ", ".join(map(str, self.opts["choice"]))
        if k == "list":
            return "a list of " + self.item.describe(ctx)
        if k == "any_of":
            return " or ".join(o.describe(ctx) for o in self.options)
        if k == "task":
            return "a task name"
        return {"model": "a model name or folder", "token": "a token mode (cls, mean, maxnorm, "
                "token:i)", "bool": "True or False", "str": "a string"}[k]

    def size_names(self) -> set:
        """The :data:`SIZE_NAMES` this constraint's bounds use."""
        import re
        return {n for n in SIZE_NAMES if re.search(rf"\b{n}\b", json.dumps(self.spec))}


def check_declared(declarations: dict, params: dict, *, where: str = "",
                   sizes: dict | None = None) -> None:
    """Check ``params`` against ``declarations`` (name -> constraint spec, plus an optional
    ``_rules`` list of ``{require: <expression of the parameters>, message: ...}``).

    The model parameter is checked first (it must load offline: its config is read, never its
    weights), then every other one. Raises :class:`ConfigError` (or the model's
    ``ModelNotAvailableError``) naming ``where``, the parameter, its value and what is allowed.
    """
    prefix = f"{where}: " if where else ""
    parsed = {name: Declared(spec) for name, spec in declarations.items() if name != "_rules"}
    model_names = [n for n, d in parsed.items() if d.kind == "model"]
    model = params.get(model_names[0]) if model_names else None
    tasks: list = []
    for n, d in parsed.items():
        if d.kind == "task" or (d.kind == "list" and d.item.kind == "task"):
            v = params.get(n)
            tasks += list(v) if isinstance(v, (list, tuple)) else [v]
    ctx = SizeContext(model, [t for t in tasks if isinstance(t, str)], sizes)
    order = model_names + [n for n in parsed if n not in model_names]
    for name in order:
        if name not in params:
            continue
        value, decl = params[name], parsed[name]
        wrong = decl.problem(value, ctx)
        if wrong is None and decl.kind == "model" and not (sizes and "num_layers" in sizes):
            from ..modeling.models import ModelNotAvailableError
            try:
                ctx["num_layers"]
            except ModelNotAvailableError as err:
                raise ModelNotAvailableError(prefix + str(err)) from None
            except (OSError, ValueError) as err:   # a folder whose config.json does not load
                wrong = f"its config.json does not load ({err})"
        if wrong is not None:
            raise ConfigError(f"{prefix}parameter {name!r} = {value!r} is not allowed; {wrong}")
    for rule in declarations.get("_rules") or []:
        names = {"__builtins__": {}, "max": max, "min": min, "len": len, "set": set,
                 "sorted": sorted, "any": any, "all": all}
        try:
            ok = eval(rule["require"], {**names, **params})   # declared in the project's own data
        except Exception as err:  # noqa: BLE001  (a rule that cannot be evaluated is an error)
            ok, rule = False, {**rule, "message": f"{rule.get('message', '')} ({err})"}
        if not ok:
            import re
            involved = [n for n in parsed if re.search(rf"\b{n}\b", rule["require"])]
            values = ", ".join(f"{n} = {params.get(n)!r}" for n in involved)
            raise ConfigError(f"{prefix}parameters {values} are not allowed together; "
                              f"{rule.get('message', rule['require'])}")
