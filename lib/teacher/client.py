"""What every teacher client returns and raises: one normalised `Completion`, or a `TeacherRequestError`.

Usage: ``completion = parse_chat_response(openai_shaped_dict, fallback_model="r1")``;
``raise TeacherRequestError(redact(message, key), retryable=True)``

Both clients (`http_client`, `local_client`) reply in the OpenAI chat-completion shape, so one parser turns
either into a `Completion`; the retry loop and the store only ever see these two types.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

_MIN_SECRET_CHARS = 8  # shorter "keys" ("EMPTY", "ollama") are placeholders; scrubbing them would mangle text
_REDACTED = "[REDACTED]"


@dataclass(frozen=True)
class Completion:
    """One teacher reply, normalised across servers."""

    content: str
    reasoning_content: str | None
    finish_reason: str | None
    usage: dict | None
    model: str


class TeacherRequestError(Exception):
    """A request that failed; `retryable` says whether trying again can help. Messages hold no secret."""

    def __init__(self, message: str, *, retryable: bool, status: int | None = None,
                 retry_after: float | None = None):
        super().__init__(message)
        self.retryable, self.status, self.retry_after = retryable, status, retry_after
        self.attempts = 1


class TeacherClient(Protocol):
    """What `generate_traces` needs: one chat completion, raising `TeacherRequestError` on failure."""

    def complete(self, messages: list[dict]) -> Completion: ...


def parse_chat_response(data, fallback_model: str) -> Completion:
    """An OpenAI-shaped chat completion (HTTP servers and llama-cpp-python alike) -> `Completion`."""
    try:
        choice = data["choices"][0]
        message = choice["message"]
    except (KeyError, IndexError, TypeError):
        raise TeacherRequestError(f"malformed chat completion (no choices[0].message): {str(data)[:200]}",
                                  retryable=False) from None
    content = message.get("content") or ""
    # vLLM and llama.cpp's server name the separate thought `reasoning_content`, Ollama and newer vLLM `reasoning`.
    reasoning = next((message[key] for key in ("reasoning_content", "reasoning")
                      if isinstance(message.get(key), str) and message[key]), None)
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else None
    return Completion(content=content if isinstance(content, str) else str(content), reasoning_content=reasoning,
                      finish_reason=choice.get("finish_reason"), usage=usage,
                      model=data.get("model") or fallback_model)


def redact(text: str, secret: str | None) -> str:
    """`text` with every occurrence of `secret` replaced (secrets shorter than 8 chars are placeholders)."""
    if secret and len(secret) >= _MIN_SECRET_CHARS:
        return text.replace(secret, _REDACTED)
    return text
