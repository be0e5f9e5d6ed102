"""The `onnx-genai` generator: the transformers generator's model (default SmolLM2-135M-Instruct,
with its adapter merged in) exported once to ONNX Runtime GenAI (plugins/generators/
onnx_export.py) and run by that runtime on the CPU, int8 by default.

Why this runtime: measured here on SmolLM2 (docs/generation.md), its int8 export answers
greedily as float32 does far more often than torchao's int8-dynamic and runs one stream ~1.8x
as fast as float32 transformers (int4: ~2.2x, agreeing less); batches run as one. What it
shares with the `openvino` generator (prompts, identity, the export cache, fallback):
plugins/generators/exported.py.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Literal

from ragloop.core import hookimpl
from ragloop.plugins.generators.exported import ExportedConfig, ExportedGenerator
from ragloop.plugins.generators.onnx_export import (
    EXTRA,
    ensure_export,
    export_key,
    require,
    runtime_version,
)
from ragloop.plugins.generators.transformers import (
    answer_record,
    in_batches,
    sampling,
    sampling_options,
)
from ragloop.plugins.hf.gguf import PACKAGED_MODEL


@dataclass
class OnnxGenaiConfig(ExportedConfig):
    precision: Literal["int8", "int4", "fp32"] = field(default="int8", metadata={
        "help": "Weights of the export: int8 (default: ~float32's answers, faster), int4 "
                "(fastest, answers drift), fp32 (float32's answers)."})


class OnnxGenaiGenerator(ExportedGenerator):
    name = "onnx-genai"
    description = (f"ONNX Runtime GenAI on the CPU (int8/int4/fp32), the model exported once "
                   f"into the workspace; default {PACKAGED_MODEL}. Needs ragloop[{EXTRA}].")
    Config = OnnxGenaiConfig
    runtime_label = "ONNX Runtime GenAI"
    require = staticmethod(require)

    def export_key(self) -> dict:
        return export_key(self.model_id, self.adapter_id, self.config.precision)

    def _export(self, source, adapter, folder, key, what) -> dict:
        return ensure_export(source, adapter, folder, key, eos=self._eos, pad=self._pad_id(),
                             what=what)

    def _open(self, folder: Path) -> None:
        import onnxruntime_genai as og
        self._runtime = og.Model(str(folder))

    # ---- generating ---------------------------------------------------------------------

    def _provenance(self) -> dict:
        return {"runtime": f"onnxruntime-genai {runtime_version()}",
                "precision": self.config.precision}

    def _generator(self, rows: list[list[int]], max_length: int, temperature: float,
                   seed: int | None):
        import numpy as np
        import onnxruntime_genai as og
        params = og.GeneratorParams(self._runtime)
        # Sampled as the transformers generator samples; greedy leaves the rest unnamed.
        options = {k: v for k, v in sampling_options(temperature).items() if v is not None}
        if temperature > 0:
            options["random_seed"] = seed
        params.set_search_options(max_length=max_length, batch_size=len(rows), **options)
        generator = og.Generator(self._runtime, params)
        generator.append_tokens(np.array(rows, dtype=np.int32))
        return generator

    def _stream(self, messages, max_new_tokens, temperature, seed) -> Iterator[str]:
        ((ids, room),) = self._request([messages], max_new_tokens, temperature)
        _, seed = sampling(temperature, seed)
        started = time.perf_counter()
        first = None
        pieces = self._pieces()
        new = pieces.tokens
        stop = "cancelled"
        try:
            generator = self._generator([ids], len(ids) + room, temperature, seed)
            while len(new) < room and not generator.is_done():
                generator.generate_next_token()
                token = int(generator.get_next_tokens()[0])
                if token in self._eos:
                    new.append(token)
                    break
                piece = pieces.add([token])
                if piece:
                    if first is None:
                        first = time.perf_counter() - started
                    yield piece
            rest = pieces.rest()
            if rest:
                yield rest
            stop = self._stop(new)
        finally:
            seconds = time.perf_counter() - started
            self.last_generation = {"seed": seed, **answer_record(
                temperature, room, len(ids), len(new), stop, seconds, first=first or seconds),
                **self._provenance()}

    def _many(self, conversations, max_new_tokens, temperature, seed) -> list[str]:
        """`batch_size` conversations per run of the runtime (similar lengths together,
        padded at the end, where the runtime expects its pad token); sampled answers draw
        from one generator seeded once per batch."""
        requests = self._request(conversations, max_new_tokens, temperature)
        _, seed = sampling(temperature, seed)
        answers, self.last_generations = in_batches(
            requests, self.config.batch_size, seed,
            lambda chunk: self._batch(chunk, temperature, seed))
        return answers

    def _batch(self, requests, temperature: float, seed: int | None):
        pad = self._pad_id()
        if len(requests) > 1 and any(ids[-1] == pad for ids, _ in requests):
            # A prompt ending in the pad token would read as padding: these go one by one.
            return [item for r in requests for item in self._batch([r], temperature, seed)]
        width = max(len(ids) for ids, _ in requests)
        rows = [ids + [pad] * (width - len(ids)) for ids, _ in requests]
        most = max(room for _, room in requests)
        started = time.perf_counter()
        generator = self._generator(rows, width + most, temperature, seed)
        new: list[list[int]] = [[] for _ in requests]
        finished = [False] * len(requests)
        for _ in range(most):
            if all(finished) or generator.is_done():
                break
            generator.generate_next_token()
            for i, token in enumerate(generator.get_next_tokens()):
                if not finished[i]:
                    new[i].append(int(token))
                    finished[i] = int(token) in self._eos or len(new[i]) >= requests[i][1]
        seconds = time.perf_counter() - started
        return [(self._decode(tokens), {
            **answer_record(temperature, room, len(ids), len(tokens),
                            self._stop(tokens), seconds),
            **self._provenance()}) for tokens, (ids, room) in zip(new, requests)]


@hookimpl
def register_generators(register):
    register(OnnxGenaiGenerator)
