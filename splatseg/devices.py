"""The `--device` rule every command shares: "auto" is CUDA when available, else CPU; asking for
CUDA (`cuda`, `cuda:N`) without a GPU is a one-line error."""

from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name} was asked for but no CUDA GPU is available")
    return torch.device(name)
