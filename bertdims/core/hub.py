"""Whether the Hugging Face hub can be reached: the one network check, shared by the model
loader (:mod:`bertdims.modeling.models`) and the hub tasks (:mod:`bertdims.data._hub`)."""
from __future__ import annotations

import os
import socket
from urllib.parse import urlparse


def reachable(timeout: float = 3.0) -> bool:
    """True when ``HF_HUB_OFFLINE`` is unset (or false) and the hub's host accepts a TCP
    connection on port 443 within ``timeout`` seconds.

    Parameters
    ----------
    timeout : float
        Seconds to wait for the connection.

    Returns
    -------
    bool
        Whether a download could be tried.
    """
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        from huggingface_hub import constants
        host = urlparse(constants.ENDPOINT).hostname
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False
