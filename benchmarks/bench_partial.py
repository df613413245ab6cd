"""Partial training against the full encoder: three kinds of run the book makes many of.

Each pair trains the same configuration twice, once the way the engine does it now and once
the straightforward way, and prints the wall-clock time of each and their ratio:

1. **layer head**: a head on layer ``--layer`` (chapter 3's layer curve) with the encoder cut
   after that layer (:func:`bertdims.train.heads.truncated`), against the whole encoder run every
   step (the blocks above the head computed and thrown away).
2. **top-n layers**: only the top ``--top`` blocks train (chapters 5 and 9); the frozen bottom
   is computed once per training example and the top trains from its cached output, against
   running the frozen bottom at every step (``SHORTCUTS["bottom_cache"] = False``).
3. **frozen probe**: nothing in the encoder trains (chapter 5's frozen heads); the head trains
   on features computed once, against the full loop through the encoder for every batch
   (``SHORTCUTS["frozen_features"] = False``), with the same ``--frozen-epochs`` passes on both sides.

Each run is in its own fresh Python process (model loading excluded: the time is the training
call's ``train_seconds_this_call`` plus evaluation, read around ``finetune``). Both sides of a
pair give the same predictions up to float rounding (``tests/test_partial.py`` checks it).

    HF_HUB_OFFLINE=1 python benchmarks/bench_partial.py --n 256 --max-seq-len 64
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time

PAIRS = ("layer head", "top-n layers", "frozen probe")


def worker(args) -> dict:
    import torch
    torch.set_num_threads(args.threads)
    from bertdims.train import heads
    from bertdims.train.finetuning import FinetuneConfig, finetune
    from bertdims.train import finetuning as ft

    common = dict(model=args.model, task=args.task, max_train_samples=args.n, max_eval_samples=args.n_eval,
                  max_seq_len=args.max_seq_len, epochs=args.epochs, device="cpu", seed=0)
    if args.pair == "layer head":
        config = FinetuneConfig(layer=args.layer, **common)
        if args.side == "straightforward":
            @contextlib.contextmanager
            def whole(encoder, layer):      # never cut: every block runs
                yield False
            heads.truncated = whole
    elif args.pair == "top-n layers":
        config = FinetuneConfig(train_layers=list(range(args.num_layers - args.top + 1, args.num_layers + 1)),
                                **common)
        ft.SHORTCUTS["bottom_cache"] = args.side == "engine"
    else:
        config = FinetuneConfig(freeze=args.num_layers, frozen_epochs=args.frozen_epochs, **common)
        ft.SHORTCUTS["frozen_features"] = args.side == "engine"
    t0 = time.perf_counter()
    run = finetune(config, progress=False)
    seconds = time.perf_counter() - t0
    return {"pair": args.pair, "side": args.side, "seconds": seconds,
            "train_seconds": run.info["train_seconds_this_call"], "steps": run.info["steps"],
            "test_score": run.score("test"), "bottom_cached": run.info.get("bottom_cached"),
            "fast_frozen": run.info.get("fast_frozen")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="embedded")
    p.add_argument("--task", default="rotten_tomatoes")
    p.add_argument("--n", type=int, default=256, help="training examples")
    p.add_argument("--n-eval", type=int, default=200, help="examples per evaluation split")
    p.add_argument("--max-seq-len", type=int, default=64)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--frozen-epochs", type=float, default=5.0)
    p.add_argument("--layer", type=int, default=2, help="the layer head's layer")
    p.add_argument("--top", type=int, default=2, help="how many top blocks train")
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    p.add_argument("--pairs", default=",".join(PAIRS))
    p.add_argument("--pair", help=argparse.SUPPRESS)
    p.add_argument("--side", help=argparse.SUPPRESS)
    p.add_argument("--num-layers", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.side:
        print(json.dumps(worker(args)))
        return
    from bertdims.analysis.dims import model_size
    num_layers = model_size(args.model)[0]
    rows = []
    for pair in [x.strip() for x in args.pairs.split(",")]:
        if pair not in PAIRS:
            p.error(f"--pairs: {pair!r} is not one of {', '.join(PAIRS)}")
        for side in ("engine", "straightforward"):
            cmd = [sys.executable, __file__, "--pair", pair, "--side", side, "--num-layers", str(num_layers)]
            for name in ("model", "task", "n", "n_eval", "max_seq_len", "epochs", "frozen_epochs",
                         "layer", "top", "threads"):
                cmd += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            print(f"  {pair:13s} {side:15s} {rows[-1]['seconds']:7.1f} s "
                  f"(training {rows[-1]['train_seconds']:.1f} s, {rows[-1]['steps']} steps, "
                  f"test score {rows[-1]['test_score']:.3f}), load {os.getloadavg()[0]:.1f}", flush=True)
    print(f"\n{args.model}, {args.task}, {args.n} training examples, length {args.max_seq_len}, "
          f"{args.threads} thread(s); layer head on layer {args.layer}, top {args.top} of "
          f"{num_layers} blocks, frozen probe {args.frozen_epochs} passes")
    print("| run | engine s | straightforward s | time ratio straightforward / engine |")
    print("| --- | --- | --- | --- |")
    for pair in dict.fromkeys(r["pair"] for r in rows):
        e, s = (next(r for r in rows if r["pair"] == pair and r["side"] == side)
                for side in ("engine", "straightforward"))
        print(f"| {pair} | {e['seconds']:.1f} | {s['seconds']:.1f} | {s['seconds'] / e['seconds']:.2f}x |")


if __name__ == "__main__":
    main()
