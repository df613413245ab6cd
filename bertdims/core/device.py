"""Device and precision choice: CUDA with bf16 autocast when there is a GPU, CPU otherwise."""
from __future__ import annotations

import contextlib

import torch

from ._validate import ConfigError, bad, check_choice

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")


def pick_device(device: str = "auto") -> torch.device:
    """The torch device to run on: ``auto`` means ``cuda`` when available, else ``cpu``.

    Parameters
    ----------
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:<index>"``.

    Returns
    -------
    torch.device
        The device asked for, or the one ``"auto"`` resolves to.

    Raises
    ------
    ConfigError
        An unknown device, or a CUDA device this machine does not have.
    """
    if not isinstance(device, str):
        raise bad("device", device, "choose one of: " + ", ".join(DEVICES))
    check_choice("device", device.split(":")[0], DEVICES)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise bad("device", device, "no CUDA device is available here; use 'cpu' or 'auto'")
    try:
        return torch.device(device)
    except RuntimeError:   # e.g. "cuda:x"
        raise bad("device", device, "expected cpu, cuda, cuda:<index> or auto") from None


def pick_precision(precision: str, device: torch.device) -> str:
    """The compute precision: ``auto`` means ``bf16`` on a GPU that supports it, else ``fp32``.

    Parameters
    ----------
    precision : str
        ``"auto"``, ``"fp32"`` or ``"bf16"``; an explicit choice is returned unchanged.
    device : torch.device
        The device the computation runs on (see :func:`pick_device`).

    Returns
    -------
    str
        ``"bf16"`` (autocast, see :func:`autocast`) or ``"fp32"``.

    Raises
    ------
    ConfigError
        An unknown precision.
    """
    check_choice("precision", precision, PRECISIONS)
    if precision == "auto":
        cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return "bf16" if cuda_bf16 else "fp32"
    return precision


def autocast(device: torch.device, precision: str):
    """Context manager: bf16 autocast when asked for, a no-op otherwise."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
