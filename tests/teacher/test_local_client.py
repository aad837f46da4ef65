"""The llama-cpp-python client with a stand-in `Llama`: what it sends, how it fails, whose name it records.

(The real GGUF runs in test_llama_cpp.py, marked slow.)
"""
from __future__ import annotations

import threading
import time

import pytest

from lib.teacher.client import TeacherRequestError
from lib.teacher.config import TeacherConfig
from lib.teacher.local_client import LlamaCppClient


class FakeLlama:
    """Records calls, notices overlapping ones, fails on a prompt containing "too long"."""

    def __init__(self):
        self.calls, self.overlapped, self.closed = [], False, False
        self._busy = threading.Lock()

    def create_chat_completion(self, messages, **params):
        if not self._busy.acquire(blocking=False):
            self.overlapped = True
            self._busy.acquire()
        try:
            self.calls.append((messages, params))
            time.sleep(0.01)
            if "too long" in messages[-1]["content"]:
                raise ValueError("Requested tokens (5000) exceed context window of 1024")
            return {"model": "/abs/path/tiny-Q8_0.gguf", "usage": {"completion_tokens": 3},
                    "choices": [{"message": {"role": "assistant", "content": "<think>a</think>4"},
                                 "finish_reason": "stop"}]}
        finally:
            self._busy.release()

    def close(self):
        self.closed = True


@pytest.fixture
def gguf_config(tmp_path):
    (tmp_path / "tiny-Q8_0.gguf").write_bytes(b"GGUF")
    return TeacherConfig(gguf_path=str(tmp_path / "tiny-Q8_0.gguf"), max_tokens=24, seed=5, extra_body={"top_k": 4})


def test_the_sampling_fields_are_sent_and_the_portable_model_name_recorded(gguf_config):
    llama = FakeLlama()
    completion = LlamaCppClient(gguf_config, llama=llama).complete([{"role": "user", "content": "2+2?"}])
    assert (completion.content, completion.finish_reason, completion.model) == ("<think>a</think>4", "stop",
                                                                                "tiny-Q8_0")
    assert llama.calls == [([{"role": "user", "content": "2+2?"}],
                            {"temperature": 0.6, "top_p": 0.95, "max_tokens": 24, "seed": 5, "top_k": 4})]


def test_calls_take_turns_and_llama_errors_are_not_retryable(gguf_config):
    llama = FakeLlama()
    client = LlamaCppClient(gguf_config, llama=llama)
    threads = [threading.Thread(target=client.complete, args=([{"role": "user", "content": f"q{i}"}],))
               for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(llama.calls) == 4 and not llama.overlapped
    with pytest.raises(TeacherRequestError, match="llama.cpp failed: ValueError: Requested tokens") as err:
        client.complete([{"role": "user", "content": "too long"}])
    assert err.value.retryable is False
    client.close()
    assert llama.closed
