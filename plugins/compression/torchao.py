"""Quantization with torchao (PyTorch's own quantization library; `torch.ao.quantization` is
deprecated): int8 weight-only, int8 dynamic activations with int8 weights, and int4
weight-only, applied to every Linear layer except the output head (kept by default: it is
tied to the embedding in small models, so quantizing it adds a second copy, and it gave no
consistent speed-up when measured).

torchao's eager CPU paths are written for torch.compile to fuse; run as they are, each
quantized matmul pays more in Python dispatch and conversions than it saves (measured with
SmolLM2-135M, one token per step: int8 dynamic 0.55 ms against 0.21 ms for float32 per
576x1536 layer), and compiling the model did not finish in 10 minutes on two cores. So on
CPU `torchao-int8-dynamic` takes torchao's quantized weights and scales and multiplies them
with `torch._int_mm` directly, and `torchao-int4` feeds its CPU kernel bfloat16 activations,
the only input it is fast with. docs/compression.md has the numbers.

`ragloop compress` stores the int8 methods' quantized weights (int8 data + scales, through
transformers' torchao safetensors format, never a pickle); loading the folder gives torchao's
int8 tensors back and `compress` only does what is left (the CPU kernel swap). torchao cannot
save its CPU int4 layout, so int4 folders hold full-precision weights quantized on load.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from ragloop.core import Compressor, RagloopError, hookimpl


def torchao():
    """`torchao.quantization`, imported quietly, or a one-line error saying how to get it."""
    try:
        import torchao.quantization as quantization
    except ImportError:
        raise RagloopError("the torchao-* compressors need torchao; install it with "
                           "`pip install torchao`") from None
    return quantization


def _device(model) -> str:
    return next(model.parameters()).device.type


def _targets(model, include_head: bool, fits=lambda linear: True, why: str = ""):
    """quantize_'s filter: the Linear layers to quantize (the output head only if asked), and
    how many there are."""
    import torch
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None

    def wanted(module, fqn=""):
        return (isinstance(module, torch.nn.Linear) and fits(module)
                and (include_head or module is not head))
    count = sum(1 for m in model.modules() if wanted(m))
    if not count:
        raise RagloopError(f"this model has no Linear layer to quantize{why}")
    return wanted, count


def _stored(tensor) -> bool:
    """Whether a weight is already a quantized tensor subclass (loaded from a folder that
    `ragloop compress` wrote), so quantizing it again is skipped."""
    import torch
    return type(tensor) not in (torch.Tensor, torch.nn.Parameter)


def _quantize(model, config, wanted) -> None:
    """torchao's quantize_ on the wanted layers that are not quantized already."""
    fresh = lambda m, fqn="": wanted(m) and not _stored(m.weight)  # noqa: E731
    if any(fresh(m) for m in model.modules()):
        torchao().quantize_(model, config, filter_fn=fresh)


def _storage(model, config, wanted):
    """transformers' TorchAoConfig that quantizes exactly the wanted layers of `model` (the
    others are listed as modules not to convert), for saving them quantized."""
    import torch
    from transformers import TorchAoConfig
    keep = [re.escape(name) for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and not wanted(m)]
    return TorchAoConfig(config, modules_to_not_convert=keep)


def _swap(model, make, wanted) -> None:
    """Replace each wanted submodule by make(submodule), in place."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if wanted(child):
                setattr(parent, name, make(child))


_modules: dict = {}


def modules() -> dict:
    """The torch modules below, defined on first use so importing this plugin stays cheap."""
    if _modules:
        return _modules
    import torch

    class Int8DynamicLinear(torch.nn.Module):
        """y = (x quantized per token to int8) @ (int8 weight)^T, rescaled: torchao's
        int8-dynamic scheme (symmetric, per token and per output channel) on torch._int_mm."""

        def __init__(self, qweight, scale, bias):
            super().__init__()
            self.register_buffer("qweight", qweight)          # (out, in) int8
            self.register_buffer("scale", scale)              # (out,) float32
            self.bias = bias
            self.out_features, self.in_features = qweight.shape

        @classmethod
        def from_torchao(cls, linear):
            w = linear.weight
            return cls(w.qdata.contiguous(), w.scale.reshape(-1).float(), linear.bias)

        def forward(self, x):
            flat = x.reshape(-1, x.shape[-1]).float()
            step = flat.abs().amax(-1, keepdim=True).clamp_min(1e-8) / 127
            q = torch.round(flat / step).to(torch.int8)
            y = torch._int_mm(q, self.qweight.t()).float() * (step * self.scale)
            if self.bias is not None:
                y = y + self.bias
            return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

        def extra_repr(self):
            return f"in_features={self.in_features}, out_features={self.out_features}, int8"

    class Bfloat16Input(torch.nn.Module):
        """Runs the wrapped layer on bfloat16 input, returning the caller's dtype."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x.to(torch.bfloat16)).to(x.dtype)

    _modules.update(Int8DynamicLinear=Int8DynamicLinear, Bfloat16Input=Bfloat16Input)
    return _modules


