"""llama.cpp as bench_generate's anchor (issue 16: "the reference a user would reach for"):
the default model's own weights, written as a GGUF file by ragloop's writer
(plugins/generators/gguf_write.py, the file the `openvino` generator starts from), run by
llama-cpp-python on the same prompt tokens. It is no ragloop generator: llama-cpp-python
has no wheel on the package index, and compiling it took 9 minutes on this 2-core machine
(with a C++ toolchain and cmake, which a user may not have), which every fresh `make test`
would pay again. Its high-level API runs one sequence at a time, so its batches and
candidates are answers one after another.

    pip install llama-cpp-python      # compiles llama.cpp: a C++ toolchain and cmake
    python bench/bench_generate.py --variants llama-cpp:fp16 llama-cpp:int8 ...
"""

from __future__ import annotations

import time
from pathlib import Path

from ragloop.core.pipeline.ask import load_generator
from ragloop.plugins.generators.exported import ExportedGenerator
from ragloop.plugins.generators.gguf_write import write_gguf
from ragloop.plugins.generators.transformers import TOP_P, render_chat
from ragloop.plugins.hf.common import token_encoder

CONTEXT = 2048           # tokens: the bench's prompts and answers fit in it


class LlamaCppAnchor:
    def __init__(self, ws, precision: str, threads: int | None = None):
        import os

        from llama_cpp import Llama
        from transformers import AutoTokenizer
        hf = load_generator(ws, "transformers", ["lookup=0"])    # its weights never load
        source, _ = hf._source()
        self.model_id = hf.model_id
        self.tokenizer = AutoTokenizer.from_pretrained(source)
        self.encode = token_encoder(self.tokenizer)
        self.eos = set(ExportedGenerator._eos_ids(Path(source), self.tokenizer))
        path = Path(ws.home) / "bench" / f"llama-cpp-{precision}.gguf"
        started = time.perf_counter()
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".part")
            write_gguf(Path(source), tmp, precision)
            tmp.replace(path)
            self.export_seconds: float | None = time.perf_counter() - started
        else:
            self.export_seconds = None
        self.llm = Llama(model_path=str(path), n_ctx=CONTEXT,
                         n_threads=threads or os.cpu_count(), n_batch=512, verbose=False)
        self.last_generation: dict = {}
        self.last_generations: list[dict] = []

    def generate(self, messages, *, max_new_tokens: int = 256, temperature: float = 0.0,
                 seed: int | None = None):
        ids = self.encode(render_chat(self.tokenizer, messages, self.model_id))
        if temperature > 0:
            self.llm.set_seed(seed if seed is not None else 0)
        started = time.perf_counter()
        first = None
        tokens: list[int] = []
        text = ""
        for token in self.llm.generate(ids, temp=temperature, top_p=TOP_P, top_k=0,
                                       min_p=0.0, repeat_penalty=1.0, reset=True):
            if token in self.eos:
                break
            tokens.append(token)
            now = self.tokenizer.decode(tokens, skip_special_tokens=True)
            if len(now) > len(text):
                first = first if first is not None else time.perf_counter() - started
                yield now[len(text):]
                text = now
            if len(tokens) >= max_new_tokens:
                break
        seconds = time.perf_counter() - started
        self.last_generation = {"new_tokens": len(tokens), "seconds": seconds,
                                "first_piece_seconds": first or seconds}

    def generate_many(self, conversations, *, max_new_tokens: int = 256,
                      temperature: float = 0.0, seed: int | None = None) -> list[str]:
        answers, self.last_generations = [], []
        for i, messages in enumerate(conversations):
            answers.append("".join(self.generate(
                messages, max_new_tokens=max_new_tokens, temperature=temperature,
                seed=None if seed is None else seed + i)))
            self.last_generations.append(self.last_generation)
        return answers
