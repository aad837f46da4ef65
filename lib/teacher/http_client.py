"""An OpenAI-compatible chat-completions endpoint (vLLM, llama.cpp's server, Ollama, a hosted API) as a teacher.

Usage: ``completion = OpenAIChatClient(TeacherConfig(base_url="http://127.0.0.1:8000/v1", model="r1")).complete(
[{"role": "user", "content": "What is 2 + 2?"}])``

The `openai` package does the HTTP: connection pooling, timeouts, the JSON request (with `extra_body` merged),
and sorting failures into status, connection and timeout errors. This module keeps what the package does not
do the way a resumable, keyed run needs (each point is tested against a scripted server):
- retries: the package's own are off (`max_retries=0`); `lib.teacher.retry` retries instead, with an injectable
  clock and jitter, the configured backoff, Retry-After obeyed up to `retry_after_max_s` (the package gives up
  on a Retry-After over two minutes) and the attempt count written into each record;
- redirects: refused (the package's HTTP client follows them, and a same-origin redirect keeps the key);
- the key: read from `api_key_env` per request and sent as this request's own header, never stored on a
  client (the package would read OPENAI_API_KEY when given none, and keeps a refreshed key on itself);
- error messages: the server's body, scrubbed of the key, cut to one line (the package's messages quote it raw);
- the reply: parsed from the raw JSON by `parse_chat_response`, shared with the GGUF client, which reads the
  non-standard `reasoning_content` / `reasoning` fields.
"""
from __future__ import annotations

import json
import os
import time
from datetime import timezone
from email.utils import parsedate_to_datetime
from typing import Callable

from lib.teacher.client import Completion, TeacherRequestError, parse_chat_response, redact
from lib.teacher.config import TeacherConfig, sampling_params

_RETRYABLE_STATUS = frozenset({408, 429})  # and every 5xx: the server may answer differently next time
_BODY_EXCERPT_CHARS = 300
_MAX_ERROR_BODY_BYTES = 65536  # only the start of an error page is scrubbed and quoted
_UNUSED_KEY = "unused: the Authorization header is set per request"  # the package refuses to start keyless


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), None if absent/unreadable."""
    if not value or not value.strip():
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - now)


class OpenAIChatClient:
    """POST ``{base_url}/chat/completions`` through the `openai` package; safe to share between threads."""

    def __init__(self, config: TeacherConfig, environ=os.environ, wall_clock: Callable[[], float] = time.time):
        import openai  # here, not at the top: a GGUF-only run (or a dry-run) never needs it

        self.config = config
        self.url = config.base_url.rstrip("/") + "/chat/completions"
        self._environ, self._wall_clock, self._openai = environ, wall_clock, openai
        self._client = openai.OpenAI(
            base_url=config.base_url, api_key=_UNUSED_KEY, timeout=config.timeout_s, max_retries=0,
            # Headers the package would fill from OPENAI_ORG_ID / OPENAI_PROJECT_ID: not for a third-party server.
            default_headers={"OpenAI-Organization": openai.Omit(), "OpenAI-Project": openai.Omit()},
            http_client=openai.DefaultHttpxClient(follow_redirects=False))

    def __repr__(self) -> str:
        return f"OpenAIChatClient(url={self.url!r}, model={self.config.model!r})"

    def close(self) -> None:
        """Close the pooled connections."""
        self._client.close()

    def complete(self, messages: list[dict]) -> Completion:
        """One request; every failure becomes a `TeacherRequestError` whose message holds no secret."""
        openai = self._openai
        key = self._environ.get(self.config.api_key_env) or ""  # read per call: never kept on the object
        auth = {"Authorization": f"Bearer {key}" if key else openai.Omit()}  # unset: no header (local servers)
        failure = None
        try:
            # Sampling fields go in extra_body: one definition (`sampling_params`) for both clients, and a
            # server-specific field there overrides a default, as the package merges extra_body last.
            raw = self._client.chat.completions.with_raw_response.create(
                model=self.config.served_model, messages=messages, stream=False, extra_headers=auth,
                extra_body=sampling_params(self.config))
            body = raw.content
        # The failure is built here and raised below, outside the handler, so it carries no __context__: the
        # package's exception quotes the unscrubbed body and the request headers.
        except openai.APIStatusError as err:  # a reply with a non-2xx status, a refused redirect included
            failure = self._status_error(err.response, key)
        except openai.APIConnectionError as err:  # APITimeoutError too: no reply (refused, reset, timed out)
            cause = err.__cause__ or err
            failure = TeacherRequestError(redact(f"no response from {self.url}: {type(cause).__name__}: {cause}",
                                                 key), retryable=True)
        except openai.OpenAIError as err:  # anything else the package raises: the same request fails again
            failure = TeacherRequestError(redact(f"request to {self.url} failed: {type(err).__name__}: {err}", key),
                                          retryable=False)
        if failure is not None:
            raise failure
        try:
            parsed = json.loads(body)
        except ValueError:
            raise TeacherRequestError(f"non-JSON reply from {self.url}: {_excerpt(body, key)}",
                                      retryable=False) from None
        return parse_chat_response(parsed, self.config.served_model)

    def _status_error(self, response, key: str) -> TeacherRequestError:
        status = response.status_code
        retryable = status in _RETRYABLE_STATUS or status >= 500
        if 300 <= status < 400:
            hint = (" (redirect not followed: the API key goes only to base_url; set base_url to the address "
                    "the server redirects to)")
        else:
            hint = "" if retryable else " (not retried: the same request would fail again)"
        return TeacherRequestError(f"HTTP {status} from {self.url}: {_excerpt(response.content, key)}{hint}",
                                   retryable=retryable, status=status,
                                   retry_after=parse_retry_after(response.headers.get("Retry-After"),
                                                                 self._wall_clock()))


def _excerpt(raw: bytes, secret: str | None) -> str:
    """The start of a reply body on one line, enough to read the server's error message.

    Scrubbed before it is cut: a cut could leave a key's prefix that no longer matches the key."""
    text = " ".join(redact(raw[:_MAX_ERROR_BODY_BYTES].decode("utf-8", "replace"), secret).split())
    return text[:_BODY_EXCERPT_CHARS] + ("…" if len(text) > _BODY_EXCERPT_CHARS else "") if text else "(empty body)"
