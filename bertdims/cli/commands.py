"""The experiment families' sub-commands of ``bertdims`` (``finetune``, ``dims``, ``crossft``,
``extract``, ``sparse``): each reads its flags, builds the family's config and calls its library
function. The interface only: the modules that compute hold no argparse code.
"""
from __future__ import annotations

import argparse
import json

import pandas as pd

from ..core._validate import bad, check_choice
from ..analysis.crossft import (SAMPLERS, CrossConfig, cross_finetune, multitask_table, multitask_vs_single,
                      shared_dims, summarize_shared)
from ..analysis.dims import DEFAULT_KS, METHODS, MODES, rank_dims
from ..analysis.extract import extract
from ..train.finetuning import finetune
from ..config.finetune_config import FinetuneConfig
from .flags import add_flags
from ..config.params import declared
from ..train.sparse import SparseConfig, sparse_finetune
from ..core.store import ResultStore

# -------------------------------------------------------------------- finetune
def finetune_cli(subparsers) -> None:
    """``bertdims finetune --task T --layer -1 --token cls --dims 3,17 ... --out DIR``: one flag
    per :class:`FinetuneConfig` field (:func:`bertdims.config.params.add_flags`)."""
    p = subparsers.add_parser("finetune", help="fine-tune an encoder with a selective head",
                              description="Fine-tune an encoder with a head that reads chosen "
                                          "dimensions of a chosen token vector and layer.")
    add_flags(p, FinetuneConfig)
    p.add_argument("--out", default=None, help="write config.json, metrics.json, history.csv and model/ here")
    p.add_argument("--results", default=None,
                   help="results store folder (default $BERTDIMS_RESULTS or ./results); used when "
                        "--out is not given, or with --store")
    p.add_argument("--store", action="store_true", help="also keep the run in the results store")
    p.add_argument("--no-resume", dest="resume", action="store_false", help="ignore checkpoints")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_finetune_main)


def _finetune_main(args: argparse.Namespace) -> int:
    config = FinetuneConfig(**{name: getattr(args, name) for name in declared(FinetuneConfig)})
    store = None
    if args.out is None or args.store:
        store = ResultStore(args.results)
    run = finetune(config, store=store, out_dir=args.out, progress=not args.quiet, resume=args.resume)
    print(json.dumps({"metrics": run.metrics, "model_dir": str(run.model_dir),
                      "cached": run.cached}, indent=2))
    return 0


# ------------------------------------------------------------------------ dims
def _csv(kind):
    def parse(text: str):
        items = [t.strip() for t in text.split(",") if t.strip()]
        if kind == "ks":
            return [t if t == "all" else int(t) for t in items]
        if kind == "int":
            return [int(t) for t in items]
        return items
    return parse


#: The :class:`FinetuneConfig` fields the ``dims`` command takes (the fine-tuned model's run);
#: the others keep their defaults (the head reads every dimension).
_DIMS_FIELDS = ("model", "task", "seed", "max_train_samples", "max_eval_samples", "max_seq_len",
                "epochs", "device")


def dims_cli(subparsers) -> None:
    """``bertdims dims --task T --seed 0 --methods single,ablation --ks 1,2,3,all ...``:
    fine-tune (or read back), rank the dimensions and print the share of full performance."""
    text = ("Fine-tune (or read back from the store), rank the dimensions of the fine-tuned "
            "[CLS] vector and print the share of full performance kept by the top k.")
    p = subparsers.add_parser("dims", help="rank the dimensions of a fine-tuned model and score the top k",
                              description=text)
    add_flags(p, FinetuneConfig, skip=tuple(f for f in declared(FinetuneConfig) if f not in _DIMS_FIELDS),
              defaults={"max_train_samples": 1000, "max_eval_samples": 500, "max_seq_len": 64})
    p.add_argument("--methods", type=_csv("str"), default=list(METHODS))
    p.add_argument("--modes", type=_csv("str"), default=list(MODES))
    p.add_argument("--candidates", type=int, default=20)
    p.add_argument("--ks", type=_csv("ks"), default=list(DEFAULT_KS))
    p.add_argument("--retrain-ks", type=_csv("int"), default=[])
    p.add_argument("--results", default=None, help="results store folder (default $BERTDIMS_RESULTS or ./results)")
    p.set_defaults(func=_dims_main)


