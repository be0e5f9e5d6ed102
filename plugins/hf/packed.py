"""Linear layers whose weights are reordered once for oneDNN, for generation on CPU.

PyTorch's CPU matmul (MKL sgemm) repacks the weight matrix on every call. For one row at a
time that costs little, but for the few rows of a batch of answers it doubles a decoding
step: measured here on SmolLM2-135M in float32, 2 threads, a step of 2 answers took 126 ms
against 73 ms for one, and 4 answers 150 ms. With the weights packed once, the same steps
take 72 and 100 ms, and one answer 67 ms (docs/generation.md). The packed layout is
oneDNN's own, made by the same operators PyTorch's compiler uses for frozen CPU models.

Only inference: the packed weight has no gradient, and the plain weight is released (tied
weights stay, since the embedding reads them): SmolLM2's process holds 1,086 MB packed
against 963 MB plain, the difference being the output layer's packed copy of the tied
embedding.
"""

from __future__ import annotations

import torch

# Batch size the packed layout is tuned for; every other row count still works.
ROWS_HINT = 4


class PackedLinear(torch.nn.Module):
    """`torch.nn.Linear`'s forward on a oneDNN-packed copy of its weight."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach()
        self.register_buffer("packed", torch.ops.mkldnn._reorder_linear_weight(weight, ROWS_HINT),
                             persistent=False)
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        out = torch.ops.mkldnn._linear_pointwise(rows.contiguous(), self.packed, self.bias,
                                                 "none", [], "")
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, oneDNN-packed"


def can_pack(device: str, dtype) -> bool:
    """Whether this build of PyTorch packs float32 weights on this device."""
    if device != "cpu" or dtype != torch.float32 or not torch.backends.mkldnn.is_available():
        return False
    try:
        probe = torch.nn.Linear(8, 4)
        with torch.inference_mode():
            packed = PackedLinear(probe)
            x = torch.randn(3, 8)
            return torch.allclose(packed(x), probe(x), atol=1e-5)
    except (RuntimeError, AttributeError):          # an op this build lacks
        return False


def pack_linears(model: torch.nn.Module) -> int:
    """Replaces every plain `nn.Linear` of `model` by a `PackedLinear`, except LoRA's own
    small matrices (a PEFT adapter's base layers are packed; its A and B stay as they are).
    Returns how many were packed."""
    tied = {id(p) for name, module in model.named_modules()
            if not isinstance(module, torch.nn.Linear) for p in module.parameters(recurse=False)}
    count = 0
    with torch.inference_mode():
        for name, module in list(model.named_modules()):
            for child_name, child in list(module.named_children()):
                if type(child) is not torch.nn.Linear or "lora_" in f"{name}.{child_name}":
                    continue
                setattr(module, child_name, PackedLinear(child))
                if id(child.weight) not in tied:
                    child.weight = None             # its memory goes once `child` is gone
                count += 1
    give_back_freed_memory()
    return count


def give_back_freed_memory() -> None:
    """glibc keeps the freed plain weights in its heap rather than returning them, which
    left the process ~520 MB larger for SmolLM2; malloc_trim hands them back. Elsewhere
    (another C library, another system) there is nothing to do."""
    import ctypes
    import ctypes.util
    name = ctypes.util.find_library("c")
    try:
        ctypes.CDLL(name).malloc_trim(0)
    except (OSError, AttributeError, TypeError):
        pass
