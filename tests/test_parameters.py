"""Every chapter parameter is declared in book/parameters.yml and checked before any work:
a bad value of each parameter of each chapter is refused with an error naming the chapter,
the parameter and the value, and no kernel is started (papermill is replaced by a trap)."""
from __future__ import annotations

from pathlib import Path

import papermill
import pytest
import yaml

from bertdims.core._validate import ConfigError
from bertdims.book.parameters import Declared, SizeContext, check_declared
from bertdims.book.chapters import (PRESETS, chapter_path, check_parameters, declared_parameters,
                               chapter_stems, load_declarations, resolve_parameters, run_chapter)
from bertdims.cli import main
from bertdims.modeling.models import ModelNotAvailableError, resolve_model

ROOT = Path(__file__).resolve().parents[1]
STEMS = chapter_stems(ROOT)
DECLARATIONS = load_declarations(ROOT)
#: sizes of bert-base-uncased, for presets naming a model that is not available offline here
BERT_BASE = {"num_layers": 12, "hidden_size": 768, "max_positions": 512}


def _path(stem: str) -> Path:
    return ROOT / "book" / f"{stem}.ipynb"


def bad_values(decl: Declared, ctx: SizeContext) -> list:
    """Values the constraint must refuse (and that pass the type check of the parameters cell)."""
    k = decl.kind
    if k == "model":
        return ["no-such-org/no-such-model"]
    if k == "task":
        wanted = isinstance(decl.opts.get("task"), dict) and decl.opts["task"].get("classification")
        return ["no_such_task"] + (["stsb"] if wanted else [])
    if k == "token":
        return ["bogus", "token:-1"]
    if k == "choice":
        return ["no_such_choice"]
    if k in ("int", "float"):
        from bertdims.book.parameters import _bound
        low, _ = _bound(decl.opts[k][0], ctx)
        high, _ = _bound(decl.opts[k][1], ctx)
        step = 1 if k == "int" else 0.5
        out = []
        if low is not None:
            out.append(low if decl.opts.get("open") in ("low", "both") else low - step)
        if high is not None:
            out.append(high if decl.opts.get("open") in ("high", "both") else high + step)
        return [type(low if low is not None else high)(v) if k == "int" else float(v) for v in out]
    if k == "any_of":
        pool = [v for o in decl.options for v in bad_values(o, ctx)]
        return [v for v in pool if decl.problem(v, ctx) is not None][:2]
    if k == "list":
        good = _good_item(decl.item, ctx)
        out = [[v] for v in bad_values(decl.item, ctx)]
        if int(decl.opts.get("min_items", 1)) >= 1:
            out.append([good] * (int(decl.opts.get("min_items", 1)) - 1))
        if decl.opts.get("distinct"):
            out.append([good, good])
        return out
    raise AssertionError(f"no bad value for {decl.spec!r}")


def _good_item(decl: Declared, ctx: SizeContext):
    if decl.kind == "task":
        return "rotten_tomatoes"
    if decl.kind == "token":
        return "cls"
    if decl.kind == "choice":
        return decl.opts["choice"][0]
    if decl.kind == "any_of":
        return _good_item(decl.options[0], ctx)
    from bertdims.book.parameters import _bound
    low, _ = _bound(decl.opts[decl.kind][0], ctx)
    return (low or 0) + 1


def _cases():
    for stem in STEMS:
        rules = DECLARATIONS[stem]
        values = declared_parameters(_path(stem))
        ctx = SizeContext(values.get("model"), [], None)
        for name, spec in rules.items():
            if name == "_rules":
                continue
            for value in bad_values(Declared(spec), ctx):
                yield pytest.param(stem, name, value, id=f"{stem}-{name}={value!r}")


CASES = list(_cases())


def test_every_chapter_parameter_is_declared():
    for stem in STEMS:
        assert stem in DECLARATIONS, f"{stem} has no entry in book/parameters.yml"
        declared = set(declared_parameters(_path(stem)))
        rules = set(DECLARATIONS[stem]) - {"_rules"}
        assert declared - rules == set(), f"{stem}: parameters with no constraint: {declared - rules}"
        assert rules - declared == set(), f"{stem}: constraints of no parameter: {rules - declared}"
        for spec in DECLARATIONS[stem].values():
            if isinstance(spec, list):   # the _rules
                continue
            Declared(spec)   # parses


@pytest.mark.parametrize("stem", STEMS)
@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_passes_the_checks(stem, preset):
    params = resolve_parameters(_path(stem), preset, None, ROOT)
    sizes = BERT_BASE if params.get("model") == "bert-base-uncased" else None
    values = check_parameters(_path(stem), params, ROOT, sizes=sizes)
    assert set(values) == set(declared_parameters(_path(stem)))


def test_a_key_given_twice_fails(tmp_path):
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "parameters.yml").write_text(
        "01_model_and_tasks:\n  model: model\n  model: task\n")
    with pytest.raises(ConfigError, match="'model' is given twice"):
        load_declarations(tmp_path)


def test_a_parameter_without_declaration_fails(tmp_path):
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "parameters.yml").write_text(yaml.safe_dump(
        {"01_model_and_tasks": {"model": "model"}}))
    with pytest.raises(ConfigError, match="have no constraint"):
        check_parameters(_path("01_model_and_tasks"), {}, tmp_path)


@pytest.fixture()
def no_kernel(monkeypatch):
    """papermill replaced by a trap: any attempt to start a notebook fails the test."""
    def trap(*args, **kwargs):
        raise AssertionError("a kernel was started although a parameter was bad")
    monkeypatch.setattr(papermill, "execute_notebook", trap)
    monkeypatch.chdir(ROOT)


