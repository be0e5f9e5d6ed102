"""The RAG prompt: the one place that says how passages and the question reach the model."""

from __future__ import annotations

from dataclasses import dataclass, field

from ragloop.core.errors import RagloopError

# Measured on SmolLM2-135M-Instruct with examples/questions.jsonl: one user message with the
# instruction first and bare "[n] text" sources answered correctly more often than a system
# prompt plus passages with paths and headings, which the small model copied back verbatim.
INSTRUCTION = ("Answer the question using the sources below. "
               "Cite the source number in brackets, like [1].")


@dataclass
class RagPrompt:
    messages: list[dict]
    passages: list            # the hits actually given to the model, numbered from 1
    text: str                 # the exact prompt text the model sees
    notes: list[str] = field(default_factory=list)


def format_passage(number: int, hit) -> str:
    return f"[{number}] {' '.join(hit.text.split())}"


def make_messages(question: str, hits) -> list[dict]:
    sources = "\n".join(format_passage(i, h) for i, h in enumerate(hits, 1))
    user = f"{INSTRUCTION}\n\nSources:\n{sources}\n\nQuestion: {question.strip()}"
    return [{"role": "user", "content": user}]


def build_prompt(question: str, hits: list, generator, max_new_tokens: int) -> RagPrompt:
    """Fit question + passages into the model's context, dropping the lowest-ranked passages
    first and then shortening the last one; say so in `notes`."""
    budget = generator.context_length - max_new_tokens
    hits = list(hits)

    def size(hs):
        text = generator.render(make_messages(question, hs))
        return generator.count_tokens(text), text

    tokens, text = size(hits)
    notes = []
    dropped = 0
    while tokens > budget and len(hits) > 1:
        hits.pop()
        dropped += 1
        tokens, text = size(hits)
    if dropped:
        notes.append(f"{dropped} passage(s) left out to fit the model's context "
                     f"({generator.context_length} tokens)")
    if tokens > budget and hits:
        last = hits[-1]
        words = last.text.split()
        while tokens > budget and len(words) > 8:
            words = words[: int(len(words) * 0.7)]
            hits[-1] = type(last)(**{**last.__dict__, "text": " ".join(words) + " ..."})
            tokens, text = size(hits)
        notes.append("the last passage was shortened to fit the model's context")
    if tokens > budget:
        question_tokens = generator.count_tokens(question)
        raise RagloopError(
            f"the question is {question_tokens} tokens, too long for the model's context of "
            f"{generator.context_length} tokens with {max_new_tokens} new tokens; "
            f"shorten it or lower --max-new-tokens")
    return RagPrompt(make_messages(question, hits), hits, text, notes)
