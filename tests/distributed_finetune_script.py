"""Run one small fine-tuning on the test task and write its result as JSON (rank 0 only).

Used by tests/test_distributed.py, started under ``accelerate launch`` (or plain python for
one process): ``script.py MODEL_DIR OUT_JSON``.
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from finetune_tasks import register_test_tasks  # noqa: E402

from bertdims.train.finetuning import FinetuneConfig, finetune  # noqa: E402


def main(model_dir: str, out_json: str) -> None:
    task, _ = register_test_tasks()
    config = FinetuneConfig(model=model_dir, task=task, token="mean", max_seq_len=32, epochs=2.0,
                            batch_size=16, micro_batch_size=4, lr=3e-3, head_lr=1e-2, dropout=0.0,
                            device="cpu", precision="fp32", eval_every=3, seed=0)
    run = finetune(config, progress=False)
    from accelerate import PartialState
    state = PartialState()
    if state.is_main_process:
        Path(out_json).write_text(json.dumps({
            "metrics": run.metrics, "num_processes": state.num_processes,
            "train_loss": run.history["train_loss"].tolist(),
            "dev": run.history["dev_accuracy"].tolist(), "info": run.info}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
