"""What the generators on other runtimes (`onnx-genai`, `openvino`) share: the transformers
generator's model, prompts and identity, an export of the model made once into the workspace
(export_cache.py), and a fallback to the transformers generator when the user asks for one.

A subclass names its runtime (`require`, `runtime_label`, a `precision` option and
`export_key`, what its export depends on) and does the rest: `_export(source, adapter,
folder, key, what)` (the export's record), `_open(folder)` (load the runtime on it),
`_provenance()` (what each answer records of it) and the generating (`_stream`, `_many`).

Prompts are the transformers generator's exactly: the same tokenizer, chat template and
token encoding, from the same model folder. `model_id` is the base model's id too, so
adapters trained on it are accepted and ratings pair with it; each answer's parameters
record the runtime and precision, which the logs keep.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from ragloop.core import Generator, RagloopError
from ragloop.plugins.generators.export_cache import export_folder, say
from ragloop.plugins.generators.transformers import (
    DEFAULT_CONTEXT_CAP,
    TransformersConfig,
    TransformersGenerator,
    check_sizes,
    end_ids,
    fit_requests,
    render_chat,
)
from ragloop.plugins.hf.common import (
    library_warnings_hidden,
    quiet_transformers,
    short_error,
    token_encoder,
)
from ragloop.plugins.hf.gguf import PACKAGED_MODEL


@dataclass
class ExportedConfig:
    """The options every exported generator has; a subclass adds its runtime's."""
    model: str = field(default=PACKAGED_MODEL, metadata={
        "help": f"{PACKAGED_MODEL} (packaged GGUF, converted once into the workspace) or a "
                f"local transformers model folder; exported once per adapter and precision."})
    adapter: str | None = field(default=None, metadata={
        "help": "A PEFT (LoRA) adapter, merged in before the export: a folder, or a name in "
                "the workspace's adapters."})
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


class ExportedGenerator(Generator):
    runtime_label = "the runtime"         # as the progress and error lines name it

    def __init__(self, config=None, workspace=None):
        super().__init__(config, workspace)
        # Resolves the model folder, its id and the adapter exactly as `transformers` does,
        # and serves as the fallback; its weights load only if it answers.
        self.hf = TransformersGenerator(TransformersConfig(
            model=self.config.model, adapter=self.config.adapter,
            context_length=self.config.context_length, batch_size=self.config.batch_size),
            workspace=workspace)
        self._opened = False
        self._runtime = None                # what the subclass's _open loaded
        self._tokenizer = None
        self._encode_tokens = None
        self._eos: list[int] = []
        self._own_context = 0
        self.fallen_back: str | None = None     # why the transformers generator answers
        self.export: Path | None = None
        self.load_seconds: float | None = None
        self.last_generation: dict = {}
        self.last_generations: list[dict] = []

    # ---- what a subclass provides -------------------------------------------------------

    @staticmethod
    def require() -> None:
        """A one-line RagloopError naming the extra to install when the runtime is missing."""

    def export_key(self) -> dict:
        raise NotImplementedError

    def _export(self, source: str, adapter: Path | None, folder: Path, key: dict,
                what: str) -> dict:
        raise NotImplementedError

    def _open(self, folder: Path) -> None:
        raise NotImplementedError

    def _provenance(self) -> dict:
        raise NotImplementedError

    # ---- loading ------------------------------------------------------------------------

    def check(self) -> None:
        """Refuses, before anything loads, a runtime that is not installed (unless
        fallback is on)."""
        if not self.config.fallback:
            self.require()

    def _load(self) -> None:
        if self._opened or self.fallen_back:
            return
        started = time.perf_counter()
        try:
            self.require()
        except RagloopError as exc:
            return self._fall_back(str(exc))
        adapter = self.hf._adapter_folder()          # cheap checks before slow ones
        source, local = self.hf._source()
        if not local:
            raise RagloopError(f"the {self.name} generator exports a local model folder, and "
                               f"{source!r} is none; pass one with -o model=PATH")
        self._load_tokenizer(source)
        key = self.export_key()
        folder = export_folder(self.workspace, key)
        what = Path(source).name + (f" with adapter {adapter.name}" if adapter else "")
        record = self._export(source, adapter, folder, key, what)
        if "failed" in record:
            return self._fall_back(
                f"exporting {what} to {self.runtime_label} {self.config.precision} failed "
                f"({record['failed']})", exported=True)
        try:
            self._open(folder)
        except Exception as exc:
            return self._fall_back(f"{self.runtime_label} cannot load the export in {folder} "
                                   f"({short_error(exc)})", exported=True)
        self._opened = True
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

    def _request(self, conversations, max_new_tokens: int, temperature: float):
        return fit_requests(self, conversations, max_new_tokens, temperature)

    def _decode(self, tokens: list[int]) -> str:
        return self._tokenizer.decode(tokens, skip_special_tokens=True)

    def _pieces(self) -> "Pieces":
        return Pieces(self._decode)

    def _stop(self, tokens: list[int]) -> str:
        return "eos" if tokens and tokens[-1] in self._eos else "length"

    def generate(self, messages: list[dict], *, max_new_tokens: int = 256,
                 temperature: float = 0.0, seed: int | None = None) -> Iterator[str]:
        self._load()
        if self.fallen_back:
            yield from self.hf.generate(messages, max_new_tokens=max_new_tokens,
                                        temperature=temperature, seed=seed)
            self.last_generation = {**self.hf.last_generation, "fallback": self.fallen_back}
            return
        yield from self._stream(messages, max_new_tokens, temperature, seed)

    def generate_many(self, conversations: list[list[dict]], *, max_new_tokens: int = 256,
                      temperature: float = 0.0, seed: int | None = None) -> list[str]:
        """Whole answers, `batch_size` conversations per run of the runtime. Greedy answers
        are those `generate` gives one by one; `last_generations` describes each answer."""
        if not conversations:
            return []
        self._load()
        if self.fallen_back:
            answers = self.hf.generate_many(conversations, max_new_tokens=max_new_tokens,
                                            temperature=temperature, seed=seed)
            self.last_generations = [{**r, "fallback": self.fallen_back}
                                     for r in self.hf.last_generations]
            return answers
        return self._many(conversations, max_new_tokens, temperature, seed)

    def _stream(self, messages, max_new_tokens, temperature, seed) -> Iterator[str]:
        raise NotImplementedError

    def _many(self, conversations, max_new_tokens, temperature, seed) -> list[str]:
        raise NotImplementedError


class Pieces:
    """The text of an answer in pieces as its tokens arrive: `add(tokens)` gives what the
    new tokens add to the text, `rest()` what is left once the answer is over."""

    def __init__(self, decode):
        self.decode = decode
        self.tokens: list[int] = []
        self.shown = ""

    def add(self, tokens: list[int]) -> str:
        self.tokens.extend(tokens)
        text = self.decode(self.tokens)
        # A character split across tokens waits for its last byte.
        if len(text) <= len(self.shown) or text.endswith("\ufffd"):
            return ""
        piece, self.shown = text[len(self.shown):], text
        return piece

    def rest(self) -> str:
        text = self.decode(self.tokens)
        return text[len(self.shown):] if len(text) > len(self.shown) else ""
