"""The one vocabulary of config fields (``bertdims.config.params``): constraints, the one validator,
configs derived from others, and command-line flags generated from the declarations."""
from __future__ import annotations

import argparse
import dataclasses

import pytest

from bertdims.core._validate import ConfigError
from bertdims.cli.flags import add_flags
from bertdims.config.params import (VOCABULARY, Check, Flag, Interval, IntList, Options, Text,
                             check_fields, declared, derive, own, param)


@dataclasses.dataclass
class Study:
    model: str = param("model")
    max_seq_len: int = param("max_seq_len", 64)
    lr: float | None = own(None, Interval(float, 0, None, "right"), "None: the engine's", none=True)
    seeds: list = param("seeds")
    fast: bool = own(False, Flag(), "a switch")
    mode: str = own("a", Options(("a", "b")), "one of two")

    def __post_init__(self):
        check_fields(self)


@pytest.mark.parametrize("constraint, good, bad_value", [
    (Interval(int, 1, None), 3, 0), (Interval(int, 1, None), 3, 2.5),
    (Interval(float, 0, 1, "left"), 0.0, 1.0), (Interval(float, 0, 1, "right"), 1.0, 0.0),
    (Interval(float, 0, 1, "neither"), 0.5, 0), (Options(("x", "y")), "x", "z"),
    (Text(), "a", ""), (Flag(), True, 1), (IntList(low=0, distinct=True), [1, 2], [1, 1]),
    (IntList(low=0), [0], [-1]), (IntList(), [3], "3,x"), (IntList(min_len=2), [1, 2], [1]),
])
def test_each_constraint_takes_good_values_and_names_the_parameter_of_bad_ones(constraint, good, bad_value):
    assert constraint.check("p", good) == good
    with pytest.raises(ConfigError, match=r"parameter 'p' = .* is not allowed"):
        constraint.check("p", bad_value)


def test_int_lists_read_text_and_numpy_integers():
    import numpy as np
    assert IntList().check("dims", "3,17") == [3, 17]
    out = IntList().check("dims", np.array([3, 17]))
    assert out == [3, 17] and all(type(v) is int for v in out)


def test_the_validator_checks_every_declared_field_and_normalises():
    s = Study(seeds="0,1")
    assert s.seeds == [0, 1] and s.max_seq_len == 64 and s.lr is None
    for field, value in [("max_seq_len", 1), ("lr", -1.0), ("seeds", [0, 0]), ("fast", "yes"),
                         ("mode", "c"), ("model", "")]:
        with pytest.raises(ConfigError, match=f"'{field}'"):
            Study(**{field: value})


def test_a_config_may_change_a_shared_default_but_not_its_constraint():
    assert Study().max_seq_len == 64 and VOCABULARY["max_seq_len"].default == 128
    assert declared(Study)["max_seq_len"] is VOCABULARY["max_seq_len"]
    assert Study().seeds is not Study().seeds                  # a fresh list per config


def test_a_config_may_also_take_none_with_a_meaning_of_its_own():
    @dataclasses.dataclass
    class Cross:
        lr: float | None = param("lr", None, none="the engine's default")

        def __post_init__(self):
            check_fields(self)
    assert Cross().lr is None and Cross(lr=1e-3).lr == 1e-3
    assert declared(Cross)["lr"].constraint is VOCABULARY["lr"].constraint
    assert "None: the engine's default" in declared(Cross)["lr"].doc
    with pytest.raises(ConfigError, match="'lr'"):
        Cross(lr=0.0)


def test_derive_copies_the_shared_fields_and_skips_nones_the_target_refuses():
    from bertdims.config.finetune_config import FinetuneConfig
    s = Study(model="embedded", lr=None)
    cfg = derive(FinetuneConfig, s, seed=2)
    assert cfg.max_seq_len == 64 and cfg.seed == 2
    assert cfg.lr == FinetuneConfig().lr                       # None in the study: the default
    assert derive(FinetuneConfig, Study(lr=3e-4)).lr == 3e-4
    with pytest.raises(ConfigError, match="'max_seq_len'"):
        derive(FinetuneConfig, s, max_seq_len=0)


def test_flags_are_generated_from_the_declarations():
    p = argparse.ArgumentParser()
    names = add_flags(p, Study, skip=("model",), defaults={"mode": "b"})
    assert names == ["max_seq_len", "lr", "seeds", "fast", "mode"]
    args = p.parse_args(["--max-seq-len", "32", "--lr", "none", "--seeds", "1,2", "--fast"])
    assert (args.max_seq_len, args.lr, args.seeds, args.fast, args.mode) == (32, None, "1,2", True, "b")
    assert Study(**vars(args)).seeds == [1, 2]
    with pytest.raises(SystemExit):
        p.parse_args(["--max-seq-len", "long"])


def test_every_vocabulary_default_passes_its_own_constraint():
    for name, spec in VOCABULARY.items():
        assert spec.check(name, spec.default) == spec.default, name
        assert spec.doc and isinstance(spec.constraint, (Interval, Options, Text, Flag, IntList, Check))


#: Fields that share a vocabulary name but mean something else in their config, with why.
OWN_MEANING = {
    "ExtractConfig.task": "required, and 'general' names the general-English corpus",
    "MultitaskConfig.dims": "one list of dimensions per task, not one list for one head",
    "MultitaskConfig.layer": "any negative layer counts from the end (the vocabulary: -1 only)",
}


def test_every_field_of_every_config_is_declared_and_shared_ones_use_the_vocabulary():
    """Each config field carries its constraint (one validator checks them all), and a field
    named in the vocabulary is the vocabulary's: the same constraint and meaning everywhere,
    except the few listed in ``OWN_MEANING``."""
    from test_bad_input import _configs
    undeclared, foreign = [], []
    for cls in _configs():
        specs = declared(cls)
        undeclared += [f"{cls.__name__}.{f.name}" for f in dataclasses.fields(cls)
                       if f.init and f.name not in specs]
        foreign += [f"{cls.__name__}.{n}" for n, s in specs.items()
                    if n in VOCABULARY and s.constraint is not VOCABULARY[n].constraint]
    assert not undeclared
    assert sorted(foreign) == sorted(OWN_MEANING)
