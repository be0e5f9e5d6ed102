"""The `onnx-genai` generator: the transformers generator's model (default SmolLM2-135M-Instruct,
with its adapter merged in) exported once to ONNX Runtime GenAI (plugins/generators/
onnx_export.py) and run by that runtime on the CPU, int8 by default.

Why this runtime: measured here on SmolLM2 (docs/generation.md), its int8 export answers
greedily as float32 does far more often than torchao's int8-dynamic and runs one stream ~1.9x
as fast as float32 transformers (int4: ~2.9x, agreeing less); batches run as one. OpenVINO through
optimum-intel was the other candidate, but no optimum-intel release imports beside
transformers 5 (plugins/embedders/runtimes.py says more).

Prompts are the transformers generator's exactly: the same tokenizer, chat template and
token encoding, from the same model folder. `model_id` is the base model's id too, so
adapters trained on it are accepted and ratings pair with it; each answer's parameters
record the runtime and precision (`runtime`, `precision`), which the logs keep.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Literal

from ragloop.core import Generator, RagloopError, hookimpl
from ragloop.plugins.generators.onnx_export import (
    EXTRA,
    ensure_export,
    export_folder,
    export_key,
    require,
    runtime_version,
    say,
)
from ragloop.plugins.generators.transformers import (
    DEFAULT_CONTEXT_CAP,
    TransformersConfig,
    TransformersGenerator,
    answer_record,
    check_sizes,
    end_ids,
    fit_requests,
    in_batches,
    render_chat,
    sampling,
    sampling_options,
)
from ragloop.plugins.hf.common import (
    library_warnings_hidden,
    quiet_transformers,
    short_error,
    token_encoder,
)
from ragloop.plugins.hf.gguf import PACKAGED_MODEL


@dataclass
class OnnxGenaiConfig:
    model: str = field(default=PACKAGED_MODEL, metadata={
        "help": f"{PACKAGED_MODEL} (packaged GGUF, converted once into the workspace) or a "
                f"local transformers model folder; exported once per adapter and precision."})
    adapter: str | None = field(default=None, metadata={
        "help": "A PEFT (LoRA) adapter, merged in before the export: a folder, or a name in "
                "the workspace's adapters."})
    precision: Literal["int8", "int4", "fp32"] = field(default="int8", metadata={
        "help": "Weights of the export: int8 (default: ~float32's answers, faster), int4 "
                "(fastest, answers drift), fp32 (float32's answers)."})
    context_length: int = field(default=0, metadata={
        "help": f"Tokens of context to use; 0 = the model's own, at most {DEFAULT_CONTEXT_CAP}."})
    batch_size: int = field(default=8, metadata={
        "help": "Conversations generated together by generate_many; 1 = one after another."})
    fallback: bool = field(default=False, metadata={
        "help": "When the runtime is missing or the export fails, answer with the "
                "transformers generator (saying why) instead of stopping."})

    def __post_init__(self):
        if not self.model.strip():
            raise ValueError("model is empty; give a folder")
        check_sizes(self)


class OnnxGenaiGenerator(Generator):
    name = "onnx-genai"
    description = (f"ONNX Runtime GenAI on the CPU (int8/int4/fp32), the model exported once "
                   f"into the workspace; default {PACKAGED_MODEL}. Needs ragloop[{EXTRA}].")
    Config = OnnxGenaiConfig

    def __init__(self, config=None, workspace=None):
        super().__init__(config, workspace)
        # Resolves the model folder, its id and the adapter exactly as `transformers` does,
        # and serves as the fallback; its weights load only if it answers.
        self.hf = TransformersGenerator(TransformersConfig(
            model=self.config.model, adapter=self.config.adapter,
            context_length=self.config.context_length, batch_size=self.config.batch_size),
            workspace=workspace)
        self._runtime = None                # the loaded og.Model
        self._tokenizer = None
        self._encode_tokens = None
        self._eos: list[int] = []
        self._own_context = 0
        self.fallen_back: str | None = None     # why the transformers generator answers
        self.export: Path | None = None
        self.load_seconds: float | None = None
        self.last_generation: dict = {}
        self.last_generations: list[dict] = []

    # ---- loading ------------------------------------------------------------------------

    def check(self) -> None:
        """Refuses, before anything loads, a runtime that is not installed (unless
        fallback is on)."""
        if not self.config.fallback:
            require()

    def _load(self) -> None:
        if self._runtime is not None or self.fallen_back:
            return
        started = time.perf_counter()
        try:
            require()
        except RagloopError as exc:
            return self._fall_back(str(exc))
        adapter = self.hf._adapter_folder()          # cheap checks before slow ones
        source, local = self.hf._source()
        if not local:
            raise RagloopError(f"the onnx-genai generator exports a local model folder, and "
                               f"{source!r} is none; pass one with -o model=PATH")
        self._load_tokenizer(source)
        pad = self._pad_id()
        key = export_key(self.model_id, self.adapter_id, self.config.precision)
        folder = export_folder(self.workspace, key)
        what = Path(source).name + (f" with adapter {adapter.name}" if adapter else "")
        record = ensure_export(source, adapter, folder, key, eos=self._eos, pad=pad, what=what)
        if "failed" in record:
            return self._fall_back(
                f"exporting {what} to ONNX Runtime GenAI {self.config.precision} failed "
                f"({record['failed']})", exported=True)
        import onnxruntime_genai as og
        try:
            self._runtime = og.Model(str(folder))
        except Exception as exc:
            return self._fall_back(f"ONNX Runtime GenAI cannot load the export in {folder} "
                                   f"({short_error(exc)})", exported=True)
        self.export = folder
        self.load_seconds = time.perf_counter() - started

    def _fall_back(self, why: str, exported: bool = False) -> None:
        if not self.config.fallback:
            fix = ("; delete that folder to export again, " if exported else "; ") + \
                "or add -o fallback=true to answer with the transformers generator"
            raise RagloopError(why + fix)
        say(f"{why}; answering with the transformers generator (fallback=true)")
        self.fallen_back = why

    def _load_tokenizer(self, source: str) -> None:
        """The transformers generator's tokenizer, template and turn-ending tokens, read from
        the model folder without loading its weights."""
        quiet_transformers()
        from transformers import AutoConfig, AutoTokenizer
        try:
            with library_warnings_hidden():
                tokenizer = AutoTokenizer.from_pretrained(source)
                config = AutoConfig.from_pretrained(source)
        except Exception as exc:
            raise RagloopError(f"cannot read the model in {source} ({short_error(exc)}); point "
                               f"-o model= at a transformers causal-LM folder") from None
        if not tokenizer.chat_template:
            raise RagloopError(f"the model {source} has no chat template; use an "
                               f"instruct/chat model")
        self._tokenizer = tokenizer
        self._encode_tokens = token_encoder(tokenizer)
        self._own_context = getattr(config, "max_position_embeddings", 0) or 2048
        self._eos = self._eos_ids(Path(source), tokenizer)

    @staticmethod
    def _eos_ids(folder: Path, tokenizer) -> list[int]:
        """The ids TransformersGenerator._eos_ids gives, from the files alone."""
        try:
            configured = json.loads((folder / "generation_config.json").read_text())
            configured = configured.get("eos_token_id")
        except (OSError, ValueError):
            configured = None
        return end_ids(configured, tokenizer)

    def _pad_id(self) -> int:
        pad = self._tokenizer.pad_token_id
        return self._eos[0] if pad is None else pad

    # ---- what the transformers generator answers the same -------------------------------

    @property
    def model_id(self) -> str:
        return self.hf.model_id

    @property
    def adapter_id(self) -> str | None:
        return self.hf.adapter_id

    def checkpoint(self) -> str:
        return self.hf.checkpoint()

    def save_merged(self, adapter: dict, folder) -> None:
        self.hf.save_merged(adapter, folder)

    @property
    def context_length(self) -> int:
        self._load()
        if self.fallen_back:
            return self.hf.context_length
        return min(self._own_context, self.config.context_length or DEFAULT_CONTEXT_CAP)

    def count_tokens(self, text: str) -> int:
        self._load()
        if self.fallen_back:
            return self.hf.count_tokens(text)
        return len(self._encode(text))

    def _encode(self, text: str) -> list[int]:
        return self._encode_tokens(text)          # set with the tokenizer, by _load

    def render(self, messages: list[dict]) -> str:
        self._load()
        if self.fallen_back:
            return self.hf.render(messages)
        return render_chat(self._tokenizer, messages, self.model_id)

    # ---- generating ---------------------------------------------------------------------

    def _provenance(self) -> dict:
        return {"runtime": f"onnxruntime-genai {runtime_version()}",
                "precision": self.config.precision}

    def _request(self, conversations, max_new_tokens: int, temperature: float):
        return fit_requests(self, conversations, max_new_tokens, temperature)

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

    def generate(self, messages: list[dict], *, max_new_tokens: int = 256,
                 temperature: float = 0.0, seed: int | None = None) -> Iterator[str]:
        self._load()
        if self.fallen_back:
            yield from self.hf.generate(messages, max_new_tokens=max_new_tokens,
                                        temperature=temperature, seed=seed)
            self.last_generation = {**self.hf.last_generation, "fallback": self.fallen_back}
            return
        ((ids, room),) = self._request([messages], max_new_tokens, temperature)
        _, seed = sampling(temperature, seed)
        started = time.perf_counter()
        first = None
        new: list[int] = []
        shown = ""
        stop = "cancelled"
        try:
            generator = self._generator([ids], len(ids) + room, temperature, seed)
            while len(new) < room and not generator.is_done():
                generator.generate_next_token()
                token = int(generator.get_next_tokens()[0])
                new.append(token)
                if token in self._eos:
                    break
                text = self._tokenizer.decode(new, skip_special_tokens=True)
                # A character split across tokens waits for its last byte.
                if len(text) > len(shown) and not text.endswith("\ufffd"):
                    if first is None:
                        first = time.perf_counter() - started
                    piece, shown = text[len(shown):], text
                    yield piece
            text = self._tokenizer.decode(new, skip_special_tokens=True)
            if len(text) > len(shown):
                yield text[len(shown):]
            stop = "eos" if new and new[-1] in self._eos else "length"
        finally:
            seconds = time.perf_counter() - started
            self.last_generation = {"seed": seed, **answer_record(
                temperature, room, len(ids), len(new), stop, seconds, first=first or seconds),
                **self._provenance()}

    def generate_many(self, conversations: list[list[dict]], *, max_new_tokens: int = 256,
                      temperature: float = 0.0, seed: int | None = None) -> list[str]:
        """Whole answers, `batch_size` conversations per run of the runtime (similar lengths
        together, padded at the end, where the runtime expects its pad token). Greedy answers
        are those `generate` gives one by one; sampled ones draw from one generator seeded
        once per batch. `last_generations` describes each answer."""
        if not conversations:
            return []
        self._load()
        if self.fallen_back:
            answers = self.hf.generate_many(conversations, max_new_tokens=max_new_tokens,
                                            temperature=temperature, seed=seed)
            self.last_generations = [{**r, "fallback": self.fallen_back}
                                     for r in self.hf.last_generations]
            return answers
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
        return [(self._tokenizer.decode(tokens, skip_special_tokens=True), {
            **answer_record(temperature, room, len(ids), len(tokens),
                            "eos" if tokens and tokens[-1] in self._eos else "length", seconds),
            **self._provenance()}) for tokens, (ids, room) in zip(new, requests)]


@hookimpl
def register_generators(register):
    register(OnnxGenaiGenerator)
