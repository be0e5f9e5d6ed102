"""Where the built-in backends train: CUDA when there is one, and in which precision."""

from __future__ import annotations


def pick_device() -> tuple[str, str]:
    """(device, precision): bf16 mixed precision only on CUDA that has it natively; fp32
    elsewhere (CPUs without native bf16 emulate it at a large slow-down)."""
    import torch
    if torch.cuda.is_available():
        try:
            native = torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:
            native = torch.cuda.is_bf16_supported()
        return "cuda", "bf16" if native else "fp32"
    return "cpu", "fp32"


def cuda_devices() -> int:
    """CUDA devices this process can see (0 without CUDA)."""
    import torch
    return torch.cuda.device_count() if torch.cuda.is_available() else 0