def native_bf16() -> bool:
    import torch
    cpu = torch.cpu
    return any(getattr(cpu, f, lambda: False)()
               for f in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


def _head_note(include_head: bool) -> str:
    return "" if include_head else "; output head kept in full precision"


# ---- configs ------------------------------------------------------------------------------

@dataclass
class Int8Config:
    include_lm_head: bool = field(default=False, metadata={
        "help": "Quantize the output head too (off: small models tie it to the embedding, "
                "and quantizing it gave no consistent speed-up)."})


@dataclass
class Int8DynamicConfig(Int8Config):
    kernel: Literal["auto", "torchao"] = field(default="auto", metadata={
        "help": "auto: on CPU multiply torchao's int8 weights with torch._int_mm directly "
                "(torchao's eager dispatch costs more than the matmul); torchao: keep its "
                "tensor subclass (CUDA, or your own torch.compile)."})


@dataclass
class Int4Config(Int8Config):
    group_size: Literal[32, 64, 128] = field(default=64, metadata={
        "help": "Weights per scale; a layer's input width must be a multiple of it."})
    activation_dtype: Literal["auto", "bfloat16", "float32"] = field(default="auto", metadata={
        "help": "Input dtype for the CPU int4 kernel. auto: bfloat16 where the CPU has it "
                "natively (float32 input runs ~15x slower than plain float32)."})


# ---- compressors --------------------------------------------------------------------------

class _Torchao(Compressor):
    kind = "quantize"

    def check(self, device: str) -> None:
        if not (device == "cpu" or device.startswith("cuda")):
            raise RagloopError(f"{self.name} runs on CPU or CUDA, not {device}; use -o device=cpu")
        torchao()


class TorchaoInt8(_Torchao):
    name = "torchao-int8"
    description = "torchao int8 weight-only: a quarter of the weight memory; slower on CPU."
    Config = Int8Config

    def _ao_config(self):
        return torchao().Int8WeightOnlyConfig()

    def quantization_config(self, model):
        """How `ragloop compress` stores the quantized weights: int8 data and scales."""
        wanted, _ = _targets(model, self.config.include_lm_head)
        return _storage(model, self._ao_config(), wanted)

    def compress(self, model):
        wanted, count = _targets(model, self.config.include_lm_head)
        _quantize(model, self._ao_config(), wanted)
        self.summary = (f"{count} Linear layers to int8 weights (torchao Int8Tensor)"
                        f"{_head_note(self.config.include_lm_head)}")
        return model


class TorchaoInt8Dynamic(TorchaoInt8):
    name = "torchao-int8-dynamic"
    description = "torchao int8 weights + int8 dynamic activations: the fast one on CPU."
    Config = Int8DynamicConfig

    def _ao_config(self):
        return torchao().Int8DynamicActivationInt8WeightConfig()

    def compress(self, model):
        ao = torchao()
        wanted, count = _targets(model, self.config.include_lm_head)
        _quantize(model, self._ao_config(), wanted)
        kernel = "torchao Int8Tensor"
        if self.config.kernel == "auto" and _device(model) == "cpu":
            fast = modules()["Int8DynamicLinear"]
            _swap(model, fast.from_torchao,
                  lambda m: isinstance(getattr(m, "weight", None), ao.Int8Tensor))
            kernel = "torch._int_mm"
        self.summary = (f"{count} Linear layers to int8 weights with int8 dynamic activations "
                        f"({kernel}){_head_note(self.config.include_lm_head)}")
        return model


class TorchaoInt4(_Torchao):
    name = "torchao-int4"
    description = "torchao int4 weight-only (groupwise); CPU needs native bfloat16."
    Config = Int4Config
    # No quantization_config: `ragloop compress` keeps full-precision weights, and says why.
    not_stored = ("torchao cannot save its CPU int4 layout (Int4OpaqueTensor) in safetensors, "
                  "and ragloop loads no pickles")

    def _bf16(self) -> bool:
        choice = self.config.activation_dtype
        return native_bf16() if choice == "auto" else choice == "bfloat16"

    def check(self, device: str) -> None:
        super().check(device)
        if device == "cpu" and self.config.activation_dtype == "auto" and not native_bf16():
            raise RagloopError(
                "torchao-int4 on this CPU would run ~15x slower than float32: its CPU kernel is "
                "fast only with bfloat16, which this CPU lacks (no AVX512-BF16 or AMX); use "
                "torchao-int8-dynamic, or force it with -o activation_dtype=float32")

    def compress(self, model):
        import torch
        ao = torchao()
        group = self.config.group_size
        fits = lambda lin: lin.in_features % group == 0  # noqa: E731
        wanted, count = _targets(model, self.config.include_lm_head, fits,
                                 f" with an input width that is a multiple of group_size={group}; "
                                 f"try -o group_size=32")
        everything, _ = _targets(model, self.config.include_lm_head)
        skipped = sum(1 for m in model.modules() if everything(m) and not fits(m))
        if _device(model) == "cpu":
            from torchao.prototype.quantization.int4 import PrototypeInt4WeightOnlyConfig
            bf16 = self._bf16()
            if bf16:            # the CPU kernel wants weights and input in the same dtype
                for m in model.modules():
                    if wanted(m):
                        m.to(torch.bfloat16)
            marked = {id(m) for m in model.modules() if wanted(m)}
            ao.quantize_(model, PrototypeInt4WeightOnlyConfig(group_size=group),
                         filter_fn=wanted)
            if bf16:
                _swap(model, modules()["Bfloat16Input"], lambda m: id(m) in marked)
            where = f"CPU kernel, {'bfloat16' if bf16 else 'float32'} input"
        else:
            if next(model.parameters()).dtype != torch.bfloat16:
                raise RagloopError("torchao-int4 on CUDA needs a bfloat16 model; "
                                   "load it with -o dtype=bfloat16")
            ao.quantize_(model, ao.Int4WeightOnlyConfig(
                group_size=group, int4_packing_format="tile_packed_to_4d"), filter_fn=wanted)
            where = "CUDA tinygemm kernel"
        note = f"; {skipped} layers kept (width not a multiple of {group})" if skipped else ""
        self.summary = (f"{count} Linear layers to int4 weights, groups of {group} ({where})"
                        f"{_head_note(self.config.include_lm_head)}{note}")
        return model


@hookimpl
def register_compressors(register):
    register(TorchaoInt8)
    register(TorchaoInt8Dynamic)
    register(TorchaoInt4)
