"""Every result has one shape (``config``, ``metrics``, ``tables``, ``paths``;
:mod:`bertdims.core.result`). The studies are checked where their own tests compute them
(``check_result`` in test_agreement, test_crossft, test_dims, test_dims_retrain,
test_distances, test_executor, test_pca); here: the pieces, a fine-tuning run, a stored run, the
neurons study, and that no result class of the package lacks the shape."""
from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pandas as pd
import pytest

import bertdims as bd
from bertdims.core.result import Result, ResultFields, StudyTables, runs_metrics, runs_paths
from result_checks import check_result


@dataclasses.dataclass
class _Run:
    metrics: dict
    path: Path | None


@dataclasses.dataclass
class _Study(ResultFields):
    scores: pd.DataFrame
    folder: Path
    runs: dict
    note: str = "not a table"
    config: object = None

    @property
    def metrics(self) -> dict:
        return runs_metrics(self.runs)


def test_result_fields_lists_tables_paths_and_the_runs(tmp_path):
    runs = {("a", 0): _Run({"test": {"accuracy": 0.5}}, tmp_path / "a"),
            ("b", 0): _Run({"test": {"accuracy": 0.75}}, None)}          # not kept
    study = _Study(pd.DataFrame({"x": [1]}), tmp_path, runs, config={"k": 1})
    assert set(study.tables) == {"scores"}
    assert study.paths == {"folder": tmp_path, ("a", 0): tmp_path / "a"}
    assert study.metrics == {("a", 0): {"test": {"accuracy": 0.5}}, ("b", 0): {"test": {"accuracy": 0.75}}}
    assert isinstance(study, Result)
    assert runs_paths(runs) == {("a", 0): tmp_path / "a"}


def test_the_protocol_wants_all_four():
    class NoPaths:
        config, metrics, tables = None, {}, {}
    assert not isinstance(NoPaths(), Result)


def test_study_tables_is_still_a_dict_of_tables():
    t = pd.DataFrame({"x": [1, 2]})
    out = StudyTables({"curves": t, "predictions": {"task": [1]}}, config={"model": "m"},
                      paths={("task", 0): Path("/nowhere")})
    assert out["curves"] is t and isinstance(out, dict) and set(out) == {"curves", "predictions"}
    assert set(out.tables) == {"curves"}                     # only the DataFrames
    assert out.metrics == {} and out.config == {"model": "m"}
    check_result(out, kept=False)


def test_a_check_that_fails_on_a_wrong_shape():
    bad = StudyTables({"curves": pd.DataFrame()}, config=None, metrics={"test": 0.5})
    with pytest.raises(AssertionError):
        check_result(bad)                                    # metrics not {run: {split: {...}}}
    with pytest.raises(AssertionError):
        check_result(StudyTables({}, config=None, paths={"run": Path("/no/such/folder")}))


def test_a_finetuning_run_and_the_stored_run_behind_it(tiny_bert, store):
    config = bd.FinetuneConfig(model=tiny_bert, task="rotten_tomatoes", max_train_samples=32,
                               max_eval_samples=16, max_seq_len=16, device="cpu", precision="fp32")
    run = bd.finetune(config, store=store, progress=False)
    check_result(run, config=config, single=True, tables={"history"})
    assert set(run.paths) == {"model_dir", "path"} and run.paths["path"] == run.path
    stored = store.get("finetune", bd.train.finetuning.stored_key(config, store))
    check_result(stored, single=True)
    assert stored.metrics == run.metrics and stored.paths == {"path": run.path}
    pd.testing.assert_frame_equal(stored.tables["history"], run.history, check_dtype=False)
    assert isinstance(stored.config, dict) and stored.config["task"] == "rotten_tomatoes"
    bare = bd.finetune(config, progress=False)                   # store=None: nothing kept
    assert bare.path is None and set(bare.paths) == {"model_dir"}


def test_the_neurons_study_has_the_shape(tiny_bert, store):
    out = bd.neurons_study(tiny_bert, ["rotten_tomatoes"], [0], store=store, max_train_samples=60,
                           max_eval_samples=40, max_seq_len=16, n_neurons=3, folds=3)
    check_result(out, tables={"accuracy", "selection", "single", "activation", "table3"})
    assert set(out.paths) == {("rotten_tomatoes", "pretrained", 0), ("rotten_tomatoes", "finetuned", 0)}
    assert out.config == {"model": tiny_bert, "tasks": ["rotten_tomatoes"], "seeds": [0],
                          "max_train_samples": 60, "max_eval_samples": 40, "max_seq_len": 16,
                          "n_neurons": 3, "folds": 3}
    assert "predictions" in out and "predictions" not in out.tables


#: The classes the experiments return, by module: each has the shape (a class check; the
#: tests named in the module docstring check instances).
RESULT_CLASSES = {
    "train.finetuning": ["FinetuneRun"], "train.multitask": ["MultitaskRun"],
    "train.sparse": ["SparseStudy"], "core.store": ["StoredRun"],
    "analysis.dims": ["DimsResult", "RetrainStudy"], "analysis.crossft": ["Sequential"],
    "analysis.distances": ["LayerStudy"], "analysis.agreement": ["Rankings", "OutlierStudy"],
}


def _returned_classes() -> set[str]:
    """Every class a public function of the package is annotated to return."""
    found = set()
    for layer, modules in bd._LAYERS.items():
        for name in modules:
            module = getattr(getattr(bd, layer), name)
            for fn in vars(module).values():
                if inspect.isfunction(fn) and fn.__module__ == module.__name__ and not fn.__name__.startswith("_"):
                    ret = fn.__annotations__.get("return")
                    if isinstance(ret, str) and ret in vars(module) and inspect.isclass(vars(module)[ret]):
                        found.add(f"{layer}.{name}.{ret}")
    return found


@pytest.mark.parametrize("module, name", [(m, n) for m, names in RESULT_CLASSES.items() for n in names])
def test_every_result_class_has_the_four_attributes(module, name):
    cls = getattr(getattr(getattr(bd, module.split(".")[0]), module.split(".")[1]), name)
    fields = {f.name for f in dataclasses.fields(cls)}
    for attribute in ("config", "metrics", "tables", "paths"):
        assert attribute in fields or isinstance(inspect.getattr_static(cls, attribute, None), property), \
            f"{name} has no {attribute}"


def test_the_list_of_result_classes_is_complete():
    """A public function returning a class named like a result (``*Run``, ``*Study``,
    ``*Result``) must return one listed in RESULT_CLASSES."""
    listed = {f"{m}.{n}" for m, names in RESULT_CLASSES.items() for n in names}
    named = {c for c in _returned_classes() if c.endswith(("Run", "Study", "Result"))
             and not c.endswith(("PlannedRun",))}
    assert named <= listed, sorted(named - listed)
