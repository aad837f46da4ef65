"""An OpenAI-compatible chat server on one exported GGUF: ``POST /v1/chat/completions`` (streamed or not),
``GET /v1/models``, ``GET /health``. The reply's thought comes apart from its answer (``reasoning_content`` and
``content``, as llama.cpp's ``--reasoning-format deepseek``), so a client shows the answer and can fold the
reasoning away.

Usage: ``server = bind("127.0.0.1", 8080); serve(server, ChatModel(gguf, n_ctx=4096, n_threads=4, ...))``

The prompt is the GGUF's own chat template (as 05 judges it and as llama-server renders it) with the recipe's
template variables; sampling defaults are the recipe's evaluation settings, which a request may override. One
model answers one request at a time (others wait their turn): this is the small-device server of the file 05
judged, not a throughput server — llama.cpp's ``llama-server --parallel N`` is that.
"""
from __future__ import annotations

import codecs
import json
import math
import re
import select
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from lib.evaluate.generate import rendered_prompts
from lib.export.gguf import gpu_offload
from lib.serve.reasoning import ReasoningStream, split_reasoning
from lib.think import THINK_OPEN

# request keys this server reads (besides model, messages, stream, n): OpenAI's names, then llama-server's
SAMPLING_KEYS = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "frequency_penalty", "presence_penalty",
                 "seed")
# when neither the recipe nor the request says otherwise: DeepSeek-R1's temperature and top-p, llama.cpp's defaults
# for the rest
DEFAULT_SAMPLING = {"temperature": 0.6, "top_p": 0.95, "top_k": 40, "min_p": 0.05, "repeat_penalty": 1.0,
                    "frequency_penalty": 0.0, "presence_penalty": 0.0}
# OpenAI request fields this server cannot honour: refused (400) rather than silently ignored
UNSUPPORTED = ("tools", "tool_choice", "functions", "response_format", "logprobs", "top_logprobs", "logit_bias")
# variables the chat template gets from the server itself, which chat_template_kwargs may not replace
RESERVED_TEMPLATE_VARIABLES = ("messages", "add_generation_prompt", "bos_token", "eos_token", "tools")


MAX_BODY_BYTES = 16 * 2**20  # a chat request, not an upload


class RequestError(ValueError):
    """A request this server cannot answer: HTTP 400 with OpenAI's error body naming the parameter."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


def _number(body: dict, key: str, low: float, high: float | None = None):
    value = body[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < low or (
            high is not None and value > high):
        bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise RequestError(f"'{key}' must be a number {bounds}, got {value!r}", key)
    return value


def message_text(content, index: int) -> str:
    """A message's content as text: a string, or OpenAI's list of parts of which only text parts are accepted."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        return "".join(str(p.get("text", "")) for p in content)
    raise RequestError(f"messages[{index}].content must be a string or a list of text parts (this model reads text "
                       "only)", f"messages[{index}].content")


