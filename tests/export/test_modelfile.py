"""The Ollama Modelfile 04 writes beside each GGUF: a Go TEMPLATE only where it renders exactly what the GGUF's own
chat template renders — checked here with Go's text/template (Ollama's engine) on real conversations of the
training data — and no TEMPLATE, with the reason, elsewhere."""
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from lib.conversation import to_chat_messages
from lib.data.rows import read_reasoning_rows
from lib.export.modelfile import PROBES, go_template, modelfile, render_embedded
from lib.models import load_fixture_tokenizer

GO_SOURCE = Path(__file__).parent / "go" / "render_template.go"


@pytest.fixture(scope="module")
def go_render(tmp_path_factory):
    """Go's text/template as a function (template, messages) -> text; `go` comes from Debian's golang-go (.ci/run
    installs it)."""
    if shutil.which("go") is None:
        pytest.skip("no Go toolchain: apt-get install golang-go (CI installs it)")
    work = tmp_path_factory.mktemp("go")
    env = {**os.environ, "GOCACHE": str(work / "cache"), "GOPATH": str(work / "path"), "GOFLAGS": "-mod=mod",
           "GO111MODULE": "off"}
    built = subprocess.run(["go", "build", "-o", str(work / "render"), str(GO_SOURCE)], env=env,
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stderr

    def render(template: str, messages: list[dict]) -> str:
        done = subprocess.run([str(work / "render")], input=json.dumps({"template": template, "messages": messages}),
                              capture_output=True, text=True, check=True)
        return done.stdout

    return render


def conversations():
    rows, _ = read_reasoning_rows("data/gsm8k/train.jsonl.gz", "gsm8k", limit=3)
    chats = [to_chat_messages(row) for row in rows]
    return PROBES + [chats[0][:-1], chats[0] + chats[1][:-1],
                     [{"role": "system", "content": "Answer in French."}] + chats[0] + chats[2][:-1]]


def without_default_system(template: str) -> str:
    """SmolLM2's template without its default system prompt: plain ChatML (the Go template's other branch)."""
    cut = template[template.index("{% if loop.first"):template.index("{% endif %}") + len("{% endif %}")]
    return template.replace(cut, "")


@pytest.mark.parametrize("family", ["smollm2", "qwen2_5", "smollm2 without a default system prompt"])
def test_a_chatml_gguf_gets_a_go_template_that_ollama_renders_as_the_gguf_does(family, go_render):
    tokenizer = load_fixture_tokenizer(family.split()[0])
    template, bos, eos = tokenizer.chat_template, tokenizer.bos_token or "", tokenizer.eos_token
    if family.endswith("prompt"):
        template = without_default_system(template)
        assert "SmolLM" not in render_embedded(template, PROBES[0], bos, eos)
    go, why = go_template(template, bos, eos)
    assert go is not None, why
    for messages in conversations():  # the probes, and real multi-turn chats with think blocks in the history
        assert go_render(go, messages) == render_embedded(template, messages, bos, eos)
    text, decided = modelfile("m-Q4_K_M.gguf", template, bos, eos, ["<|im_end|>"],
                              {"temperature": 0.6, "top_p": 0.95, "repeat_penalty": 1.1}, 1024)
    assert decided == {"template": "go", "why": ""}
    assert text.splitlines()[1:3] == ["FROM ./m-Q4_K_M.gguf", f'TEMPLATE """{go.splitlines()[0]}']
    assert ("{{- if" in go) == (family != "smollm2 without a default system prompt")
    assert text.endswith('PARAMETER stop "<|im_end|>"\nPARAMETER temperature 0.6\nPARAMETER top_p 0.95\n'
                         'PARAMETER top_k 40\nPARAMETER min_p 0.05\nPARAMETER repeat_penalty 1.1\n'
                         'PARAMETER repeat_last_n 64\nPARAMETER num_ctx 1024\n')


@pytest.mark.parametrize("family, reason", [
    ("qwen3", "the ChatML form differs from the embedded template"),  # it drops earlier turns' thoughts
    ("llama3_2", "not a ChatML template"), ("mistral_v3", "not a ChatML template"),
    ("r1_distill_qwen", "not a ChatML template")])
def test_other_templates_are_left_to_ollama_with_the_reason(family, reason):
    tokenizer = load_fixture_tokenizer(family)
    text, decided = modelfile("m.gguf", tokenizer.chat_template, tokenizer.bos_token or "", tokenizer.eos_token,
                              [tokenizer.eos_token], {"temperature": 0.0}, 2048)
    assert not any(line.startswith("TEMPLATE") for line in text.splitlines())
    assert decided["template"] == "from the GGUF" and reason in decided["why"]
    assert f"# no TEMPLATE: {decided['why']}" in text and "top_p" not in text  # greedy: no top_p line
