"""Device names checked before anything loads: torch's own errors for a misspelt name or a
missing GPU come from deep inside ``.to()`` and do not say which argument was wrong."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["checked_device"]


def checked_device(device: Any, name: str = "device") -> torch.device:
    """``device`` as a torch.device this machine has, else a ValueError naming it as
    ``name`` (how the caller spells the argument: "device", "--device")."""
    if not isinstance(device, str | torch.device):
        raise ValueError(f"{name} must be a str or torch.device, e.g. 'cpu', got {device!r}")
    try:
        checked = torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"invalid {name} {str(device)!r}: {error}") from None
    if checked.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{name} {str(device)!r} requested but CUDA is not available")
        count = torch.cuda.device_count()
        if checked.index is not None and checked.index >= count:
            raise ValueError(
                f"{name} {str(device)!r} requested but this machine has {count} CUDA "
                f"device(s), cuda:0 to cuda:{count - 1}"
            )
    elif checked.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"{name} {str(device)!r} requested but MPS is not available")
    elif checked.type != "cpu":
        raise ValueError(f"{name} must be cpu, cuda, cuda:N or mps, got {str(device)!r}")
    return checked