def chat_request(body, defaults: dict, max_tokens_default: int) -> dict:
    """The checked request: messages, sampling (the defaults overridden by the request), max_tokens, stop, stream,
    template variables. RequestError names the first bad parameter."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' must be a non-empty list of {role, content}", "messages")
    checked = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("system", "developer", "user", "assistant"):
            raise RequestError(f"messages[{index}] needs a role of system, developer, user or assistant",
                               f"messages[{index}]")
        role = "system" if message["role"] == "developer" else message["role"]  # OpenAI's newer name for system
        checked.append({"role": role, "content": message_text(message.get("content", ""), index)})
    if body.get("n") not in (None, 1):
        raise RequestError("only n = 1 is served (ask again for another sample)", "n")
    for key in UNSUPPORTED:  # what clients send by default to mean "none" is no request for the feature
        if body.get(key) not in (None, False, [], {}, "none", "auto") and body.get(key) != {"type": "text"}:
            raise RequestError(f"'{key}' is not supported by this server (a reasoning-model chat server: text "
                               "messages in, text out)", key)
    sampling = dict(defaults)
    for key in SAMPLING_KEYS:
        if body.get(key) is not None:
            low = -2.0 if key in ("frequency_penalty", "presence_penalty") else -1.0 if key == "seed" else 0.0
            sampling[key] = _number(body, key, low)
    if sampling.get("seed") is not None:
        sampling["seed"] = None if sampling["seed"] < 0 else int(sampling["seed"])  # -1: a random seed (llama.cpp's)
    named = next((key for key in ("max_completion_tokens", "max_tokens") if body.get(key) is not None), None)
    max_tokens = max_tokens_default if named is None else body[named]
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise RequestError(f"'{named}' must be a positive integer, got {max_tokens!r}", named)
    stop = body.get("stop") or []
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
        raise RequestError("'stop' must be a string or a list of non-empty strings", "stop")
    kwargs = body.get("chat_template_kwargs") or {}
    if not isinstance(kwargs, dict) or set(kwargs) & set(RESERVED_TEMPLATE_VARIABLES):
        raise RequestError("'chat_template_kwargs' must be an object without "
                           f"{', '.join(RESERVED_TEMPLATE_VARIABLES)}", "chat_template_kwargs")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise RequestError("'stream_options' must be an object", "stream_options")
    return {"messages": checked, "sampling": sampling, "max_tokens": max_tokens, "stop": stop,
            "stream": bool(body.get("stream")), "template_kwargs": kwargs,
            "include_usage": bool(options.get("include_usage"))}


def held_back(text: str, stops: list[str]) -> int:
    """How many characters at the end of `text` could still become a stop string: not sent yet."""
    return max((size for stop in stops for size in range(min(len(stop) - 1, len(text)), 0, -1)
                if text.endswith(stop[:size])), default=0)


class ChatModel:
    """One GGUF loaded with llama.cpp, its chat template, its sampling defaults; `chat` yields a reply's text."""

    def __init__(self, gguf: Path, n_ctx: int, n_threads: int, template_kwargs: dict | None = None,
                 sampling: dict | None = None, max_tokens: int = 0, alias: str = ""):
        import llama_cpp

        self.gguf, self.alias = Path(gguf), alias or Path(gguf).stem
        self.llm = llama_cpp.Llama(str(gguf), n_ctx=n_ctx, n_threads=n_threads, n_threads_batch=n_threads,
                                   n_gpu_layers=-1 if gpu_offload() else 0, verbose=False)
        self._is_eog = lambda token: llama_cpp.llama_vocab_is_eog(self.llm._model.vocab, token)
        self.template_kwargs = template_kwargs or {}
        self.sampling = {**DEFAULT_SAMPLING, **(sampling or {})}
        self.max_tokens = max_tokens or self.llm.n_ctx()  # a request without max_tokens may fill the context
        self.lock = threading.Lock()  # one llama.cpp context: one reply at a time

    def prompt(self, messages: list[dict], template_kwargs: dict) -> tuple[list[int], bool]:
        """The prompt's tokens (the template writes BOS itself) and whether it opens the thought; RequestError when
        the template refuses the conversation (e.g. Mistral's roles must alternate)."""
        try:
            prompt = rendered_prompts(self.llm, [{"messages": messages}], "", {**self.template_kwargs,
                                                                                 **template_kwargs})[0]
        except Exception as error:  # the template's raise_exception (ValueError), jinja2's errors
            raise RequestError(f"the model's chat template refuses these messages: {error}", "messages") from None
        return (self.llm.tokenize(prompt.encode(), add_bos=False, special=True),
                prompt.rstrip().endswith(THINK_OPEN))

    def chat(self, request: dict) -> tuple[bool, Iterator[tuple[str, dict | None]]]:
        """(whether the prompt opens the thought, the reply): pieces of its text as they are decoded, then ("",
        facts) once: finish_reason ("stop" at the end-of-turn token or a stop string, "length" at max_tokens or
        the context's end) and the usage counts. The prompt is checked here, before any piece."""
        tokens, opened = self.prompt(request["messages"], request["template_kwargs"])
        room = self.llm.n_ctx() - len(tokens)
        if room < 1:
            raise RequestError(f"the prompt is {len(tokens)} tokens: it does not fit the {self.llm.n_ctx()}-token "
                               "context (start the server with a larger --n-ctx)", "messages")
        return opened, self._decode(tokens, request, min(request["max_tokens"], room))

    def _decode(self, tokens: list[int], request: dict, max_tokens: int) -> Iterator[tuple[str, dict | None]]:
        sampling, stops = request["sampling"], request["stop"]
        decoder, text, sent, generated, finish = codecs.getincrementaldecoder("utf-8")("replace"), "", 0, [], "length"
        hit = -1
        with self.lock:
            self.llm.set_seed(sampling["seed"] if sampling.get("seed") is not None else int(time.time_ns() % 2**31))
            # the whole prompt is decoded again: reusing the cached prefix decodes its last token alone, whose
            # logits then differ in the last bits from a batch's, and a seeded request would not repeat its reply
            self.llm.reset()
            for token in self.llm.generate(
                    tokens, temp=sampling["temperature"], top_p=sampling["top_p"], top_k=int(sampling["top_k"]),
                    min_p=sampling["min_p"], repeat_penalty=sampling["repeat_penalty"],
                    frequency_penalty=sampling["frequency_penalty"], presence_penalty=sampling["presence_penalty"]):
                if self._is_eog(token):
                    finish = "stop"
                    break
                generated.append(token)
                text += decoder.decode(self.llm.detokenize([token], special=True))
                hit = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
                if hit >= 0:  # the stop string is not part of the reply
                    text, finish = text[:hit], "stop"
                    break
                safe = len(text) - held_back(text, stops)
                if safe > sent:
                    yield text[sent:safe], None
                    sent = safe
                if len(generated) >= max_tokens:
                    break
        if hit < 0:  # not cut at a stop string: a character left half-decoded at max_tokens shows as U+FFFD
            text += decoder.decode(b"", final=True)
        yield text[sent:], {"finish_reason": finish,
                            "usage": {"prompt_tokens": len(tokens), "completion_tokens": len(generated),
                                      "total_tokens": len(tokens) + len(generated)}}


