"""The experiment families' sub-commands of ``bertdims`` (``finetune``, ``dims``, ``crossft``,
``extract``, ``sparse``): each reads its flags, builds the family's config and calls its library
function. The interface only: the modules that compute hold no argparse code.
"""
from __future__ import annotations

import argparse
import dataclasses
import json

import pandas as pd

from ._validate import bad, check_choice, parse_int_list
from .crossft import (SAMPLERS, SELECTIONS, CrossConfig, multitask_table, multitask_vs_single,
                      sequential, shared_dims, summarize_shared)
from .dims import DEFAULT_KS, METHODS, MODES, run_dims
from .extract import extract
from .finetune import finetune
from .finetune_config import FinetuneConfig, _parse_layers
from .sparse import MATRICES, SparseConfig, sparse_finetune
from .store import ResultStore
from .training import DEFAULT_HEAD_LR

# -------------------------------------------------------------------- finetune
_FLAG_TYPES = {"dims": "intlist", "train_layers": "intlist", "head_lr": "optfloat",
               "max_grad_norm": "optfloat", "max_train_samples": "optint", "max_eval_samples": "optint",
               "eval_every": "optint", "checkpoint_every": "optint", "init_from": "optstr",
               "data_dir": "optstr", "freeze_embeddings": "bool"}


_HELP = {
    "model": "base encoder: 'embedded', a hub name or a local folder",
    "task": "task name (bertdims.task_names())",
    "layer": "layer the head reads: 0 embeddings, 1..L, -1 the last",
    "token": "cls | mean | maxnorm | token:i",
    "dims": "hidden dimensions the head reads: comma-separated, or 'all'",
    "head": "linear | mlp",
    "head_hidden": "hidden units of the mlp head",
    "freeze": "freeze the embeddings and layers 1..n (0: nothing)",
    "freeze_embeddings": "also freeze the embeddings",
    "train_layers": "train only these layers (comma-separated), or 'none' to use --freeze",
    "epochs": "passes over the training set (fractions allowed)",
    "lr": "peak learning rate of the top layer",
    "head_lr": f"peak learning rate of the head ('none': {DEFAULT_HEAD_LR})",
    "layer_lr_decay": "learning-rate factor per layer below the top",
    "warmup": "fraction of steps with rising learning rate",
    "batch_size": "effective batch (examples per update)",
    "micro_batch_size": "examples per forward pass (gradient accumulation)",
    "dropout": "dropout before the head",
    "weight_decay": "AdamW weight decay (not on biases and LayerNorm)",
    "max_grad_norm": "gradient clipping ('none': off)",
    "max_train_samples": "training examples used ('none': all)",
    "max_eval_samples": "examples per evaluation split ('none': all)",
    "max_seq_len": "tokens per input",
    "early_stopping_fraction": "0: keep the final state; >0: hold out max(300, fraction*n) "
                               "training examples and keep the lowest-dev-loss state",
    "patience": "evaluations without a lower dev loss before stopping",
    "frozen_epochs": "passes over the training set when only the head trains",
    "eval_every": "steps between evaluations ('none': each epoch, at least twice)",
    "seed": "random seed",
    "device": "auto | cpu | cuda",
    "precision": "auto | fp32 | bf16",
    "init_from": "start the encoder from this fine-tuned model folder",
    "data_dir": "folder of a hub task saved with save_to_disk",
    "checkpoint_every": "steps between resumable checkpoints ('none': at each evaluation)",
}


def _converter(kind: str):
    def opt(fn):
        return lambda s: None if s.strip().lower() in ("none", "") else fn(s)
    return {"intlist": lambda s: s, "optfloat": opt(float), "optint": opt(int), "optstr": opt(str),
            "int": int, "float": float, "str": str}[kind]


