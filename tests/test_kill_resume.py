"""Kill and resume, for real (issue 12): ``bertdims finetune`` (store mode and ``--out`` mode) and
``bertdims extract`` run as separate processes, are killed with SIGKILL once a checkpoint (or a
first chunk) is on disk, and run again; the rerun resumes (it does fewer steps, or fewer rows)
and ends with exactly what an uninterrupted run gives: metrics, loss history, weights, arrays."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.slow

FINETUNE = ["--task", "rotten_tomatoes", "--max-train-samples", "320", "--max-eval-samples", "64",
            "--max-seq-len", "32", "--batch-size", "8", "--micro-batch-size", "8", "--epochs", "2",
            "--checkpoint-every", "4", "--eval-every", "12", "--lr", "1e-3", "--device", "cpu",
            "--precision", "fp32", "--quiet"]
TOTAL_STEPS = 80   # 320 examples / batch 8 x 2 epochs


def _env(results: Path) -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false", "BERTDIMS_RESULTS": str(results)}


def _bertdims(args: list[str], results: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "bertdims.cli", *args], capture_output=True,
                          text=True, env=_env(results), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _kill_when(args: list[str], results: Path, ready, what: str) -> None:
    """Start ``bertdims args``; SIGKILL it as soon as ``ready()`` is true (it must still run)."""
    proc = subprocess.Popen([sys.executable, "-m", "bertdims.cli", *args], env=_env(results),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    try:
        while not ready():
            if proc.poll() is not None:
                pytest.fail(f"the run ended before {what} appeared: {proc.stderr.read()[-2000:]}")
            assert time.monotonic() < deadline, f"no {what} after 300 s"
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"


def _weights(model_dir: Path) -> dict:
    import torch
    from safetensors.torch import load_file
    out = {f"enc.{k}": v for k, v in load_file(str(model_dir / "model.safetensors")).items()}
    head = torch.load(model_dir / "head.pt", map_location="cpu", weights_only=False)
    out.update({f"head.{k}": v for k, v in (head.items() if isinstance(head, dict) else [])
                if hasattr(v, "shape")})
    return out


def _same_training(a_dir: Path, b_dir: Path, a_metrics: dict, b_metrics: dict) -> None:
    assert a_metrics == b_metrics
    pd.testing.assert_frame_equal(pd.read_csv(a_dir / "history.csv"), pd.read_csv(b_dir / "history.csv"),
                                  check_exact=False, atol=1e-6, rtol=0)
    wa, wb = _weights(a_dir / "model"), _weights(b_dir / "model")
    assert wa.keys() == wb.keys() and len(wa) > 4
    for k in wa:
        assert np.array_equal(wa[k].numpy(), wb[k].numpy()), k


@pytest.fixture(scope="module")
def reference(tiny_bert, tmp_path_factory):
    """An uninterrupted run (``--out`` mode): its folder and metrics."""
    out = tmp_path_factory.mktemp("ref") / "run"
    _bertdims(["finetune", "--model", tiny_bert, *FINETUNE, "--out", str(out)], out.parent / "r")
    return out, json.loads((out / "metrics.json").read_text())


def test_finetune_killed_in_out_mode_resumes_to_the_same_run(tiny_bert, reference, tmp_path):
    out = tmp_path / "run"
    args = ["finetune", "--model", tiny_bert, *FINETUNE, "--out", str(out)]
    _kill_when(args, tmp_path / "r", lambda: (out / "checkpoint" / "trainer.pt").exists(),
               "checkpoint/trainer.pt")
    assert not (out / "metrics.json").exists()
    _bertdims(args, tmp_path / "r")
    info = json.loads((out / "info.json").read_text()) if (out / "info.json").exists() else None
    if info is not None:
        assert 0 < info["steps_this_call"] < TOTAL_STEPS, info
    _same_training(reference[0], out, reference[1], json.loads((out / "metrics.json").read_text()))
    assert not (out / "checkpoint").exists()


def test_finetune_killed_in_store_mode_resumes_to_the_same_run(tiny_bert, reference, tmp_path):
    results = tmp_path / "results"
    args = ["finetune", "--model", tiny_bert, *FINETUNE, "--results", str(results), "--store"]
    ckpts = results / "finetune" / ".checkpoints"
    _kill_when(args, results, lambda: any(ckpts.glob("*/trainer.pt")), "a store checkpoint")
    assert not [p for p in (results / "finetune").iterdir() if not p.name.startswith(".")]
    _bertdims(args, results)
    [run] = [p for p in (results / "finetune").iterdir() if not p.name.startswith(".")]
    stored = json.loads((run / "result.json").read_text())
    assert 0 < stored["info"]["steps_this_call"] < TOTAL_STEPS, stored["info"]
    _same_training(reference[0], run, reference[1], stored["metrics"])
    assert not any(ckpts.glob("*/trainer.pt"))


EXTRACT = ["rotten_tomatoes", "train", "--layers", "0,-1", "--max-seq-len", "32",
           "--max-samples", "1500", "--chunk-size", "100", "--batch-size", "50", "--device", "cpu"]


def _progress(results: Path) -> int:
    for f in (results / "representations").glob(".*.partial/progress.json"):
        try:
            return int(json.loads(f.read_text()).get("rows_done", 0))
        except (ValueError, OSError):   # being replaced right now
            return 0
    return 0


def test_extract_killed_resumes_to_the_same_arrays(tiny_bert, tmp_path):
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    _bertdims(["extract", tiny_bert, *EXTRACT], ref)
    _kill_when(["extract", tiny_bert, *EXTRACT], cut, lambda: _progress(cut) >= 200,
               "two extracted chunks")
    assert _progress(cut) < 1500 and not [p for p in (cut / "representations").iterdir()
                                          if not p.name.startswith(".")]
    [partial] = (cut / "representations").glob(".*.partial")
    started = (partial / "config.json").stat().st_mtime_ns   # a restart would rewrite it
    _bertdims(["extract", tiny_bert, *EXTRACT], cut)
    [a] = [p for p in (ref / "representations").iterdir() if not p.name.startswith(".")]
    [b] = [p for p in (cut / "representations").iterdir() if not p.name.startswith(".")]
    assert a.name == b.name   # the same key
    assert (b / "config.json").stat().st_mtime_ns == started, "the rerun started afresh"
    arrays = sorted(p.name for p in a.glob("*.npy"))
    assert arrays == sorted(p.name for p in b.glob("*.npy")) and len(arrays) >= 3
    for name in arrays:
        assert np.array_equal(np.load(a / name), np.load(b / name)), name


# ------------------------------------------------------- sparse and joint runs, killed for real
RESUME_RUNS = Path(__file__).with_name("resume_runs.py")


def _run_script(kind: str, model: str, results: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(RESUME_RUNS), kind, model, str(results)],
                            env=_env(results), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)


def _killed_then_finished(kind: str, model: str, results: Path, ckpts: Path) -> int:
    """Run ``kind`` in a process, SIGKILL it once a checkpoint is on disk, run it again to the
    end; the first step the second process took."""
    proc = _run_script(kind, model, results)
    deadline = time.monotonic() + 300
    try:
        while not any(ckpts.glob("*/trainer.pt")):
            if proc.poll() is not None:
                pytest.fail(f"the run ended before a checkpoint appeared: {proc.stderr.read()[-2000:]}")
            assert time.monotonic() < deadline, "no checkpoint after 300 s"
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    [saved] = [torch_load(p)["state"]["step"] for p in ckpts.glob("*/trainer.pt")]
    again = _run_script(kind, model, results)
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-3000:]
    first = int((results / f"first_step-{again.pid}").read_text())
    assert first >= saved + 1, (first, saved)       # it went on from the checkpoint
    assert not any(ckpts.glob("*/trainer.pt"))      # and left none behind
    return first


def torch_load(path: Path) -> dict:
    import torch
    return torch.load(path, map_location="cpu", weights_only=False)


def _uninterrupted(kind: str, model: str, results: Path) -> Path:
    proc = _run_script(kind, model, results)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert int((results / f"first_step-{proc.pid}").read_text()) == 1
    [run] = [p for p in (results / kind.replace("sparse", "sparse_finetune")).iterdir()
             if not p.name.startswith(".")]
    return run


def test_sparse_killed_resumes_to_the_same_masks_and_metrics(tiny_bert, tmp_path):
    from bertdims.train.sparse import load_mask
    whole = _uninterrupted("sparse", tiny_bert, tmp_path / "whole")
    results = tmp_path / "killed"
    first = _killed_then_finished("sparse", tiny_bert, results,
                                  results / "sparse_finetune" / ".checkpoints")
    [run] = [p for p in (results / "sparse_finetune").iterdir() if not p.name.startswith(".")]
    a, b = json.loads((run / "result.json").read_text()), json.loads((whole / "result.json").read_text())
    assert 1 < first <= a["info"]["total_steps"] == 80
    assert a["metrics"] == b["metrics"]
    for table in ("history", "steps"):
        pd.testing.assert_frame_equal(pd.read_csv(run / f"{table}.csv").drop(columns=["seconds"], errors="ignore"),
                                      pd.read_csv(whole / f"{table}.csv").drop(columns=["seconds"], errors="ignore"))
    ma, mb = load_mask(run), load_mask(whole)
    assert ma.masks.keys() == mb.masks.keys() and len(mb.masks) > 4
    for name, m in mb.masks.items():
        assert np.array_equal(ma.masks[name].numpy(), m.numpy()), name
    for name, v in mb.head_state.items():
        assert np.array_equal(ma.head_state[name].numpy(), v.numpy()), name
    for split in ("validation", "test"):
        assert np.array_equal(np.load(run / f"pred_{split}.npy"), np.load(whole / f"pred_{split}.npy"))


def test_multitask_killed_resumes_to_the_same_model_and_metrics(tiny_bert, tmp_path):
    from bertdims.train.multitask import load_multitask
    whole = _uninterrupted("multitask", tiny_bert, tmp_path / "whole")
    results = tmp_path / "killed"
    first = _killed_then_finished("multitask", tiny_bert, results,
                                  results / "multitask" / ".checkpoints")
    [run] = [p for p in (results / "multitask").iterdir() if not p.name.startswith(".")]
    history = pd.read_csv(run / "history.csv")
    assert 1 < first <= len(history) == 80         # 2 tasks x ceil(2 x 160 / 8) = 40 batches each
    pd.testing.assert_frame_equal(history, pd.read_csv(whole / "history.csv"))
    pd.testing.assert_frame_equal(pd.read_csv(run / "metrics.csv"), pd.read_csv(whole / "metrics.csv"))
    a, b = load_multitask(run / "model").state_dict(), load_multitask(whole / "model").state_dict()
    assert a.keys() == b.keys()
    for name, value in b.items():
        assert np.array_equal(a[name].numpy(), value.numpy()), name