def test_there_is_a_bad_value_for_every_parameter():
    named = {(c.values[0], c.values[1]) for c in CASES}
    for stem in STEMS:
        for name in declared_parameters(_path(stem)):
            assert (stem, name) in named, f"no bad value tried for {stem}.{name}"


@pytest.mark.parametrize("stem,name,value", CASES)
def test_bad_value_is_refused_before_any_kernel(no_kernel, tmp_path, stem, name, value):
    with pytest.raises((ConfigError, ModelNotAvailableError)) as err:
        run_chapter(stem, params={name: value}, out_dir=tmp_path, root=ROOT, progress=False)
    prefix = f"chapter {stem}: parameter {name!r} = {value!r}"
    decl = Declared(DECLARATIONS[stem][name])
    if decl.kind == "model":         # a well-formed name of a model that is not available
        assert err.type is ModelNotAvailableError
        with pytest.raises(ModelNotAvailableError) as unavailable:
            resolve_model(value)
        assert str(unavailable.value).startswith(f"parameter {name!r} = {value!r}: ")
        assert str(err.value) == f"chapter {stem}: {unavailable.value}"
    else:                            # the declaration's own account of what is allowed
        ctx = SizeContext(declared_parameters(_path(stem)).get("model"), [], None)
        assert str(err.value) == f"{prefix} is not allowed; {decl.problem(value, ctx)}"
    assert not list(tmp_path.glob("*.ipynb")), "nothing may be written for a refused chapter"


@pytest.mark.parametrize("argv", [
    ["run", "03", "-p", "layers", "[99]"],
    ["run", "05", "-p", "freeze", "[99]"],
    ["run", "04", "-p", "ks", "[0, 2]"],
    ["run", "01", "-p", "model", "no-such-org/no-such-model"],
    ["book", "--chapters", "01,03", "--preset", "smoke"],   # the presets are fine: the trap fires
])
def test_cli_refuses_before_any_kernel(no_kernel, capsys, tmp_path, argv):
    if argv[0] == "book":
        with pytest.raises(AssertionError, match="kernel was started"):
            main(argv)
        return
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    stem, value = chapter_path(argv[1], ROOT).stem, yaml.safe_load(argv[4])
    with pytest.raises((ConfigError, ModelNotAvailableError)) as refusal:    # the API's refusal
        run_chapter(stem, params={argv[3]: value}, out_dir=tmp_path, root=ROOT, progress=False)
    assert str(refusal.value).startswith(f"chapter {stem}: parameter {argv[3]!r} = {value!r}")
    assert err == f"bertdims run: error: {refusal.value}\n", err


def test_book_checks_every_chapter_before_the_first_runs(no_kernel, capsys, monkeypatch):
    """A bad preset value in the last chapter stops the book before chapter 1 executes."""
    from bertdims.book import parameters
    real = parameters.load_presets

    def presets(root=None):
        data = real(root)
        data.setdefault("10_sparse_finetuning", {})["smoke"] = {
            **data["10_sparse_finetuning"]["smoke"], "sparsities": [1.5]}
        return data

    monkeypatch.setattr(parameters, "load_presets", presets)
    assert main(["book", "--preset", "smoke"]) == 2
    err = capsys.readouterr().err
    assert "chapter 10_sparse_finetuning" in err and "'sparsities' = [1.5]" in err, err


def test_bounds_follow_the_model_size(tiny_bert):
    """A tiny BERT (2 layers, hidden 32) gets its own ranges, read from its config.json."""
    rules = DECLARATIONS["03_token_and_layer"]
    check_declared(rules, {"model": tiny_bert, "layers": [0, 2]})
    with pytest.raises(ConfigError, match=r"\[0, 2\].*num_layers = 2"):
        check_declared(rules, {"model": tiny_bert, "layers": [3]})
    with pytest.raises(ConfigError, match=r"hidden_size = 32"):
        check_declared(DECLARATIONS["04_few_dimensions"], {"model": tiny_bert, "candidates": 33})


def test_bounds_may_use_the_number_of_classes():
    rules = {"tasks": {"list": "task"}, "n": {"int": [1, "num_labels - 1"]}}
    check_declared(rules, {"tasks": ["bbc_news", "reuters_r8"], "n": 4})
    with pytest.raises(ConfigError, match="num_labels = 5"):
        check_declared(rules, {"tasks": ["bbc_news", "reuters_r8"], "n": 5})


RULES = [pytest.param(stem, rule, id=f"{stem}-rule{i}")
         for stem, rules in DECLARATIONS.items() for i, rule in enumerate(rules.get("_rules") or [])]


@pytest.mark.parametrize("stem,rule", RULES)
def test_every_rule_refuses_its_bad_example(no_kernel, tmp_path, stem, rule):
    """Each rule across parameters carries ``bad:``, overrides that break it; they are refused
    with the rule's message before any kernel starts."""
    assert isinstance(rule.get("bad"), dict) and rule["bad"], \
        f"{stem}: the rule {rule['require']!r} needs a `bad:` example in book/parameters.yml"
    with pytest.raises(ConfigError) as err:
        run_chapter(stem, params=rule["bad"], out_dir=tmp_path, root=ROOT, progress=False)
    text = str(err.value)
    assert f"chapter {stem}" in text and "not allowed together" in text, text
    assert rule.get("message", rule["require"]) in text, text
