"""The `openvino` generator: the transformers generator's model (default SmolLM2-135M-Instruct,
with its adapter merged in) written once as a GGUF file (gguf_write.py), read by OpenVINO
GenAI and kept as its IR, and run by its ContinuousBatchingPipeline on the CPU: float16
weights by default, with prompt-lookup decoding.

Why this runtime, and why through a GGUF file: measured here on SmolLM2 (docs/generation.md),
OpenVINO with float16 weights and prompt lookup streams one answer 3.0-3.45x as fast as
float32 transformers, with 11 of 12 greedy answers the same. optimum-intel, OpenVINO's usual
exporter, does not import beside transformers 5; OpenVINO GenAI reads GGUF files itself.

Every answer is a request of its own to the one pipeline: `generate_many` hands it all its
requests at once and it runs `batch_size` of them at a time, starting the next as soon as one
ends, so greedy answers are each generated as alone, and sampled candidates of one question
each draw with their own seed. The runtime keeps prompts it has read (its prefix cache), and
a prompt that several requests share is read once before they start. Prompts, identity, the export
cache and fallback are shared with `onnx-genai` (exported.py). Llama, Qwen2 and Qwen3 models
can be written (gguf_write.py).
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Literal

from ragloop.core import RagloopError, hookimpl
from ragloop.plugins.generators.export_cache import (
    ensure_export,
    installed_version,
    merged_model,
)
from ragloop.plugins.generators.exported import ExportedConfig, ExportedGenerator
from ragloop.plugins.generators.gguf_write import (
    Unsupported,
    check_config,
    refusal,
    write_gguf,
)
from ragloop.plugins.generators.transformers import (
    LOOKUP_NGRAM,
    TOP_P,
    answer_record,
    sampling,
)
from ragloop.plugins.hf.gguf import PACKAGED_MODEL

EXTRA = "openvino-genai"
RECIPE = 2           # bumped when the export steps change, so older exports are not reused
GGUF_FILE = "model.gguf"
SCHEDULED_TOKENS = 8192              # prompt and answer tokens the runtime takes in one step
# Tokens a sampled answer proposes per step, at most: few of them survive sampling, and each
# costs a row of work per answer. Measured on SmolLM2 (4 sampled candidates of 12 RAG
# prompts): 3 streams one answer as fast as 5 (80 vs 79 tokens/s) and 4 together faster
# (158 vs 132).
SAMPLED_LOOKUP = 3
MODEL_FILE = "openvino_model.xml"     # the IR the reader saves beside the GGUF file
# OpenVINO CPU properties for -o compute=f32: no bfloat16 arithmetic, no 8-bit KV cache, no
# activations quantized on the fly.
FLOAT32 = {"INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": "f32",
           "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}


def require() -> None:
    try:
        import openvino_genai  # noqa: F401
    except ImportError:
        raise RagloopError(
            f"the openvino generator needs the Python package 'openvino-genai', which is not "
            f"installed; install it with `pip install 'ragloop[{EXTRA}]'`, or use "
            f"--generator transformers") from None


def _cpu_kv_cache() -> dict:
    """For -o compute=auto: the CPU plugin's own KV cache precision (u8 on this machine), which
    the IR saved from a GGUF file overrides with f16. Measured on SmolLM2 (12 RAG prompts,
    greedy): u8 gives float32's answer on 11 of 12, f16 on 9 of 12, at the same speed."""
    import openvino as ov
    return {"KV_CACHE_PRECISION": ov.Core().get_property("CPU", "KV_CACHE_PRECISION")}


@dataclass
class OpenvinoConfig(ExportedConfig):
    model: str = field(default=PACKAGED_MODEL, metadata={
        "help": f"{PACKAGED_MODEL} (packaged GGUF, converted once into the workspace) or a "
                f"local transformers folder of a llama, qwen2 or qwen3 model; written once per "
                f"adapter and precision."})
    precision: Literal["fp16", "int8", "int4"] = field(default="fp16", metadata={
        "help": "Weights of the export: fp16 (default: nearly float32's answers), int8 "
                "(Q8_0: a little faster, answers drift more), int4 (Q4_0: drift most)."})
    compute: Literal["auto", "f32"] = field(default="auto", metadata={
        "help": "auto: the runtime's choice for the CPU (bfloat16 arithmetic and an 8-bit KV "
                "cache where the CPU has bfloat16 units); f32: float32 throughout, the "
                "answers of float32 transformers, ~1.4x slower."})
    lookup: int = field(default=5, metadata={
        "help": "Propose up to N next tokens copied from the prompt and check them in one "
                "step (OpenVINO GenAI's prompt lookup; a sampled answer at most 3); 0 turns "
                "it off."})

    def __post_init__(self):
        super().__post_init__()
        if self.lookup < 0:
            raise ValueError(f"lookup must be 0 (off) or positive, got {self.lookup}")


