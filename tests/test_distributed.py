"""Two CPU processes (gloo, the launcher `accelerate launch` uses) give the same fine-tuning as one.

Why not bit-for-bit: each process computes the gradient of its half of every effective batch
and the halves are summed by an all-reduce, so floating-point additions happen in another
order than in one process (differences of about 1e-7 relative in fp32). Dropout is switched
off (in the head and in the tiny BERT's config) because each process draws its own dropout
masks. The training losses must agree to 1e-5 and the evaluation metrics to one example in 40.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).parent
SCRIPT = HERE / "distributed_finetune_script.py"


@pytest.fixture(scope="module")
def tiny_bert_no_dropout(tmp_path_factory):
    from bertdims.modeling.testing import make_tiny_bert
    folder = make_tiny_bert(tmp_path_factory.mktemp("tiny_bert_nodrop"))
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (folder / "config.json").write_text(json.dumps(cfg))
    return str(folder)


def test_two_cpu_processes_match_one(tiny_bert_no_dropout, tmp_path):
    sys.path.insert(0, str(HERE))
    from distributed_finetune_script import main as run_script

    import torch
    one = tmp_path / "one.json"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                             # as each of the two processes below
    try:
        run_script(tiny_bert_no_dropout, str(one))       # this process alone
    finally:
        torch.set_num_threads(threads)
    two = tmp_path / "two.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(SCRIPT), tiny_bert_no_dropout, str(two)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = json.loads(one.read_text()), json.loads(two.read_text())
    assert a["num_processes"] == 1 and b["num_processes"] == 2
    assert a["info"]["steps"] == b["info"]["steps"] and len(a["train_loss"]) >= 2
    assert a["train_loss"][-1] < a["train_loss"][0]      # it learns, so the comparison means something
    np.testing.assert_allclose(b["train_loss"], a["train_loss"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(b["dev"], a["dev"], atol=0.1 + 1e-9)      # 10 dev examples: one may flip
    for split in ("validation", "test"):
        assert abs(a["metrics"][split]["accuracy"] - b["metrics"][split]["accuracy"]) <= 1 / 40 + 1e-9