def finetune_cli(subparsers) -> None:
    """``bertdims finetune --task T --layer -1 --token cls --dims 3,17 ... --out DIR``."""
    p = subparsers.add_parser("finetune", help="fine-tune an encoder with a selective head",
                              description=__doc__.splitlines()[0])
    for f in dataclasses.fields(FinetuneConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        kind = _FLAG_TYPES.get(f.name) or {int: "int", float: "float", str: "str"}[type(default)]
        helptext = f"{_HELP.get(f.name, '')} (default {default})"
        if kind == "bool":
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=helptext)
            continue
        p.add_argument(flag, type=_converter(kind), default=default, metavar=f.name.upper(), help=helptext)
    p.add_argument("--out", default=None, help="write config.json, metrics.json, history.csv and model/ here")
    p.add_argument("--results", default=None,
                   help="results store folder (default $BERTDIMS_RESULTS or ./results); used when "
                        "--out is not given, or with --store")
    p.add_argument("--store", action="store_true", help="also keep the run in the results store")
    p.add_argument("--no-resume", dest="resume", action="store_false", help="ignore checkpoints")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_finetune_main)


def _finetune_main(args: argparse.Namespace) -> int:
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(FinetuneConfig)}
    values["dims"] = parse_int_list(values["dims"])
    values["train_layers"] = _parse_layers(values["train_layers"]) if isinstance(
        values["train_layers"], str) else values["train_layers"]
    config = FinetuneConfig(**values)
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


def dims_cli(subparsers) -> None:
    """``bertdims dims --task T --seed 0 --methods single,ablation --ks 1,2,3,all ...``:
    fine-tune (or read back), rank the dimensions and print the share of full performance."""
    text = ("Fine-tune (or read back from the store), rank the dimensions of the fine-tuned "
            "[CLS] vector and print the share of full performance kept by the top k.")
    p = subparsers.add_parser("dims", help="rank the dimensions of a fine-tuned model and score the top k",
                              description=text)
    p.add_argument("--model", default="embedded")
    p.add_argument("--task", default="rotten_tomatoes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-train-samples", type=int, default=1000)
    p.add_argument("--max-eval-samples", type=int, default=500)
    p.add_argument("--max-seq-len", type=int, default=64)
    p.add_argument("--epochs", type=float, default=None, help="default: FinetuneConfig's")
    p.add_argument("--device", default="auto")
    p.add_argument("--methods", type=_csv("str"), default=list(METHODS))
    p.add_argument("--modes", type=_csv("str"), default=list(MODES))
    p.add_argument("--candidates", type=int, default=20)
    p.add_argument("--ks", type=_csv("ks"), default=list(DEFAULT_KS))
    p.add_argument("--retrain-ks", type=_csv("int"), default=[])
    p.add_argument("--results", default=None, help="results store folder (default $BERTDIMS_RESULTS or ./results)")
    p.set_defaults(func=_dims_main)


