"""bitsandbytes 4-bit (NF4) and 8-bit loading, for QLoRA training and for generating on a GPU.

bitsandbytes quantizes while `from_pretrained` loads the weights (`load_kwargs`), and only
on CUDA: on any other machine these stop before importing it, with one line that says so.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Literal

from ragloop.core import Compressor, RagloopError, hookimpl

NO_CUDA = "bitsandbytes 4-bit/8-bit loading needs a CUDA GPU; this machine has none"


@dataclass
class Nf4Config:
    compute_dtype: Literal["bfloat16", "float16", "float32"] = field(default="bfloat16", metadata={
        "help": "dtype the 4-bit weights are expanded to for each matmul."})
    double_quant: bool = field(default=True, metadata={
        "help": "Quantize the quantization constants too (QLoRA's setting; ~0.4 bit/weight less)."})


class _Bnb(Compressor):
    kind = "quantize"
    # `ragloop compress` keeps full-precision weights: bitsandbytes quantizes them as they load.
    not_stored = "bitsandbytes quantizes the weights as they load, on CUDA"

    def check(self, device: str) -> None:
        import torch
        if not torch.cuda.is_available():
            raise RagloopError(NO_CUDA)
        if not device.startswith("cuda"):
            raise RagloopError(f"bitsandbytes loading needs the model on a CUDA device, not "
                               f"{device}; use -o device=cuda")
        if importlib.util.find_spec("bitsandbytes") is None:
            raise RagloopError("bitsandbytes is not installed; install it with "
                               "`pip install bitsandbytes`")

    def compress(self, model):
        return model                      # quantized while loading, by load_kwargs

    def _common(self, device: str) -> dict:
        self.check(device)
        return {"device_map": {"": device}}


class BnbNf4(_Bnb):
    name = "bnb-nf4"
    description = "bitsandbytes 4-bit NF4 loading (QLoRA); CUDA only."
    Config = Nf4Config

    def load_kwargs(self, device: str) -> dict:
        kwargs = self._common(device)
        import torch
        from transformers import BitsAndBytesConfig
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=getattr(torch, self.config.compute_dtype),
            bnb_4bit_use_double_quant=self.config.double_quant)
        self.summary = f"loaded in 4-bit NF4 (compute {self.config.compute_dtype})"
        return kwargs


class BnbInt8(_Bnb):
    name = "bnb-int8"
    description = "bitsandbytes LLM.int8() loading; CUDA only."

    def load_kwargs(self, device: str) -> dict:
        kwargs = self._common(device)
        from transformers import BitsAndBytesConfig
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
        self.summary = "loaded in 8-bit (LLM.int8())"
        return kwargs


@hookimpl
def register_compressors(register):
    register(BnbNf4)
    register(BnbInt8)
