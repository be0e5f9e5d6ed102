"""The `default` prompt: the instruction, the numbered sources and the question in one user
message, exactly what `ragloop ask` has always sent. Its `template` option rewrites it (the
few-shot prompt shares the template and the way sources are written)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ragloop.core import Prompt, hookimpl

# Measured on SmolLM2-135M-Instruct with examples/questions.jsonl: one user message with the
# instruction first and bare "[n] text" sources answered correctly more often than a system
# prompt plus passages with paths and headings, which the small model copied back verbatim.
INSTRUCTION = ("Answer the question using the sources below. "
               "Cite the source number in brackets, like [1].")
TEMPLATE = INSTRUCTION + "\n\nSources:\n{sources}\n\nQuestion: {question}"
PLACEHOLDER = re.compile(r"\{(sources|question)\}")
TEMPLATE_HELP = ("The user message: {sources} is replaced by the numbered passages, {question} "
                 "by the question (required); \\n is a line break.")


def check_template(template: str) -> str:
    """The template with `\\n` as line breaks; a ValueError when it lacks the question."""
    text = template.replace("\\n", "\n")
    if "{question}" not in text:
        raise ValueError("the template lacks {question}; put {question} where the question "
                         "goes (and {sources} where the passages go)")
    return text


def format_passage(number: int, text: str) -> str:
    return f"[{number}] {' '.join(text.split())}"


def fill(template: str, question: str, sources: str) -> str:
    """One pass, so a passage that itself contains "{question}" is left as it is."""
    values = {"sources": sources, "question": question.strip()}
    return PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def user_message(template: str, question: str, passages) -> str:
    sources = "\n".join(format_passage(i, h.text) for i, h in enumerate(passages, 1))
    return fill(template, question, sources)


@dataclass
class TemplateOptions:
    template: str = field(default=TEMPLATE, metadata={"help": TEMPLATE_HELP})

    def __post_init__(self):
        self.template = check_template(self.template)


class DefaultPrompt(Prompt):
    name = "default"
    description = "The instruction, the numbered sources and the question in one user message."
    Config = TemplateOptions

    def messages(self, question, passages, examples):
        return [{"role": "user", "content": user_message(self.config.template, question,
                                                         passages)}]


@hookimpl
def register_prompts(register):
    register(DefaultPrompt)
