"""Validation helpers shared by every config: errors that name the parameter, the
value and what is allowed, raised before any expensive work starts."""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Iterable, Sequence


class ConfigError(ValueError):
    """A parameter has a value that is not allowed."""


def bad(name: str, value: Any, allowed: str) -> ConfigError:
    """Build the standard error: ``parameter 'name' = value: allowed ...``."""
    return ConfigError(f"parameter {name!r} = {value!r} is not allowed; {allowed}")


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> None:
    choices = list(choices)
    if value not in choices:
        raise bad(name, value, "choose one of: " + ", ".join(map(str, choices)))


def check_range(name: str, value: Any, low: float | None = None, high: float | None = None,
                *, low_open: bool = False, high_open: bool = False, integer: bool = False) -> None:
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            integer and not isinstance(value, int)):
        raise bad(name, value, f"expected {kind}")
    lo_ok = low is None or (value > low if low_open else value >= low)
    hi_ok = high is None or (value < high if high_open else value <= high)
    if not (lo_ok and hi_ok):
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        interval = ("(" if low_open else "[") + f"{lo}, {hi}" + (")" if high_open else "]")
        raise bad(name, value, f"expected {kind} in {interval}")


def check_dims(name: str, dims: Sequence[int] | None, hidden_size: int) -> None:
    """Dimensions must be distinct integers in [0, hidden_size)."""
    if dims is None:
        return
    if len(dims) == 0:
        raise bad(name, dims, "give at least one dimension, or None for all")
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, int) or not 0 <= d < hidden_size:
            raise bad(name, list(dims), f"every dimension must be an integer in [0, {hidden_size - 1}]"
                      f" (the model's hidden size is {hidden_size}); {d!r} is not")
    dup = sorted({d for d in dims if list(dims).count(d) > 1})
    if dup:
        raise bad(name, list(dims), f"dimensions must be distinct; repeated: {dup}")


def parse_int_list(text: str | Sequence[int] | None) -> list[int] | None:
    """``"3,17"`` -> ``[3, 17]``; ``"all"``/``None`` -> ``None``."""
    if text is None:
        return None
    if isinstance(text, str):
        if text.strip().lower() in ("", "all", "none"):
            return None
        try:
            return [int(t) for t in text.split(",")]
        except ValueError:
            raise bad("dims", text, "expected comma-separated integers such as '3,17', or 'all'") from None
    return [int(t) for t in text]


class ConfigMixin:
    """Dataclass helpers: dict round trip and a stable JSON form used for result keys."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, data: dict):
        fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ConfigError(f"unknown parameter(s) {unknown} for {cls.__name__}; "
                              f"allowed: {sorted(fields)}")
        return cls(**data)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, default=str)


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
            from .tasks import get_task
            labels = [get_task(t).num_labels for t in self.tasks if isinstance(t, str)]
            return {"num_labels": min(labels) if labels else 1}
        if self.model is None:
            raise ConfigError(f"a bound uses {name!r} but the chapter declares no model parameter")
        from transformers import AutoConfig

        from .models import resolve_model
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
            from .tokens import check_token
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
        from .tasks import get_task, task_names
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
            from .models import ModelNotAvailableError
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
