"""Which token vector a classifier or an analysis reads from a layer's output.

Modes (Few Dimensions are Enough, section on token vectors):
``"cls"`` the first token; ``"mean"`` the mean over non-special tokens; ``"maxnorm"`` the
non-special token with the largest L2 norm; ``"token:i"`` the i-th token (0 is [CLS]),
clipped to the last non-padding token of shorter sequences.
"""
from __future__ import annotations

import torch

from ..core._validate import bad

TOKEN_MODES = ("cls", "mean", "maxnorm", "token:i")


def check_token(token: str) -> str:
    """Validate a token mode; returns it normalised (an int i becomes ``"token:i"``)."""
    if isinstance(token, int) and not isinstance(token, bool):
        token = f"token:{token}"
    if token in ("cls", "mean", "maxnorm"):
        return token
    if isinstance(token, str) and token.startswith("token:"):
        try:
            if int(token.split(":", 1)[1]) >= 0:
                return token
        except ValueError:
            pass
    raise bad("token", token, "choose one of: cls, mean, maxnorm, token:i (i >= 0, e.g. token:3)")


def select_token(hidden: torch.Tensor, attention_mask: torch.Tensor, token: str,
                 special_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Pick one vector per sequence.

    hidden: (B, T, H) a layer's output; attention_mask: (B, T) 1 for real tokens;
    special_mask: (B, T) 1 for [CLS]/[SEP] (defaults to the first and last real token).
    Returns (B, H).
    """
    token = check_token(token)
    if token == "cls":
        return hidden[:, 0]
    mask = attention_mask.bool()
    if special_mask is None:
        special_mask = torch.zeros_like(mask)
        special_mask[:, 0] = True
        last = mask.long().sum(1) - 1                                  # (B,)
        special_mask[torch.arange(mask.shape[0]), last] = True
    content = mask & ~special_mask.bool()                              # (B, T)
    content = torch.where(content.any(1, keepdim=True), content, mask)  # empty text: use all
    if token == "mean":
        w = content.to(hidden.dtype).unsqueeze(-1)                     # (B, T, 1)
        return (hidden * w).sum(1) / w.sum(1).clamp_min(1.0)
    if token == "maxnorm":
        norms = hidden.float().norm(dim=-1).masked_fill(~content, float("-inf"))  # (B, T)
        return hidden[torch.arange(hidden.shape[0]), norms.argmax(1)]
    i = int(token.split(":", 1)[1])
    last = mask.long().sum(1) - 1
    idx = torch.minimum(torch.full_like(last, i), last)
    return hidden[torch.arange(hidden.shape[0]), idx]
