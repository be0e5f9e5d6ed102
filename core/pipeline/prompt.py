"""The RAG prompt: a prompt plugin (`register_prompts`; `default` unless `--prompt NAME`)
writes the messages, and this module fits them into the model's context the same way for
every prompt: worked examples are left out first (the last, least useful, first), then the
lowest-ranked passages, then the last passage is shortened."""

from __future__ import annotations

from dataclasses import dataclass, field

from ragloop.core import registry
from ragloop.core.config import build_config
from ragloop.core.errors import RagloopError
from ragloop.core.pipeline.search import Searcher

DEFAULT_PROMPT = "default"


@dataclass
class RagPrompt:
    messages: list[dict]
    passages: list            # the hits actually given to the model, numbered from 1
    text: str                 # the exact prompt text the model sees
    notes: list[str] = field(default_factory=list)
    prompt: str = DEFAULT_PROMPT
    examples: list[dict] = field(default_factory=list)   # each shown example's provenance

    @property
    def provenance(self) -> dict:
        """What an ask's or a candidate's params record about the prompt: nothing for the
        default prompt, so its logs read as they always have."""
        if self.prompt == DEFAULT_PROMPT and not self.examples:
            return {}
        return {"prompt": self.prompt, "examples": self.examples}


def load_prompt(ws=None, name: str = DEFAULT_PROMPT, options=()):
    """The prompt plugin `name`, configured and checked; an unknown name lists the others."""
    cls = registry.get_prompt(name)
    prompt = cls(build_config(cls.Config, options, f"prompt {name}"), workspace=ws)
    prompt.check()
    return prompt


def route_options(pairs, prompts) -> tuple[dict[str, list[str]], list[str]]:
    """`-o NAME.key=value` goes to the prompt named NAME when it is one of `prompts`; the
    other pairs come back in order (they are the generator's). An option for another
    installed prompt is refused rather than handed to the generator."""
    routed: dict[str, list[str]] = {name: [] for name in prompts}
    rest = []
    for pair in pairs:
        head, dot, option = pair.partition(".")
        if not (dot and "." in pair.partition("=")[0]):
            rest.append(pair)
        elif head in routed:
            routed[head].append(option)
        elif head in registry.names("prompt"):
            raise RagloopError(f"-o {pair} is for prompt {head!r}, which is not in use; "
                               f"add --prompt {head}")
        else:
            rest.append(pair)
    return routed, rest


def make_messages(question: str, hits) -> list[dict]:
    """The default prompt's messages, unfitted (benchmarks build prompts with it)."""
    return load_prompt().messages(question, hits, [])


def _require_question(prompt, messages: list[dict], question: str) -> None:
    last = messages[-1].get("content", "") if messages else ""
    if question.strip() not in last:
        raise RagloopError(f"prompt {prompt.name!r} leaves the question out of its last "
                           f"message; its template needs {{question}}")


def build_prompt(question: str, hits: list, generator, max_new_tokens: int, prompt=None,
                 searcher=None) -> RagPrompt:
    """Fit the prompt's messages into the model's context, leaving out examples first, then
    the lowest-ranked passages, then shortening the last one; say so in `notes`."""
    prompt = prompt if prompt is not None else load_prompt()
    if searcher is None and prompt.workspace is not None:
        searcher = Searcher(prompt.workspace)
    examples = list(prompt.examples(question, searcher))
    budget = generator.context_length - max_new_tokens
    hits = list(hits)

    def size():
        messages = prompt.messages(question, hits, examples)
        text = generator.render(messages)
        return generator.count_tokens(text), text, messages

    tokens, text, messages = size()
    _require_question(prompt, messages, question)
    notes = []
    for items, noun, keep in ((examples, "example(s)", 0), (hits, "passage(s)", 1)):
        dropped = 0
        while tokens > budget and len(items) > keep:
            items.pop()
            dropped += 1
            tokens, text, messages = size()
        if dropped:
            notes.append(f"{dropped} {noun} left out to fit the model's context "
                         f"({generator.context_length} tokens)")
    if tokens > budget and hits:
        last = hits[-1]
        words = last.text.split()
        while tokens > budget and len(words) > 8:
            words = words[: int(len(words) * 0.7)]
            hits[-1] = type(last)(**{**last.__dict__, "text": " ".join(words) + " ..."})
            tokens, text, messages = size()
        notes.append("the last passage was shortened to fit the model's context")
    if tokens > budget:
        question_tokens = generator.count_tokens(question)
        raise RagloopError(
            f"the question is {question_tokens} tokens, too long for the model's context of "
            f"{generator.context_length} tokens with {max_new_tokens} new tokens; "
            f"shorten it or lower --max-new-tokens")
    told = list(getattr(prompt, "notes", None) or [])
    if told:
        prompt.notes.clear()            # each note is shown once
    return RagPrompt(messages, hits, text, told + notes, prompt.name,
                     [ex.get("provenance", {}) for ex in examples])
