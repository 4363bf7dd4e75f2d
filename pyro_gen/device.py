"""Device choice: the caller picks; ``"auto"`` means CUDA when present, else CPU.

>>> resolve_device("cpu")
device(type='cpu')
"""

from __future__ import annotations

import torch

from pyro_gen.errors import ConfigError

__all__ = ["resolve_device"]


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"``/None -> ``cuda`` if available else ``cpu``; anything else is checked."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(
            f"unknown device {device!r}: {e}. Use 'auto', 'cpu' or 'cuda[:N]'."
        ) from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device {str(device)!r} was asked for but CUDA is not available here; "
            "use device='auto' or 'cpu'."
        )
    return device
