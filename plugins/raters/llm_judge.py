"""The `llm-judge` rater: a language model picks the better of two answers, for users who
have a bigger model than the one being trained. The model is either a generator plugin's
(`-o rater.model=PATH` or a hub id, run locally, greedy) or an OpenAI-compatible endpoint
(`-o rater.url=http://host:port/v1`, `-o rater.key_env=VAR` naming an environment variable
that holds its key; `-o rater.model=NAME` then names the model it serves).

The model sees the question, the passages and both answers, and is asked for one word: A, B,
tie or neither. Each pair is asked in both orders; when the two replies disagree the verdict
is a tie, which cancels the model's preference for a position. A reply that says none of the
four, or an endpoint that fails mid-session, gives a skipped item, counted as skipped, with
a one-line note on stderr: never a guessed verdict. An endpoint that does not answer when the
session starts is a one-line error before anything is generated.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from ragloop.core import Comparison, RagloopError, Rater, Verdict, hookimpl, load_generator

VERSION = "1"
MIRROR = {"a": "b", "b": "a", "tie": "tie", "both-bad": "both-bad"}
WORDS = {"a": "a", "b": "b", "tie": "tie", "equal": "tie", "neither": "both-bad",
         "none": "both-bad", "both-bad": "both-bad"}
INSTRUCTION = (
    "You compare two answers to a question, written from the sources below. The better "
    "answer is correct according to the sources, answers what was asked, and states nothing "
    "the sources do not support. Reply with exactly one word: A if answer A is better, B if "
    "answer B is better, tie if they are equally good, neither if both are wrong or useless.")
FIRST_WORD = re.compile(r"[\s\"'`*_(\[{<]*([A-Za-z-]+)")
LABELLED = re.compile(r"\b(?:verdict|winner|answer|better(?: answer)?)\s*(?:is)?\s*[:=]?\s*"
                      r"[\"'`*_]*(a|b|tie|neither)\b", re.I)


@dataclass
class LlmJudgeOptions:
    model: str = field(default="", metadata={
        "help": "The judging model: a local folder or hub id for the generator plugin; with "
                "url, the model name the endpoint serves."})
    url: str = field(default="", metadata={
        "help": "Base URL of an OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1 "
                "(it is sent POST /chat/completions)."})
    key_env: str = field(default="", metadata={
        "help": "Name of the environment variable that holds the endpoint's API key."})
    generator: str = field(default="transformers", metadata={
        "help": "Generator plugin that runs a local model."})
    max_tokens: int = field(default=8, metadata={"help": "Longest reply, in tokens."})
    timeout: float = field(default=60.0, metadata={
        "help": "Seconds to wait for the endpoint's reply."})

    def __post_init__(self):
        if self.url and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {self.url!r}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}")
        if self.timeout <= 0:
            raise ValueError(f"timeout must be positive, got {self.timeout}")


def parse_verdict(reply: str) -> str | None:
    """'a', 'b', 'tie' or 'both-bad' from a model's reply, or None when it says none of them
    plainly: the first word, else a labelled one ("Verdict: B")."""
    match = FIRST_WORD.match(reply)
    if match and match.group(1).lower() in WORDS:
        word = match.group(1).lower()
        # "A is better" names answer A; "A better answer is B" does not.
        rest = reply[match.end():].lstrip(" \t.:)]*\"'`").lower()
        if word not in ("a", "b") or not rest or not rest[0].isalpha() or \
                rest.startswith(("is", "was", "wins")):
            return WORDS[word]
    labelled = LABELLED.search(reply)
    return WORDS[labelled.group(1).lower()] if labelled else None


def messages(item: Comparison, first: str, second: str) -> list[dict]:
    sources = "\n".join(f"[{i}] {' '.join(p.split())}" for i, p in enumerate(item.passages, 1))
    user = (f"{INSTRUCTION}\n\nSources:\n{sources or '(none)'}\n\nQuestion: "
            f"{item.question.strip()}\n\nAnswer A:\n{first.strip()}\n\nAnswer B:\n"
            f"{second.strip()}\n\nWhich answer is better? Reply A, B, tie or neither.")
    return [{"role": "user", "content": user}]


class Unavailable(Exception):
    """The model could not be asked (the endpoint failed); the message says why."""


class LlmJudgeRater(Rater):
    name = "llm-judge"
    description = ("Automatic: a language model (local, or an OpenAI-compatible endpoint) "
                   "picks the better answer, asked in both orders.")
    version = VERSION
    Config = LlmJudgeOptions

    def __init__(self, config=None, workspace=None):
        super().__init__(config, workspace)
        self._generator = None
        self.skipped = 0
        self.notes: list[str] = []

    def default_rater_id(self) -> str:
        who = self.config.model.rstrip("/").rsplit("/", 1)[-1] or \
            self.config.url.split("//", 1)[-1].split("/", 1)[0]
        return f"{self.name}@{self.version}:{who}" if who else f"{self.name}@{self.version}"

    # ---- reaching the model ------------------------------------------------------------

    def _headers(self) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.config.key_env:
            headers["Authorization"] = f"Bearer {os.environ[self.config.key_env]}"
        return headers

    def check(self) -> None:
        c = self.config
        if not c.url and not c.model:
            raise RagloopError("llm-judge needs a model: -o rater.model=PATH (a local folder or "
                               "hub id) or -o rater.url=http://HOST:PORT/v1 (an endpoint)")
        if c.key_env and not os.environ.get(c.key_env):
            raise RagloopError(f"the environment variable {c.key_env} (-o rater.key_env) is not "
                               f"set; export it with the endpoint's API key")
        if not c.url:
            return
        request = urllib.request.Request(f"{c.url.rstrip('/')}/models", headers=self._headers())
        try:
            with urllib.request.urlopen(request, timeout=min(c.timeout, 10)):
                pass
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                raise RagloopError(f"the llm-judge endpoint {c.url} refused the key (HTTP "
                                   f"{exc.code}); check -o rater.key_env") from None
            # Any other HTTP answer means something is listening; /models is optional.
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RagloopError(f"the llm-judge endpoint {c.url} does not answer ({reason}); "
                               f"start it or fix -o rater.url") from None

    def _ask_endpoint(self, chat: list[dict]) -> str:
        c = self.config
        body = {"messages": chat, "temperature": 0, "max_tokens": c.max_tokens}
        if c.model:
            body["model"] = c.model
        request = urllib.request.Request(f"{c.url.rstrip('/')}/chat/completions",
                                         json.dumps(body).encode(), self._headers())
        try:
            with urllib.request.urlopen(request, timeout=c.timeout) as response:
                data = json.loads(response.read())
            return str(data["choices"][0]["message"]["content"])
        except urllib.error.HTTPError as exc:
            raise Unavailable(f"the endpoint answered HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise Unavailable(f"the endpoint failed ({getattr(exc, 'reason', exc)})") from None
        except (ValueError, KeyError, IndexError, TypeError):
            raise Unavailable("the endpoint's reply is not an OpenAI chat completion") from None

    def _ask_local(self, chat: list[dict]) -> str:
        if self._generator is None:
            self._generator = load_generator(self.workspace, self.config.generator,
                                             (f"model={self.config.model}",))
        return "".join(self._generator.generate(chat, max_new_tokens=self.config.max_tokens,
                                                temperature=0.0))

    def ask(self, chat: list[dict]) -> str:
        return self._ask_endpoint(chat) if self.config.url else self._ask_local(chat)

    # ---- judging -----------------------------------------------------------------------

    def _skip(self, why: str) -> Verdict:
        import click
        self.skipped += 1
        note = f"llm-judge: {why}; item skipped"
        self.notes.append(note)
        click.echo(note, err=True)
        return Verdict(None, comment=note)

    def compare(self, item: Comparison) -> Verdict:
        choices = []
        for first, second, flip in ((item.answer_a, item.answer_b, False),
                                    (item.answer_b, item.answer_a, True)):
            try:
                reply = self.ask(messages(item, first, second))
            except Unavailable as exc:
                return self._skip(str(exc))
            choice = parse_verdict(reply)
            if choice is None:
                shown = " ".join(reply.split())[:60]
                return self._skip(f"the model's reply {shown!r} is not A, B, tie or neither")
            choices.append(MIRROR[choice] if flip else choice)
        # A model that picks the same position both times has no preference between the
        # answers themselves.
        return Verdict(choices[0] if choices[0] == choices[1] else "tie")


@hookimpl
def register_raters(register):
    register(LlmJudgeRater)
