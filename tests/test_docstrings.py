"""Every public function and class of ``import bertdims as bd`` (the curated ``bd.__all__``, and
every name that was at the top level before it was curated, read from its module) has a numpydoc
docstring: a summary, each parameter under "Parameters" (a dataclass config: each field, under
"Parameters" or "Attributes"), what it returns under "Returns" (or "Yields"), and the shape of
every array, tensor or table it takes or gives."""
from __future__ import annotations

import dataclasses
import importlib
import inspect
import re

import pytest
from numpydoc.docscrape import NumpyDocString

import bertdims as bd
from former_names import FORMER, RENAMED

#: Words that say an argument or result is an array, a tensor or a table, whose description
#: must then give its shape, e.g. "(n, H)" or "shape".
ARRAY_WORDS = re.compile(r"\b(ndarray|np\.ndarray|array|Tensor|DataFrame)\b")
SHAPE = re.compile(r"\(\s*[A-Za-z0-9_ ]+\s*(,[^)]*)?\)|\bshape\b|\bcolumns?\b|\brows?\b|\bscalar\b")


def public_objects() -> dict[str, object]:
    """Label -> object: ``name`` for a curated name (``bd.name``), ``module.name`` for a former
    top-level name that now lives only in its module (read there, so no FutureWarning)."""
    found = {name: getattr(bd, name) for name in bd.__all__}
    former = {**FORMER, **{new: module for module, new in RENAMED.values()}}
    for name, module in former.items():
        if name not in bd.__all__:
            found[f"{module}.{name}"] = getattr(importlib.import_module(f"bertdims.{bd._MODULES[module]}"), name)
    return {label: obj for label, obj in sorted(found.items())
            if not label.split(".")[-1].startswith("_") and not inspect.ismodule(obj)
            and (inspect.isfunction(obj) or inspect.isclass(obj))
            and getattr(obj, "__module__", "").startswith("bertdims")}


PUBLIC = public_objects()


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
    assert {"finetune", "FinetuneConfig", "ResultStore", "paired_effect", "rank_dims",
            "dims.summarize_runs", "scorecard.record_verdict"} <= set(PUBLIC)
    # no fewer objects than the flat namespace had (132 functions and classes), plus
    # pca_study and neurons_study, curated now
    assert len({id(obj) for obj in PUBLIC.values()}) >= 134


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


@pytest.mark.parametrize("label", sorted(PUBLIC))
def test_public_docstring_is_numpydoc(label):
    found = problems(PUBLIC[label])
    assert not found, f"bd.{label}: " + "; ".join(found)