def _dims_main(args) -> int:
    extra = {} if args.epochs is None else {"epochs": args.epochs}
    config = FinetuneConfig(model=args.model, task=args.task, seed=args.seed,
                               max_train_samples=args.max_train_samples,
                               max_eval_samples=args.max_eval_samples, max_seq_len=args.max_seq_len,
                               device=args.device, **extra)
    res = run_dims(config, store=ResultStore(args.results), methods=args.methods, modes=args.modes,
                   candidates=args.candidates, ks=args.ks, retrain_ks=args.retrain_ks)
    cols = ["method", "mode", "k", "dims", "metric", "value", "share", "share_above_chance"]
    with pd.option_context("display.width", 160, "display.max_colwidth", 40):
        print(res.scores[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


# --------------------------------------------------------------------- crossft
EXPERIMENTS = ("sequential", "shared", "multitask")


def crossft_cli(subparsers) -> None:
    """``bertdims crossft --tasks rotten_tomatoes,bbc_news --experiments sequential,multitask``."""
    p = subparsers.add_parser("crossft", help="cross-fine-tuning (A then B), shared dimensions, "
                              "and one model for several tasks", description=__doc__.splitlines()[0])
    d = CrossConfig()
    p.add_argument("--model", default=d.model)
    p.add_argument("--tasks", default=",".join(d.tasks), help="comma-separated task names")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    p.add_argument("--num-dims", type=int, default=d.num_dims)
    p.add_argument("--selection", default=d.selection, help="ranking method: " + ", ".join(SELECTIONS))
    p.add_argument("--modes", default=",".join(d.modes), help="comma-separated: all, few")
    p.add_argument("--sampler", default="proportional", help="joint training: " + ", ".join(SAMPLERS))
    p.add_argument("--experiments", default=",".join(EXPERIMENTS),
                   help="comma-separated: " + ", ".join(EXPERIMENTS))
    p.add_argument("--epochs", type=float, default=d.epochs)
    p.add_argument("--lr", type=float, default=None, help="default: the engine's")
    p.add_argument("--batch-size", type=int, default=None, help="default: the engine's")
    p.add_argument("--max-seq-len", type=int, default=d.max_seq_len)
    for name in ("max_train_samples", "max_eval_samples"):
        p.add_argument("--" + name.replace("_", "-"), default=getattr(d, name),
                       type=lambda s: None if s.lower() in ("none", "all") else int(s))
    p.add_argument("--device", default=d.device)
    p.add_argument("--results", default=None, help="results store (default $BERTDIMS_RESULTS or ./results)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_crossft_main)


def _crossft_main(args) -> int:
    split = lambda s: [t.strip() for t in s.split(",") if t.strip()]  # noqa: E731
    experiments = split(args.experiments)
    for e in experiments:
        check_choice("experiments", e, EXPERIMENTS)
    check_choice("sampler", args.sampler, SAMPLERS)
    config = CrossConfig(model=args.model, tasks=split(args.tasks), seeds=parse_int_list(args.seeds) or [0],
                         num_dims=args.num_dims, selection=args.selection, modes=split(args.modes),
                         epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                         max_train_samples=args.max_train_samples, max_eval_samples=args.max_eval_samples,
                         max_seq_len=args.max_seq_len, device=args.device)
    store, progress = ResultStore(args.results), not args.quiet
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        if "sequential" in experiments:
            print(sequential(config, store=store, progress=progress).pairs.round(3)
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
    p.set_defaults(func=_extract_main)


def _extract_main(args) -> int:
    try:
        layers = [int(v) for v in str(args.layers).split(",")]
    except ValueError:
        raise bad("layers", args.layers, "expected comma-separated integers such as '-1,0'") from None
    rep = extract(args.model, args.task, args.split, layers=layers, token=args.token,
                  max_seq_len=args.max_seq_len, max_samples=args.max_samples,
                  batch_size=args.batch_size, chunk_size=args.chunk_size, device=args.device)
    print(f"{rep}\n{rep.path}")
    return 0


# ---------------------------------------------------------------------- sparse
def sparse_cli(sub) -> None:
    """``bertdims sparse --task T --sparsity S ...``: one sparse fine-tuning, stored."""
    p = sub.add_parser("sparse", help="fine-tune by learning a binary mask over pretrained weights")
    p.add_argument("--model", default="embedded")
    p.add_argument("--task", default="rotten_tomatoes")
    p.add_argument("--sparsity", type=float, default=0.1)
    p.add_argument("--mask", default="learned", help="learned (default), or a fixed control: "
                   "magnitude, random")
    p.add_argument("--layers", type=lambda s: [int(x) for x in s.split(",")], default=None,
                   help="comma-separated encoder layers 1..L (default: all)")
    p.add_argument("--weights", type=lambda s: s.split(","), default=None,
                   help="comma-separated matrices: " + ",".join(MATRICES))
    p.add_argument("--max-train-samples", type=int, default=1000)
    p.add_argument("--max-eval-samples", type=int, default=500)
    p.add_argument("--max-seq-len", type=int, default=64)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)

    def run(args) -> int:
        cfg = SparseConfig(model=args.model, task=args.task, sparsity=args.sparsity, mask=args.mask,
                           layers=args.layers, weights=args.weights,
                           max_train_samples=args.max_train_samples,
                           max_eval_samples=args.max_eval_samples, max_seq_len=args.max_seq_len,
                           epochs=args.epochs, seed=args.seed)
        res = sparse_finetune(cfg).json()
        print(json.dumps({"metrics": res["metrics"], "sparsity": res["sparsity"],
                          "sizes": res["sizes"]}, indent=2))
        return 0

    p.set_defaults(func=run)


#: Each family's registration, in the order of ``bertdims --help``.
REGISTER = (finetune_cli, dims_cli, crossft_cli, extract_cli, sparse_cli)