class OpenvinoGenerator(ExportedGenerator):
    name = "openvino"
    description = (f"OpenVINO GenAI on the CPU (fp16/int8/int4 weights, prompt lookup), the "
                   f"model written once into the workspace as GGUF; default {PACKAGED_MODEL}. "
                   f"Needs ragloop[{EXTRA}].")
    Config = OpenvinoConfig
    runtime_label = "OpenVINO GenAI"
    refills_batch = True                # the runtime's scheduler (_many)
    require = staticmethod(require)

    def export_key(self) -> dict:
        versions = {name: installed_version(name) for name in (
            "openvino", "openvino-genai", "gguf", "transformers", "torch", "peft")}
        return {"recipe": RECIPE, "runtime": "openvino", "model": self.model_id,
                "adapter": self.adapter_id, "precision": self.config.precision,
                "versions": versions}

    def _export(self, source, adapter, folder, key, what) -> dict:
        try:
            check_config(json.loads((Path(source) / "config.json").read_text()))
        except Unsupported as exc:
            raise refusal(source, exc) from None
        except (OSError, ValueError) as exc:
            raise RagloopError(f"cannot read {source}/config.json ({exc}); point -o model= "
                               f"at a transformers causal-LM folder") from None

        def build(tmp: Path) -> None:
            model_dir = merged_model(source, adapter, tmp / "merged") if adapter else Path(source)
            try:
                write_gguf(model_dir, tmp / GGUF_FILE, key["precision"])
            except Unsupported as exc:
                raise refusal(source, exc) from None
            self._convert(tmp / GGUF_FILE)
        return ensure_export(folder, key, what=what, runtime="OpenVINO GenAI (GGUF)",
                             build=build, takes="seconds for a small model")

    @staticmethod
    def _convert(path: Path) -> None:
        """The GGUF file read once and saved beside it as OpenVINO's own IR, which loads in
        half the time (1.5 s against 3.4 s for SmolLM2); a token generated from it first,
        so a file the runtime cannot run is not kept. The GGUF file is not needed after."""
        import numpy as np
        import openvino as ov
        import openvino_genai as og
        ids = np.array([[1, 2]], dtype=np.int64)
        config = og.GenerationConfig()
        config.max_new_tokens = 1
        og.LLMPipeline(str(path), "CPU", enable_save_ov_model=True).generate(
            og.TokenizedInputs(ov.Tensor(ids), ov.Tensor(np.ones_like(ids))), config)
        if not (path.parent / MODEL_FILE).is_file():
            raise RuntimeError(f"OpenVINO GenAI wrote no {MODEL_FILE}")
        path.unlink()

    def _open(self, folder: Path) -> None:
        import openvino_genai as og
        options = dict(FLOAT32) if self.config.compute == "f32" else _cpu_kv_cache()
        if self.config.lookup > 0:
            options["prompt_lookup"] = True
        scheduler = og.SchedulerConfig()
        # The default budget (256 tokens a step) reads a RAG prompt in pieces: one answer
        # streamed 48 against 60 tokens/s with a budget that takes the prompt in one step.
        scheduler.max_num_batched_tokens = SCHEDULED_TOKENS
        # Candidates of one question share their whole prompt, and every RAG prompt its
        # system turn: read once and kept, 4 sampled candidates went from 92 to 150 tokens/s
        # (1.5x -> 1.8-2.0x one after another, which the cache speeds up too;
        # docs/generation.md).
        scheduler.enable_prefix_caching = True
        # batch_size answers at a time: generate_many hands the runtime all its requests and
        # it starts the next as soon as one ends, rather than waiting for a batch's longest.
        scheduler.max_num_seqs = self.config.batch_size
        self._runtime = og.ContinuousBatchingPipeline(str(folder), scheduler, "CPU", options)

    # ---- generating ---------------------------------------------------------------------

    def _lookup(self, temperature: float) -> int:
        """Tokens proposed per step for an answer at `temperature` (0: none)."""
        return min(self.config.lookup, SAMPLED_LOOKUP) if temperature > 0 else \
            self.config.lookup

    def _provenance(self) -> dict:
        return {"runtime": f"openvino-genai {installed_version('openvino-genai')}",
                "precision": self.config.precision, "compute": self.config.compute}

    def _made_with(self, temperature: float) -> dict:
        """An answer's record of the runtime and of the lookup it was made with."""
        lookup = self._lookup(temperature)
        return {**self._provenance(), **({"lookup": lookup} if lookup else {})}

    def _settings(self, room: int, temperature: float, seed: int | None):
        import openvino_genai as og
        config = og.GenerationConfig()
        config.max_new_tokens = room
        config.eos_token_id = self._eos[0]
        config.stop_token_ids = set(self._eos)
        if temperature > 0:                 # sampled as the transformers generator samples
            config.do_sample = True
            config.temperature = temperature
            config.top_p = TOP_P
            config.rng_seed = seed
        else:
            config.do_sample = False
        if self.config.lookup > 0:
            config.num_assistant_tokens = self._lookup(temperature)
            config.max_ngram_size = LOOKUP_NGRAM
        return config

    @staticmethod
    def _tensor(ids: list[int]):
        import numpy as np
        import openvino as ov
        return ov.Tensor(np.array([ids], dtype=np.int64))

    def _stream(self, messages, max_new_tokens, temperature, seed) -> Iterator[str]:
        """The runtime generates on a thread of its own and hands each step's tokens to a
        streamer; this side decodes them into pieces as they come."""
        import openvino_genai as og
        ((ids, room),) = self._request([messages], max_new_tokens, temperature)
        _, seed = sampling(temperature, seed)
        settings = self._settings(room, temperature, seed)
        steps: queue.Queue = queue.Queue()
        cancel = threading.Event()

        class Streamer(og.StreamerBase):
            def write(self, tokens):
                steps.put(list(tokens) if isinstance(tokens, list) else [tokens])
                return og.StreamingStatus.CANCEL if cancel.is_set() else \
                    og.StreamingStatus.RUNNING

            def end(self):
                pass

        def run():
            try:
                self._runtime.generate([self._tensor(ids)], [settings], Streamer())
            except BaseException as exc:        # handed to the caller's thread
                steps.put(exc)
            finally:
                steps.put(None)

        started = time.perf_counter()
        first = None
        pieces = self._pieces()
        stop = "cancelled"
        worker = threading.Thread(target=run, name="openvino-generate", daemon=True)
        worker.start()
        try:
            while (step := steps.get()) is not None:
                if isinstance(step, BaseException):
                    raise RagloopError(f"OpenVINO GenAI failed while generating "
                                       f"({step})") from None
                piece = pieces.add(self._until_end(step))
                if piece:
                    first = first if first is not None else time.perf_counter() - started
                    yield piece
            rest = pieces.rest()
            if rest:
                yield rest
            stop = self._stop(pieces.tokens)
        finally:
            cancel.set()
            worker.join()
            seconds = time.perf_counter() - started
            self.last_generation = {"seed": seed, **answer_record(
                temperature, room, len(ids), len(pieces.tokens), stop, seconds,
                first=first or seconds), **self._made_with(temperature)}

    def _until_end(self, tokens) -> list[int]:
        """`tokens` up to and with the first turn-ending one."""
        tokens = [int(t) for t in tokens]
        ended = next((i for i, t in enumerate(tokens) if t in self._eos), None)
        return tokens if ended is None else tokens[:ended + 1]

    def _many(self, conversations, max_new_tokens, temperature, seed) -> list[str]:
        """Every answer its own request (its own length, and for a sampled one its own seed:
        `seed + i` for conversation i), all handed to the runtime in one call: it runs
        `batch_size` of them at a time and starts the next as soon as one ends. Handed over a
        batch at a time instead, each batch waits for its longest answer; candidates' lengths
        add up to 2.8x the longest's (docs/generation.md)."""
        requests = self._request(conversations, max_new_tokens, temperature)
        _, seed = sampling(temperature, seed)
        seeds = [None if seed is None else seed + i for i in range(len(requests))]
        started = time.perf_counter()
        self._read_shared(requests)
        results = self._runtime.generate(
            [self._tensor(ids) for ids, _ in requests],
            [self._settings(room, temperature, s) for (_, room), s in zip(requests, seeds)])
        seconds = time.perf_counter() - started
        answers, self.last_generations = [], []
        together = min(len(requests), self.config.batch_size)
        for (ids, room), s, result in zip(requests, seeds, results):
            tokens = self._until_end(result.m_generation_ids[0])
            answers.append(self._decode(tokens))
            # `seconds`: the whole call's, shared by its answers
            self.last_generations.append({
                **answer_record(temperature, room, len(ids), len(tokens), self._stop(tokens),
                                seconds), **self._made_with(temperature), "seed": s,
                "batch": together})
        return answers

    def _read_shared(self, requests) -> None:
        """A prompt that several requests share (a question's candidates) read once, into
        the runtime's prefix cache, before they start: started together, each would read it
        again. 4 sampled candidates of a new prompt came 108 -> 140 tokens/s this way."""
        asked = Counter(tuple(ids) for ids, _ in requests)
        shared = [list(prompt) for prompt, times in asked.items() if times > 1]
        if shared:
            self._runtime.generate([self._tensor(ids) for ids in shared],
                                   [self._settings(1, 0.0, None) for _ in shared])


@hookimpl
def register_generators(register):
    register(OpenvinoGenerator)
