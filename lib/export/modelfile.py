"""An Ollama `Modelfile` beside each exported GGUF: the file, its chat template as Ollama's Go template, the stop
tokens and the sampling 05 judged with (`ollama create NAME -f RECIPE-Q4_K_M.Modelfile`).

Usage: ``text, facts = modelfile(gguf_name, embedded_template, bos, eos, stops, sampling, n_ctx)``

Ollama cannot be installed here, so the template is checked statically: a Go template is written only for a
chat format this module knows (ChatML, with or without a default system prompt), and only when its Python twin
(`chatml_prompt`, which the Go text renders step for step) gives, for every probe conversation, the very text the
GGUF's own Jinja template renders. Otherwise the Modelfile has no TEMPLATE and says why: Ollama then takes the
template from the GGUF itself (it reads `tokenizer.chat_template`), which is the file's own truth.
(tests/export/test_modelfile.py renders the Go text with Go's text/template, Ollama's engine, when `go` is there.)
"""
from __future__ import annotations

import json
from pathlib import Path

from lib.export.gguf import render_chat, special_texts
from lib.native_output import llama_cpp_logged_to
from lib.paths import atomic_write_text
from lib.think import THINK_CLOSE, THINK_OPEN

IM_START, IM_END = "<|im_start|>", "<|im_end|>"

# Go's text/template, as Ollama renders it: .Messages (Role, Content), then the generation prompt. DEFAULT_SYSTEM
# is replaced by the template's own default system prompt (or the block removed when it has none).
CHATML_GO = (
    '{{- if or (not .Messages) (ne (index .Messages 0).Role "system") }}<|im_start|>system\n'
    'DEFAULT_SYSTEM<|im_end|>\n{{ end }}'
    '{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}'
    '<|im_start|>assistant\n')

PROBES = [  # what a chat sends Ollama: the prompt, ending on a user turn
    [{"role": "user", "content": "What is 7 * 6?"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is 7 * 6?"}],
    [{"role": "user", "content": "What is 7 * 6?"},
     {"role": "assistant", "content": f"{THINK_OPEN}\n7 * 6 = 42\n{THINK_CLOSE}\n\nThe answer is 42."},
     {"role": "user", "content": "And 8 * 6?"}],
]


def chatml_prompt(messages: list[dict], default_system: str | None) -> str:
    """What `CHATML_GO` renders (its Python twin, line for line)."""
    text = ""
    if default_system is not None and (not messages or messages[0]["role"] != "system"):
        text += f"{IM_START}system\n{default_system}{IM_END}\n"
    for message in messages:
        text += f"{IM_START}{message['role']}\n{message['content']}{IM_END}\n"
    return text + f"{IM_START}assistant\n"


def render_embedded(template: str, messages: list[dict], bos: str, eos: str) -> str:
    """The GGUF's Jinja template rendered as llama-cpp-python renders it (generation prompt on)."""
    return render_chat(template, messages, bos, eos)


def go_template(template: str, bos: str, eos: str) -> tuple[str | None, str]:
    """(the Go template, "") when a known format reproduces the embedded template on every probe, else (None, why)."""
    rendered = [render_embedded(template, probe, bos, eos) for probe in PROBES]
    if not rendered[0].startswith(IM_START):  # (a template writing BOS text first is not written as Go either)
        return None, "not a ChatML template (the only format written as a Go template here)"
    default = None
    if rendered[0].startswith(f"{IM_START}system\n"):  # a default system prompt written when none is given
        default = rendered[0][len(f"{IM_START}system\n"):rendered[0].index(IM_END)]
    for probe, text in zip(PROBES, rendered):
        if chatml_prompt(probe, default) != text:
            return None, (f"the ChatML form differs from the embedded template on {json.dumps(probe)[:80]}…: "
                          f"{chatml_prompt(probe, default)[:60]!r}… vs {text[:60]!r}…")
    go = CHATML_GO.replace("DEFAULT_SYSTEM", default) if default is not None else CHATML_GO[CHATML_GO.index(
        "{{- range"):]
    return go, ""


def modelfile(gguf_name: str, template: str, bos: str, eos: str, stops: list[str], sampling: dict, n_ctx: int
              ) -> tuple[str, dict]:
    """The Modelfile's text and what was decided ({"template": "go" | "from the GGUF", "why": …})."""
    go, why = go_template(template, bos, eos)
    lines = [f"# Ollama Modelfile for {gguf_name}, written by thinkdistill's 04: ollama create NAME -f THIS_FILE",
             f"FROM ./{gguf_name}"]
    if go is not None:
        if '"""' in go:
            raise ValueError("a Go template holding \"\"\" cannot be quoted in a Modelfile")
        lines.append(f'TEMPLATE """{go}"""')
    else:
        lines.append(f"# no TEMPLATE: {why}; Ollama reads the chat template stored in the GGUF")
    lines += [f'PARAMETER stop "{stop}"' for stop in stops]
    # every setting 05 sampled with, written out: Ollama's own defaults differ (repeat_penalty 1.1, min_p 0)
    lines += [f"PARAMETER temperature {sampling.get('temperature', 0.6)}"]
    if sampling.get("temperature", 0.6) > 0:
        lines += [f"PARAMETER top_p {sampling.get('top_p', 0.95)}", "PARAMETER top_k 40", "PARAMETER min_p 0.05"]
    lines += [f"PARAMETER repeat_penalty {sampling.get('repeat_penalty', 1.0)}", "PARAMETER repeat_last_n 64",
              f"PARAMETER num_ctx {n_ctx}"]
    return "\n".join(lines) + "\n", {"template": "go" if go is not None else "from the GGUF", "why": why}


def write_modelfiles(files: dict[str, Path], stops: list[str], sampling: dict, n_ctx: int) -> dict:
    """`<file stem>.Modelfile` beside each GGUF of `files` (quant -> path; one template for all: the F16's), written
    atomically; {"files": [names], "template": …, "why": …}."""
    import llama_cpp

    log = files["F16"].parent / "logs" / "modelfile.log"  # a vocab-only context's warnings
    with llama_cpp_logged_to(log):
        vocab = llama_cpp.Llama(str(files["F16"]), vocab_only=True, verbose=False)
    template, (bos, eos) = vocab.metadata["tokenizer.chat_template"], special_texts(vocab)
    written, decided = [], {}
    for path in files.values():
        body, decided = modelfile(path.name, template, bos, eos, stops, sampling, n_ctx)
        written.append(atomic_write_text(path.with_suffix(".Modelfile"), body).name)
    return {"files": written, **decided}
