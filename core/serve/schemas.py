"""The request bodies of the HTTP API (pydantic models: FastAPI checks them and publishes
them in /openapi.json). Unknown fields are ignored, so clients may send more."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator

Mode = Literal["hybrid", "dense", "bm25"]
MAX_QUESTION_CHARS = 4000
MIN_TEMPERATURE = 0.01     # below it (but above 0) sampling divides by ~0 and overflows


def _temperature(value):
    if value is not None and 0 < value < MIN_TEMPERATURE:
        raise ValueError(f"must be 0 (greedy) or at least {MIN_TEMPERATURE}")
    return value


class AskRequest(BaseModel):
    question: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS)
    k: int = Field(4, ge=1, le=50, description="Passages to retrieve.")
    mode: Mode = "hybrid"
    max_new_tokens: int = Field(256, ge=1, le=4096, description="Longest answer, in tokens.")
    temperature: float = Field(0.0, ge=0, le=2, description="0 = greedy (and cacheable).")
    stream: bool = Field(False, description="Server-sent events: sources, deltas, done.")

    _check_temperature = field_validator("temperature")(_temperature)


class CompareRequest(BaseModel):
    question: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS)
    k: int = Field(4, ge=1, le=50)
    mode: Mode = "hybrid"
    max_new_tokens: int = Field(256, ge=1, le=4096)


class FeedbackRequest(BaseModel):
    trace_id: str | None = Field(None, max_length=64, description="An answer's or search's.")
    compare_id: str | None = Field(None, max_length=64, description="With `verdict`.")
    thumbs: Literal["up", "down"] | None = None
    score: int | None = Field(None, ge=1, le=5)
    correction: str | None = Field(None, max_length=8000,
                                   description="The answer as it should be: a DPO pair.")
    passages: dict[str, bool] | None = Field(None, description='{"<n>": relevant?}')
    comment: str | None = Field(None, max_length=2000)
    verdict: Literal["a", "b", "tie", "both-bad"] | None = None


class ChatMessage(BaseModel):
    role: str = Field(max_length=32)
    content: str | list[dict] | None = None


class ChatRequest(BaseModel):
    """OpenAI's chat completions request; the last user message is the question."""
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1, max_length=200)
    stream: bool = False
    max_tokens: int | None = Field(None, ge=1, le=4096)
    max_completion_tokens: int | None = Field(None, ge=1, le=4096)
    temperature: float | None = Field(None, ge=0, le=2)
    k: int = Field(4, ge=1, le=50, description="ragloop: passages to retrieve.")
    mode: Mode = "hybrid"

    _check_temperature = field_validator("temperature")(_temperature)

    def question(self) -> str | None:
        for message in reversed(self.messages):
            if message.role == "user":
                content = message.content
                if isinstance(content, list):
                    content = "".join(str(p.get("text", "")) for p in content
                                      if p.get("type") == "text")
                return content if content and content.strip() else None
        return None
