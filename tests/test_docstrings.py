"""Every public function and class of ``import bertdims as bd`` has a numpydoc docstring: a
summary, each parameter under "Parameters" (a dataclass config: each field, under "Parameters"
or "Attributes"), what it returns under "Returns" (or "Yields"), and the shape of every array,
tensor or table it takes or gives."""
from __future__ import annotations

import dataclasses
import inspect
import re

import pytest
from numpydoc.docscrape import NumpyDocString

import bertdims as bd

#: Words that say an argument or result is an array, a tensor or a table, whose description
#: must then give its shape, e.g. "(n, H)" or "shape".
ARRAY_WORDS = re.compile(r"\b(ndarray|np\.ndarray|array|Tensor|DataFrame)\b")
SHAPE = re.compile(r"\(\s*[A-Za-z0-9_ ]+\s*(,[^)]*)?\)|\bshape\b|\bcolumns?\b|\brows?\b|\bscalar\b")


def public_names() -> list[str]:
    out = []
    for name in sorted(dir(bd)):
        obj = getattr(bd, name)
        if name.startswith("_") or inspect.ismodule(obj):
            continue
        if (inspect.isfunction(obj) or inspect.isclass(obj)) and \
                getattr(obj, "__module__", "").startswith("bertdims"):
            out.append(name)
    return out


def _doc(obj) -> NumpyDocString:
    return NumpyDocString(inspect.getdoc(obj) or "")


def _params(obj) -> list[str]:
    """The parameters a reader passes: of a function, or of a class's constructor."""
    if inspect.isclass(obj) and dataclasses.is_dataclass(obj):
        return [f.name for f in dataclasses.fields(obj) if f.init]
    target = obj.__init__ if inspect.isclass(obj) else obj
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return []
    return [p.name for p in sig.parameters.values()
            if p.name not in ("self", "cls") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
            and not p.name.startswith("_")]


def problems(obj) -> list[str]:
    """What the docstring of ``obj`` lacks (empty when it is complete)."""
    doc = _doc(obj)
    found = []
    if not doc["Summary"]:
        found.append("no summary line")
    documented = {}
    for section in ("Parameters", "Attributes", "Other Parameters"):
        for p in doc[section]:
            for name in p.name.replace("*", "").split(","):
                documented[name.strip()] = p
    missing = [p for p in _params(obj) if p not in documented]
    if missing:
        found.append(f"parameters not documented: {', '.join(missing)}")
    if inspect.isfunction(obj):
        ret = inspect.signature(obj).return_annotation
        gives = ret is not inspect.Signature.empty and ret not in (None, "None")
        if gives and not (doc["Returns"] or doc["Yields"]):
            found.append("no Returns section")
    for section in ("Parameters", "Attributes", "Returns", "Yields"):
        for p in doc[section]:
            text = f"{p.type} {' '.join(p.desc)}"
            if ARRAY_WORDS.search(p.type or "") and not SHAPE.search(text):
                found.append(f"{section} {p.name or p.type!r}: an array or table without its shape")
    return found


def test_the_public_namespace_is_found():
    names = public_names()
    assert {"finetune", "FinetuneConfig", "ResultStore", "paired_effect"} <= set(names)


def test_the_checker_sees_a_missing_parameter_and_a_shapeless_array():
    def f(x, y: int = 0) -> int:
        """Add.

        Parameters
        ----------
        x : np.ndarray
            Numbers.
        """
    found = problems(f)
    assert "parameters not documented: y" in found
    assert "no Returns section" in found
    assert any("without its shape" in p for p in found)

    def g(x) -> None:
        """Scale.

        Parameters
        ----------
        x : np.ndarray
            Numbers, shape (n, H).
        """
    assert problems(g) == []


@pytest.mark.parametrize("name", public_names())
def test_public_docstring_is_numpydoc(name):
    found = problems(getattr(bd, name))
    assert not found, f"bd.{name}: " + "; ".join(found)
