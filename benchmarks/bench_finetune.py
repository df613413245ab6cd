"""Fine-tuning throughput and peak memory: bertdims.finetune against Hugging Face Trainer.

Both train the same encoder on the same examples (a fixed subset of rotten_tomatoes), with the
same maximum sequence length, effective and micro batch, learning rate, warm-up, weight decay,
gradient clipping and precision (bf16 autocast on a GPU, fp32 on a CPU), for one epoch,
without evaluation or checkpoints. Trainer gets ``AutoModelForSequenceClassification`` (a
linear layer on the pooled [CLS] vector) with dynamic padding (``DataCollatorWithPadding``);
both use PyTorch SDPA attention. Each side runs in its own fresh Python process so that peak
memory is its own: peak RSS (``resource.getrusage``) of the whole process on a CPU, and
``torch.cuda.max_memory_allocated`` during training on a GPU, both read when training is over
(ours before the fine-tuned model is written out, which Trainer here does not do; the peak
including that write is printed as well). Throughput counts training
sentences per second of the training call (first step included, model loading excluded).

    python benchmarks/bench_finetune.py --n 256 --max-seq-len 64 --repeats 2

prints one table and the ratios ours / Trainer (throughput > 1 and memory < 1 favour ours).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


COMMON = dict(lr=2e-5, warmup=0.1, weight_decay=0.01, max_grad_norm=1.0)   # the same on both sides


def _peak_memory_mb(device) -> float:
    import torch
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # KiB on Linux


def worker_ours(args) -> dict:
    import torch
    from bertdims.train.finetuning import FinetuneConfig, finetune
    config = FinetuneConfig(model=args.model, task=args.task, max_train_samples=args.n,
                            max_eval_samples=8, max_seq_len=args.max_seq_len, epochs=1.0,
                            batch_size=args.batch_size, micro_batch_size=args.micro_batch_size,
                            early_stopping_fraction=0.0, device=args.device, precision=args.precision,
                            seed=0, **COMMON)
    import importlib
    from bertdims.core.device import pick_device
    engine = importlib.import_module("bertdims.train.finetuning")
    device = pick_device(args.device)
    seen = {}
    real_save = engine.save_finetuned

    def save_and_note(*a, **k):      # peak memory of training, before the model is written out
        seen.setdefault("peak_before_save", _peak_memory_mb(device))
        return real_save(*a, **k)

    engine.save_finetuned = save_and_note
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    run = finetune(config, progress=False)
    seconds, cpu = run.info["train_seconds_this_call"], run.info["train_cpu_seconds_this_call"]
    return {"side": "bertdims", "sentences_per_s": run.info["n_train"] / seconds, "seconds": seconds,
            "sentences_per_cpu_s": run.info["n_train"] / cpu, "cpu_seconds": cpu,
            "n": run.info["n_train"], "peak_mb": seen["peak_before_save"],
            "peak_mb_with_save": _peak_memory_mb(device), "precision": run.info["precision"]}


def worker_trainer(args) -> dict:
    import numpy as np
    import torch
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer,
                              DataCollatorWithPadding, Trainer, TrainingArguments)
    from transformers.utils import logging as hf_logging

    import bertdims as bd
    from bertdims.core.device import pick_device, pick_precision
    from bertdims.train.finetuning import prepare_splits

    hf_logging.set_verbosity_error()
    device = pick_device(args.device)
    precision = pick_precision(args.precision, device)
    path = bd.modeling.models.resolve_model(args.model)
    task = bd.get_task(args.task)
    train = prepare_splits(task, max_train_samples=args.n, early_stopping_fraction=0.0)["train"]
    tokenizer = AutoTokenizer.from_pretrained(path)
    field = task.text_fields[0]
    train = train.map(lambda b: tokenizer(b[field], truncation=True, max_length=args.max_seq_len),
                      batched=True, remove_columns=[c for c in train.column_names if c != "label"])
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=task.num_labels, attn_implementation="sdpa")
    steps = int(np.ceil(len(train) / args.batch_size))
    targs = TrainingArguments(
        output_dir=os.path.join(args.tmp, "trainer"), per_device_train_batch_size=args.micro_batch_size,
        gradient_accumulation_steps=max(1, args.batch_size // args.micro_batch_size),
        num_train_epochs=1, learning_rate=2e-5, warmup_steps=max(1, int(np.ceil(0.1 * steps))),
        weight_decay=0.01, max_grad_norm=1.0, lr_scheduler_type="linear", bf16=precision == "bf16",
        use_cpu=device.type == "cpu", eval_strategy="no", save_strategy="no", report_to="none",
        logging_strategy="no", disable_tqdm=True, dataloader_num_workers=0, seed=0)
    trainer = Trainer(model=model, args=targs, train_dataset=train,
                      data_collator=DataCollatorWithPadding(tokenizer))
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0, cpu0 = time.perf_counter(), time.process_time()
    trainer.train()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {"side": "Trainer", "sentences_per_s": len(train) / seconds, "seconds": seconds,
            "sentences_per_cpu_s": len(train) / cpu, "cpu_seconds": cpu,
            "n": len(train), "peak_mb": _peak_memory_mb(device), "precision": precision}


def _run_worker(side: str, args) -> dict:
    cmd = [sys.executable, __file__, "--worker", side] + _forward(args)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{side} worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _forward(args) -> list[str]:
    out = []
    for name in ("model", "task", "n", "max_seq_len", "batch_size", "micro_batch_size", "device",
                 "precision", "tmp"):
        out += ["--" + name.replace("_", "-"), str(getattr(args, name))]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="embedded")
    p.add_argument("--task", default="rotten_tomatoes")
    p.add_argument("--n", type=int, default=256, help="training sentences")
    p.add_argument("--max-seq-len", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--micro-batch-size", type=int, default=16)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto")
    p.add_argument("--repeats", type=int, default=1, help="alternating runs per side; the best is kept")
    p.add_argument("--timeout", type=int, default=1800)
    p.add_argument("--tmp", default="/tmp/bertdims-bench")
    p.add_argument("--worker", choices=("ours", "trainer"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        fn = worker_ours if args.worker == "ours" else worker_trainer
        print(json.dumps(fn(args)))
        return 0
    results = {"bertdims": [], "Trainer": []}
    for _ in range(args.repeats):
        for side in ("ours", "trainer"):
            r = _run_worker(side, args)
            results[r["side"]].append(r)
    best = {k: max(v, key=lambda r: r["sentences_per_s"]) for k, v in results.items()}
    print(f"load average at the end: {os.getloadavg()[0]:.1f}  ({os.cpu_count()} CPUs)")
    print(f"{'side':10s} {'precision':9s} {'sentences/s':>12s} {'seconds':>8s} "
          f"{'sent/CPU-s':>11s} {'peak MiB':>9s}")
    for side, r in best.items():
        print(f"{side:10s} {r['precision']:9s} {r['sentences_per_s']:12.2f} {r['seconds']:8.1f} "
              f"{r['sentences_per_cpu_s']:11.2f} {r['peak_mb']:9.0f}")
    o, t = best["bertdims"], best["Trainer"]
    print(f"throughput ratio bertdims/Trainer: {o['sentences_per_s'] / t['sentences_per_s']:.2f} "
          f"(wall clock), {o['sentences_per_cpu_s'] / t['sentences_per_cpu_s']:.2f} (per CPU second; "
          "steadier on a shared machine)")
    print(f"peak memory ratio bertdims/Trainer: {o['peak_mb'] / t['peak_mb']:.2f}")
    if "peak_mb_with_save" in o:
        print(f"bertdims peak MiB including writing the model folder: {o['peak_mb_with_save']:.0f}")
    print("all runs:", json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
