"""Request bodies, validated strictly: a wrong type is a 400 naming the field, never a
silent coercion. OpenAI's requests ignore fields they do not know (as OpenAI does);
TARS's own options (the ``tars`` field, the TARS endpoints) reject unknown ones, so a
typo is reported instead of ignored.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

OPENAI = ConfigDict(extra="ignore", strict=True)
TARS = ConfigDict(extra="forbid", strict=True)


# Every integer a client sends is bounded before it reaches SQLite (64-bit) or the model:
# an unbounded one used to reach SQLite as an OverflowError (500).
SQL_INT_MAX = 2**63 - 1
TOKENS_MAX = 1_000_000


class ContentPart(BaseModel):
    model_config = OPENAI
    type: str
    text: str | None = None


class ChatMessageIn(BaseModel):
    model_config = OPENAI
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        """The message's text; image and audio parts are not understood here."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text or "" for p in self.content if p.type in ("text", "input_text"))


class TarsOptions(BaseModel):
    """TARS's extensions of a chat completion (``"tars": {...}`` in the body)."""

    model_config = TARS
    memory: bool = Field(
        default=True, description="Recall memories before, remember the exchange after."
    )
    store: bool = Field(default=True, description="Keep the exchange in the conversation store.")
    project: str | None = Field(default=None, description="Project name; default: the active one.")
    conversation_id: int | None = Field(
        default=None,
        ge=0,
        le=SQL_INT_MAX,
        description="Continue this stored conversation (its history is the client's).",
    )


class StreamOptions(BaseModel):
    model_config = OPENAI
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = OPENAI
    model: str | None = Field(
        default=None, description="The loaded model (or `tars`); see /v1/models."
    )
    messages: list[ChatMessageIn] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=1, le=TOKENS_MAX)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=TOKENS_MAX)
    stop: str | list[str] | None = None
    n: int | None = Field(default=None, ge=1, le=1, description="Only 1 is supported.")
    logit_bias: dict[str, float] | None = None
    tars: TarsOptions | None = None


class EmbeddingsRequest(BaseModel):
    model_config = OPENAI
    input: str | list[str]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1, le=65536)


class SamplingIn(BaseModel):
    """Sampling overrides for the TARS endpoints (the config's values otherwise)."""

    model_config = TARS
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=1, le=TOKENS_MAX)
    stop: list[str] | None = Field(default=None, max_length=4)


class ChatQuery(SamplingIn):
    message: str = Field(min_length=1, description="The user's message.")
    project: str | None = Field(default=None, description="Project name; default: the active one.")
    conversation_id: int | None = Field(
        default=None,
        ge=0,
        le=SQL_INT_MAX,
        description="Continue this conversation; default: start a new one.",
    )
    memory: bool = Field(default=True, description="Recall before the reply, remember it after.")


class ChatReply(BaseModel):
    reply: str
    cancelled: bool
    finish_reason: str
    project: str
    conversation_id: int | None
    message_id: int | None
    memory_ids: list[str]
    memory_error: str | None
    stages: dict[str, float]
    usage: dict[str, int]


class RememberRequest(BaseModel):
    model_config = TARS
    text: str = Field(min_length=1, max_length=8000)
    project: str | None = Field(default=None, description="Project name; default: the active one.")
    scope: Literal["project", "global"] | None = Field(
        default=None,
        description="global: a fact about you in every project; default: [memory] config.",
    )


class WsMessage(SamplingIn):
    """A WebSocket chat message: ``{"type": "message", "text": ...}``."""

    type: Literal["message"]
    text: str = Field(min_length=1)
    project: str | None = None
    conversation_id: int | None = Field(default=None, ge=0, le=SQL_INT_MAX)
    memory: bool = True


__all__ = [
    "ChatCompletionRequest",
    "ChatMessageIn",
    "ChatQuery",
    "ChatReply",
    "EmbeddingsRequest",
    "RememberRequest",
    "SamplingIn",
    "TarsOptions",
    "WsMessage",
]
