"""A local GGUF run in this process by llama-cpp-python as the teacher: no server, no key, no network.

Usage: ``completion = LlamaCppClient(TeacherConfig(gguf_path="models/r1-1.5b-Q8_0.gguf")).complete(
[{"role": "user", "content": "What is 2 + 2?"}])``

The chat template embedded in the GGUF formats the prompt. Its errors are not retried: a prompt longer than
`n_ctx` fails the same way every time.
"""
from __future__ import annotations

import threading
from dataclasses import replace

from lib.teacher.client import Completion, TeacherRequestError, parse_chat_response
from lib.teacher.config import TeacherConfig, sampling_params


class LlamaCppClient:
    """A local GGUF via llama-cpp-python in this process. A `Llama` is not thread-safe: calls take turns."""

    def __init__(self, config: TeacherConfig, llama=None):
        self.config = config
        if llama is None:
            import llama_cpp  # here, not at the top: an optional compiled dependency that HTTP runs never need

            threads = {"n_threads": config.n_threads, "n_threads_batch": config.n_threads} if config.n_threads else {}
            llama = llama_cpp.Llama(model_path=config.gguf_path, n_ctx=config.n_ctx, verbose=False,
                                    **({"seed": config.seed} if config.seed is not None else {}), **threads)
        self._llama, self._lock = llama, threading.Lock()

    def __repr__(self) -> str:
        return f"LlamaCppClient(gguf_path={self.config.gguf_path!r})"

    def close(self) -> None:
        """Free the model's memory now rather than at garbage collection (a no-op for an injected fake)."""
        close = getattr(self._llama, "close", None)
        if close is not None:
            close()

    def complete(self, messages: list[dict]) -> Completion:
        """One chat completion with the template embedded in the GGUF; llama.cpp errors are not retried."""
        with self._lock:
            try:
                out = self._llama.create_chat_completion(messages=messages, **sampling_params(self.config))
            except Exception as err:  # noqa: BLE001 - e.g. a prompt longer than n_ctx: the same call fails again
                raise TeacherRequestError(f"llama.cpp failed: {type(err).__name__}: {err}", retryable=False) from None
        # llama-cpp-python reports the GGUF's absolute path as the model: records carry the portable name.
        return replace(parse_chat_response(out, self.config.served_model), model=self.config.served_model)