def _error_body(message: str, param: str | None = None, kind: str = "invalid_request_error") -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": None}}


class _Handler(BaseHTTPRequestHandler):
    server: "ChatServer"
    protocol_version = "HTTP/1.0"  # one request per connection; a stream ends when the connection closes

    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        if self.server.verbose:
            super().log_message(format, *args)

    def _send_json(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802 (http.server's name)
        model = self.server.model
        if self.path.rstrip("/") in ("/v1/models", "/models"):
            self._send_json(200, {"object": "list", "data": [{"id": model.alias, "object": "model", "created": 0,
                                                              "owned_by": "thinkdistill"}]})
        elif self.path.rstrip("/") == "/health":
            self._send_json(200, {"status": "ok", "model": model.alias, "file": model.gguf.name})
        else:
            self._send_json(404, _error_body(f"no route GET {self.path}", kind="not_found_error"))

    def do_POST(self):  # noqa: N802
        if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
            self._send_json(404, _error_body(f"no route POST {self.path} (this server answers "
                                             "/v1/chat/completions)", kind="not_found_error"))
            return
        model = self.server.model
        try:
            length = self.headers.get("Content-Length") or "0"
            if not re.fullmatch(r"[0-9]+", length) or int(length) > MAX_BODY_BYTES:
                raise RequestError(f"Content-Length must be a byte count up to {MAX_BODY_BYTES}, got {length!r}")
            try:
                body = json.loads(self.rfile.read(int(length)) or b"null")
            except ValueError as error:  # not JSON, or not UTF-8
                raise RequestError(f"the request body is not UTF-8 JSON: {error}") from None
            request = chat_request(body, model.sampling, model.max_tokens)
            opened, pieces = model.chat(request)  # the prompt is checked before any byte of the answer goes out
        except RequestError as error:
            self._send_json(400, _error_body(str(error), error.param))
            return
        reply_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        try:
            if request["stream"]:
                self._stream(opened, pieces, reply_id, created, request["include_usage"])
            else:
                self._whole(opened, pieces, reply_id, created)
        except (BrokenPipeError, ConnectionResetError):  # the client went away: stop decoding for it
            pieces.close()

    def _client_gone(self) -> bool:
        """True when the client closed its connection (readable with nothing to read): stop decoding for it."""
        readable, _, _ = select.select([self.connection], [], [], 0)
        return bool(readable) and not self.connection.recv(1, socket.MSG_PEEK)

    def _whole(self, opened: bool, pieces, reply_id: str, created: int) -> None:
        text, facts = "", None
        for number, (piece, facts) in enumerate(pieces):
            text += piece
            if number % 16 == 15 and self._client_gone():  # a reply nobody waits for holds the model for others
                pieces.close()
                return
        reasoning, content = split_reasoning(text, opened)
        message = {"role": "assistant", "content": content}
        if reasoning:
            message["reasoning_content"] = reasoning
        self._send_json(200, {"id": reply_id, "object": "chat.completion", "created": created,
                              "model": self.server.model.alias, "usage": facts["usage"],
                              "choices": [{"index": 0, "message": message, "finish_reason": facts["finish_reason"]}]})

    def _stream(self, opened: bool, pieces, reply_id: str, created: int, include_usage: bool) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()

        def event(delta: dict, finish: str | None = None, usage: dict | None = None) -> None:
            chunk = {"id": reply_id, "object": "chat.completion.chunk", "created": created,
                     "model": self.server.model.alias,
                     "choices": [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}]}
            if usage:
                chunk["usage"] = usage
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()

        event({"role": "assistant", "content": ""})
        stream, facts = ReasoningStream(opened), None
        for piece, facts in pieces:
            reasoning, content = stream.feed(piece, final=facts is not None)
            if reasoning:
                event({"reasoning_content": reasoning})
            if content:
                event({"content": content})
        event({}, facts["finish_reason"])
        if include_usage:
            event({}, usage=facts["usage"])
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


class ChatServer(ThreadingHTTPServer):
    daemon_threads = True
    model: ChatModel
    verbose = False


def bind(host: str, port: int) -> ChatServer:
    """The listening socket, before any model is loaded: a port in use fails at once (OSError)."""
    return ChatServer((host, port), _Handler)


def serve(server: ChatServer, model: ChatModel) -> None:
    """Answer requests until interrupted (Ctrl-C or SIGTERM)."""
    server.model = model
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
