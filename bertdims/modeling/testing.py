"""A tiny random BERT for fast tests, built offline and saved like any Hugging Face model."""
from __future__ import annotations

from pathlib import Path

import torch


def make_tiny_bert(folder: str | Path, *, seed: int = 0, num_layers: int = 2, hidden_size: int = 32,
                   num_heads: int = 4) -> Path:
    """Save a randomly initialised ``BertModel`` (uncased WordPiece tokenizer of the
    embedded model) to ``folder`` and return the folder; ``load_encoder(folder)`` loads it."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from .models import embedded_model_path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_path())
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden_size,
                        num_hidden_layers=num_layers, num_attention_heads=num_heads,
                        intermediate_size=2 * hidden_size, max_position_embeddings=128)
    torch.manual_seed(seed)
    BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def predictions_right_on(labels, share: float, seeds: int, rng) -> "np.ndarray":
    """Simulated binary predictions, one row per seed (``(seeds, N)``), each right on exactly
    ``round(share * N)`` of the ``labels`` (0/1), the wrong examples drawn with ``rng``: a known
    truth for tests of the statistics and the verdict functions."""
    import numpy as np
    n = len(labels)
    out = np.stack([np.asarray(labels).copy() for _ in range(seeds)])
    for row in out:
        wrong = rng.choice(n, int(round((1 - share) * n)), replace=False)
        row[wrong] = 1 - row[wrong]
    return out
