"""Resolve the compute device once, in one place, and log it. Steps never call ``.cuda()`` themselves."""

from __future__ import annotations

import logging
import re

from .errors import ConfigError, Errors

logger = logging.getLogger(__name__)

_VALID = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def resolve_device(device: str | None = "auto") -> str:
    """``auto`` -> cuda, then mps, then cpu. Explicit devices are checked, not silently replaced."""
    device = (device or "auto").strip().lower()
    if not _VALID.match(device):
        raise ConfigError(Errors.E005, device=device)
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            resolved = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            resolved = "mps"
        else:
            resolved = "cpu"
    else:
        resolved = device
        if device.startswith("cuda"):
            if not torch.cuda.is_available():
                raise ConfigError(
                    Errors.E006, device=device, problem="CUDA is not available in this torch build or machine"
                )
            index = int(device.split(":")[1]) if ":" in device else 0
            if index >= torch.cuda.device_count():
                raise ConfigError(
                    Errors.E006,
                    device=device,
                    problem=f"only {torch.cuda.device_count()} CUDA device(s) exist",
                )
        elif device == "mps" and not (
            getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
        ):
            raise ConfigError(Errors.E006, device=device, problem="MPS is not available")
    logger.info("device: %s (requested %s)", resolved, device)
    return resolved
