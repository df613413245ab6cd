"""Representation extraction: memory and speed.

Memory: ``bertdims.analysis.extract.extract`` streams a data set larger than its chunk size to disk;
peak resident memory (``ru_maxrss`` of a fresh process per run) should not grow with the size
of the data set, unlike ``bertdims.analysis.extract.encode``, which returns everything in memory. Two data-set
sizes, all 7 hidden states of the embedded model (384 dims), chunks of 512 texts.

Speed: sentences per second on the same model and texts (rotten_tomatoes test, mean pooling of
the last layer, max_seq_len 128, batch 32) for
  * bertdims.analysis.extract.encode: batches of sequences sorted by length, each padded to its longest;
  * padding every batch to max_seq_len, in input order (``pad_to_max=True``);
  * sentence-transformers' ``SentenceTransformer.encode`` (when installed).

    python benchmarks/bench_extract.py [--sizes 2048 8192] [--chunk-size 512] [--skip-memory]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _texts(n: int) -> list[str]:
    import numpy as np
    words = ("the film a story was good bad long short plot acting quite very and but with "
             "director music scene end begins never always funny dull").split()
    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(words, size=int(rng.integers(4, 24)))) for _ in range(n)]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_child(mode: str, n: int, chunk_size: int, root: str) -> None:
    """Run one extraction in this (fresh) process and print JSON with peak memory."""
    import numpy as np
    import torch
    from datasets import Dataset

    import bertdims as bd
    from bertdims.analysis.extract import extract
    torch.set_num_threads(1)
    enc = bd.load_encoder("embedded")
    layers = list(range(enc.num_layers + 1))
    bd.analysis.extract.encode(enc, _texts(64), layers=layers, max_seq_len=64, device="cpu", progress=False)  # warm-up
    enc.fingerprint()  # computed once per model (cached on it): not part of the streaming cost
    base = _rss_mb()
    data = Dataset.from_dict({"text": _texts(n), "label": [0] * n})
    t = time.perf_counter()
    if mode == "extract":
        rep = extract(enc, "synthetic", "train", layers=layers, max_seq_len=64, chunk_size=chunk_size,
                      batch_size=64, device="cpu", store=bd.ResultStore(root), progress=False, data=data)
        out_mb = sum(np.asarray(rep[layer]).nbytes for layer in layers) / 2**20
    else:
        arr = bd.analysis.extract.encode(enc, list(data["text"]), layers=layers, max_seq_len=64, batch_size=64,
                                device="cpu", progress=False)
        out_mb = arr.nbytes / 2**20
    print(json.dumps({"mode": mode, "n": n, "seconds": time.perf_counter() - t, "baseline_mb": base,
                      "peak_mb": _rss_mb(), "output_mb": out_mb}))


def memory_benchmark(sizes: list[int], chunk_size: int) -> None:
    print(f"== memory: all 7 layers x 384 dims, chunk_size={chunk_size} texts, one fresh process per run")
    print(f"{'mode':8s} {'texts':>6s} {'output MB':>10s} {'baseline MB':>12s} {'peak MB':>8s} {'growth MB':>10s} {'s':>6s}")
    for mode in ("extract", "encode"):
        for n in sizes:
            with tempfile.TemporaryDirectory() as root:
                out = subprocess.run([sys.executable, __file__, "--child", mode, str(n), str(chunk_size), root],
                                     capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{mode:8s} {n:6d} {r['output_mb']:10.1f} {r['baseline_mb']:12.1f} {r['peak_mb']:8.1f} "
                  f"{r['peak_mb'] - r['baseline_mb']:10.1f} {r['seconds']:6.1f}")


def speed_benchmark(n: int, max_seq_len: int, batch_size: int) -> None:
    import numpy as np
    import torch

    import bertdims as bd
    data = bd.load_task("rotten_tomatoes")["test"]
    texts = list(data["text"])[:n]
    enc = bd.load_encoder("embedded")
    lengths = [len(ids) for ids in enc.tokenizer(texts, truncation=True, max_length=max_seq_len)["input_ids"]]
    print(f"== speed: {len(texts)} rotten_tomatoes test sentences (tokens: mean {np.mean(lengths):.1f}, "
          f"max {max(lengths)}), max_seq_len={max_seq_len}, batch={batch_size}, "
          f"torch threads={torch.get_num_threads()}, device=cpu")
    kw = dict(layers=[-1], token="mean", max_seq_len=max_seq_len, batch_size=batch_size, device="cpu",
              progress=False)
    bd.analysis.extract.encode(enc, texts[:64], **kw)  # warm-up
    rows = []
    t = time.perf_counter()
    ours = bd.analysis.extract.encode(enc, texts, **kw)[:, 0]
    rows.append(("bertdims.analysis.extract.encode (length-sorted batches)", time.perf_counter() - t))
    t = time.perf_counter()
    padded = bd.analysis.extract.encode(enc, texts, pad_to_max=True, **kw)[:, 0]
    rows.append((f"pad every batch to {max_seq_len}", time.perf_counter() - t))
    assert np.allclose(ours, padded, atol=1e-4), "padding changed the representations"
    try:
        from sentence_transformers import SentenceTransformer
        from bertdims.modeling.models import embedded_model_path
        st = SentenceTransformer(str(embedded_model_path()), device="cpu")
        st.max_seq_length = max_seq_len
        st.encode(texts[:64], batch_size=batch_size)
        t = time.perf_counter()
        st.encode(texts, batch_size=batch_size, show_progress_bar=False)
        rows.append(("sentence-transformers encode", time.perf_counter() - t))
    except ImportError:
        rows.append(("sentence-transformers encode (not installed)", float("nan")))
    base = rows[0][1]
    for name, sec in rows:
        print(f"{name:48s} {len(texts) / sec:8.1f} sentences/s   ({sec:6.2f} s, {sec / base:4.2f}x the time of bertdims)")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        mode, n, chunk, root = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
        return memory_child(mode, n, chunk, root)
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs=2, default=[2048, 8192])
    ap.add_argument("--chunk-size", type=int, default=512)
    ap.add_argument("--speed-n", type=int, default=1000)
    ap.add_argument("--max-seq-len", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    args = ap.parse_args()
    if not args.skip_memory:
        memory_benchmark(args.sizes, args.chunk_size)
    if not args.skip_speed:
        speed_benchmark(args.speed_n, args.max_seq_len, args.batch_size)


if __name__ == "__main__":
    main()
