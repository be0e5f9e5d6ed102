"""The RAG prompt: the one place that says how passages and the question reach the model."""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import RagloopError

SYSTEM_PROMPT = (
    "You answer questions using only the numbered passages you are given. "
    "After each fact, cite the passage it came from as [n]. "
    "If the passages do not contain the answer, say that you do not know."
)


@dataclass
class RagPrompt:
    messages: list[dict]
    passages: list            # the hits actually given to the model, numbered from 1
    text: str                 # the exact prompt text the model sees
    notes: list[str] = field(default_factory=list)


def format_passage(number: int, hit) -> str:
    heading = f" {hit.heading}" if hit.heading else ""
    return f"[{number}] ({hit.source}){heading}\n{hit.text.strip()}"


def make_messages(question: str, hits) -> list[dict]:
    passages = "\n\n".join(format_passage(i, h) for i, h in enumerate(hits, 1))
    user = (f"Passages:\n\n{passages}\n\nQuestion: {question.strip()}\n"
            f"Answer briefly, citing passages as [1], [2], ...")
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


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
