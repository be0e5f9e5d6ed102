"""Library log noise that is for library authors, not for ragloop's users."""

from __future__ import annotations

import logging

# transformers and peft import torchao whenever it is installed; torchao then logs that a
# CPU-only torch cannot load its CUDA kernels, and torch adds deprecation notes on its enums.
NOISY = ("torchao", "torch.utils._pytree")


def quiet_library_logs(*more: str) -> None:
    """Only errors from the noisy libraries (and from `more` logger names)."""
    for name in (*NOISY, *more):
        logging.getLogger(name).setLevel(logging.ERROR)