def _dims_main(args) -> int:
    config = FinetuneConfig(**{name: getattr(args, name) for name in _DIMS_FIELDS})
    res = rank_dims(config, store=ResultStore(args.results), methods=args.methods, modes=args.modes,
                    candidates=args.candidates, ks=args.ks, retrain_ks=args.retrain_ks)
    cols = ["method", "mode", "k", "dims", "metric", "value", "share", "share_above_chance"]
    with pd.option_context("display.width", 160, "display.max_colwidth", 40):
        print(res.scores[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


# --------------------------------------------------------------------- crossft
EXPERIMENTS = ("sequential", "shared", "multitask")


def crossft_cli(subparsers) -> None:
    """``bertdims crossft --tasks rotten_tomatoes,bbc_news --experiments sequential,multitask``:
    one flag per :class:`CrossConfig` field (:func:`bertdims.config.params.add_flags`), and the
    command's own."""
    p = subparsers.add_parser("crossft", help="cross-fine-tuning (A then B), shared dimensions, "
                              "and one model for several tasks", description=__doc__.splitlines()[0])
    add_flags(p, CrossConfig)
    p.add_argument("--sampler", default="proportional", help="joint training: " + ", ".join(SAMPLERS))
    p.add_argument("--experiments", default=",".join(EXPERIMENTS),
                   help="comma-separated: " + ", ".join(EXPERIMENTS))
    p.add_argument("--results", default=None, help="results store (default $BERTDIMS_RESULTS or ./results)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_crossft_main)


def _crossft_main(args) -> int:
    split = lambda s: [t.strip() for t in s.split(",") if t.strip()]  # noqa: E731
    experiments = split(args.experiments)
    for e in experiments:
        check_choice("experiments", e, EXPERIMENTS)
    check_choice("sampler", args.sampler, SAMPLERS)
    config = CrossConfig(**{name: getattr(args, name) for name in declared(CrossConfig)})
    store, progress = ResultStore(args.results), not args.quiet
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        if "sequential" in experiments:
            print(cross_finetune(config, store=store, progress=progress).pairs.round(3)
                  .to_string(index=False))
        if "shared" in experiments:
            print(summarize_shared(shared_dims(config, store=store, progress=progress)).round(3)
                  .to_string(index=False))
        if "multitask" in experiments:
            rows = multitask_vs_single(config, store=store, sampler=args.sampler, progress=progress)
            print(multitask_table(rows).round(3).to_string(index=False))
    return 0


# --------------------------------------------------------------------- extract
def extract_cli(subparsers) -> None:
    """``bertdims extract MODEL TASK [SPLIT]``: extract and store representations."""
    p = subparsers.add_parser("extract", help="extract token representations of a task split to the store")
    p.add_argument("model", help="model name or folder ('embedded' for all-MiniLM-L6-v2)")
    p.add_argument("task", help="task name, or 'general' for the general-English corpus")
    p.add_argument("split", nargs="?", default="train")
    p.add_argument("--layers", default="-1", help="comma-separated layers (0 = embeddings, -1 = last)")
    p.add_argument("--token", default="cls")
    p.add_argument("--max-seq-len", type=int, default=128)
    p.add_argument("--max-samples", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--chunk-size", type=int, default=2048)
    p.add_argument("--device", default="auto")
    p.add_argument("--results", default=None, help="results store folder (default $BERTDIMS_RESULTS or ./results)")
    p.set_defaults(func=_extract_main)


def _extract_main(args) -> int:
    try:
        layers = [int(v) for v in str(args.layers).split(",")]
    except ValueError:
        raise bad("layers", args.layers, "expected comma-separated integers such as '-1,0'") from None
    rep = extract(args.model, args.task, args.split, layers=layers, token=args.token,
                  max_seq_len=args.max_seq_len, max_samples=args.max_samples,
                  batch_size=args.batch_size, chunk_size=args.chunk_size, device=args.device,
                  store=ResultStore(args.results))
    print(f"{rep}\n{rep.path}")
    return 0


# ---------------------------------------------------------------------- sparse
def sparse_cli(sub) -> None:
    """``bertdims sparse --task T --sparsity S ...``: one sparse fine-tuning, stored; one flag
    per :class:`SparseConfig` field (:func:`bertdims.config.params.add_flags`)."""
    p = sub.add_parser("sparse", help="fine-tune by learning a binary mask over pretrained weights")
    add_flags(p, SparseConfig, defaults=_SPARSE_DEFAULTS)
    p.add_argument("--results", default=None, help="results store folder (default $BERTDIMS_RESULTS or ./results)")

    def run(args) -> int:
        cfg = SparseConfig(**{name: getattr(args, name) for name in declared(SparseConfig)})
        res = sparse_finetune(cfg, ResultStore(args.results)).json()
        print(json.dumps({"metrics": res["metrics"], "sparsity": res["sparsity"],
                          "sizes": res["sizes"]}, indent=2))
        return 0

    p.set_defaults(func=run)


#: Where the ``sparse`` command's defaults differ from :class:`SparseConfig`'s: a quick run.
_SPARSE_DEFAULTS = {"max_train_samples": 1000, "max_eval_samples": 500, "max_seq_len": 64,
                    "epochs": 1.0}


#: Each family's registration, in the order of ``bertdims --help``.
REGISTER = (finetune_cli, dims_cli, crossft_cli, extract_cli, sparse_cli)
