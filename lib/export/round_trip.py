"""Does the GGUF chat as training did? The template round trip 04 runs on the F16 file it just wrote.

Usage: ``report = check_round_trip(round_trip(merged_dir, f16_gguf, conversations, greedy_prompts, kwargs))``:
`ExportError` with every reason the file is broken for chat, else the report with its flags.

Checked, the Hugging Face tokenizer and template (what 02 masked and 03 trained on) against the GGUF:
- the token ids of each conversation (system prompts, several turns, think blocks, with and without the
  generation prompt): the HF template rendered and tokenised, against the template embedded in the GGUF rendered as
  llama-cpp-python renders it (Python's jinja2 over the file's `tokenizer.chat_template`, the file's BOS/EOS text)
  and tokenised by llama.cpp; a difference is printed per conversation with the first tokens that differ and
  flagged (measured on Mistral v3: llama.cpp's SentencePiece tokenizer writes a space after every special token,
  so "[INST] Natalia" becomes "▁" + "▁Natal"… where the HF tokenizer has "▁Natal"…: the file is right, llama.cpp
  reads it so); a template that fails only in the GGUF fails the export;
- `<think>` and `</think>` tokenise to the same ids through both (a special token where the family has one);
- every end-of-turn id of the HF model (generation_config and tokenizer EOS) ends generation in llama.cpp (EOG),
  else llama.cpp would run past the end of a reply;
- greedy continuations of the merged HF model and the F16 GGUF agree on their first tokens (`GREEDY_TOKENS`) for
  at least `GREEDY_AGREEMENT` of the prompts: reported, and flagged below it, not raised — F16 rounding turns near
  ties (a random --tiny model is all near ties), which is no defect of the file.

llama-server renders with llama.cpp's own C++ Jinja engine (minja), which llama-cpp-python's wheel does not
expose; jinja2 is the reference here. A template that only minja misreads is not caught.
"""
from __future__ import annotations

import json
from pathlib import Path

from lib.conversation import to_chat_messages
from lib.native_output import llama_cpp_logged_to
from lib.export.gguf import ExportError, gpu_offload, render_chat, special_texts
from lib.think import THINK_CLOSE, THINK_OPEN

GREEDY_TOKENS = 32
GREEDY_AGREEMENT = 0.95


def round_trip_conversations(train_rows: list[dict], system_prompt: str = "", n: int = 6) -> list[dict]:
    """Up to `n` conversations from real training rows, each shape a chat has: one exchange (as trained), one with a
    system prompt, two exchanges (a think block in the history), and prompts ending on a user turn (rendered with
    the generation prompt). {"id", "messages", "add_generation_prompt"}."""
    chats = [to_chat_messages(row, system_prompt) for row in train_rows[:n + 1]]
    shapes = []
    for i, (chat, after) in enumerate(zip(chats, chats[1:])):
        user_first = [m for m in chat if m["role"] != "system"]
        system = [{"role": "system", "content": "You are a careful maths tutor. Think, then answer."}]
        shape = [(chat, False), (system + user_first, False), (chat + after[-2:], False),
                 (chat + after[-2:-1], True), (system + user_first[:-1], True), (chat[:-1], True)][i % 6]
        shapes.append({"id": f"{train_rows[i].get('id', i)}:{i % 6}", "messages": shape[0],
                       "add_generation_prompt": shape[1]})
    return shapes[:n]


def _hf_ids(tokenizer, conversation: dict, template_kwargs: dict) -> list[int]:
    text = tokenizer.apply_chat_template(conversation["messages"], tokenize=False,
                                         add_generation_prompt=conversation["add_generation_prompt"],
                                         **template_kwargs)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _gguf_ids(vocab, conversation: dict, template_kwargs: dict) -> list[int]:
    bos, eos = special_texts(vocab)
    prompt = render_chat(vocab.metadata["tokenizer.chat_template"], conversation["messages"], bos, eos,
                         conversation["add_generation_prompt"], template_kwargs)
    return vocab.tokenize(prompt.encode(), add_bos=False, special=True)


def _difference(a: list[int], b: list[int], decode_hf, decode_gguf) -> dict | None:
    """Where two id lists first differ, with a few tokens of each from there (as text)."""
    at = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    if a == b:
        return None
    return {"position": at, "hf": decode_hf(a[at:at + 8]), "gguf": decode_gguf(b[at:at + 8]),
            "hf_ids": a[at:at + 8], "gguf_ids": b[at:at + 8]}


def template_rows(tokenizer, vocab, conversations: list[dict], template_kwargs: dict) -> list[dict]:
    """One row per conversation: token counts both ways and the first difference (None when equal)."""
    decode_gguf = lambda ids: vocab.detokenize(ids, special=True).decode(errors="replace")  # noqa: E731
    rows = []
    for conversation in conversations:
        row = {"id": conversation["id"], "turns": len(conversation["messages"]),
               "generation_prompt": conversation["add_generation_prompt"]}
        hf, gguf = _rendered(_hf_ids, tokenizer, conversation, template_kwargs), _rendered(
            _gguf_ids, vocab, conversation, template_kwargs)
        if isinstance(hf, str) or isinstance(gguf, str):  # a template refused this shape (raise_exception)
            same = hf == gguf  # both refused it alike: the file behaves as training's template
            rows.append(row | {"hf_tokens": None, "gguf_tokens": None, "refused": hf if same else None,
                               "difference": None if same else {"position": 0, "hf": str(hf)[:200],
                                                                "gguf": str(gguf)[:200]}})
            continue
        rows.append(row | {"hf_tokens": len(hf), "gguf_tokens": len(gguf), "refused": None,
                           "difference": _difference(hf, gguf, tokenizer.decode, decode_gguf)})
    return rows


def _rendered(ids_of, tokenizer_or_vocab, conversation: dict, template_kwargs: dict) -> list[int] | str:
    """The ids, or the template's own error message when it raises for this conversation."""
    try:
        return ids_of(tokenizer_or_vocab, conversation, template_kwargs)
    except Exception as error:  # jinja2's errors, and whatever a template's raise_exception raises: transformers'
        return f"template error: {error}"  # is a TemplateError, llama-cpp-python's a ValueError: compare the text


def think_tag_rows(tokenizer, vocab) -> list[dict]:
    return [{"tag": tag, "hf_ids": tokenizer(tag, add_special_tokens=False)["input_ids"],
             "gguf_ids": vocab.tokenize(tag.encode(), add_bos=False, special=True)}
            for tag in (THINK_OPEN, THINK_CLOSE)]


def end_of_turn_ids(tokenizer, merged_dir: Path) -> list[int]:
    """The ids that end a reply for the HF model: the tokenizer's EOS and generation_config's eos_token_id(s)."""
    ids = {tokenizer.eos_token_id} - {None}
    config = Path(merged_dir) / "generation_config.json"
    if config.is_file():
        eos = json.loads(config.read_text()).get("eos_token_id")
        ids |= set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    return sorted(ids)


def greedy_rows(merged_dir: Path, llm, prompts: list[list[int]], n_tokens: int = GREEDY_TOKENS,
                eog_ids: list[int] | None = None) -> list[dict]:
    """Greedy continuations of each prompt (token ids) by the merged HF model and by llama.cpp on the GGUF: how many
    leading tokens agree (each stops at its end of turn)."""
    import llama_cpp
    import torch
    from transformers import AutoModelForCausalLM

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(merged_dir, dtype="auto").to(device).eval()
    rows = []
    for ids in prompts:
        with torch.no_grad():
            out = model.generate(torch.tensor([ids], device=device), max_new_tokens=n_tokens, do_sample=False,
                                 eos_token_id=eog_ids, pad_token_id=(eog_ids or [0])[0])
        hf = out[0, len(ids):].tolist()
        hf = hf[:next((i for i, t in enumerate(hf) if t in (eog_ids or [])), len(hf))]
        gguf = []
        for token in llm.generate(ids, temp=0.0, top_k=1, repeat_penalty=1.0, reset=True):
            ended = token in (eog_ids or []) or llama_cpp.llama_vocab_is_eog(llm._model.vocab, token)
            if ended or len(gguf) == n_tokens:
                break
            gguf.append(token)
        llm.reset()
        same = next((i for i, (a, b) in enumerate(zip(hf, gguf)) if a != b), min(len(hf), len(gguf)))
        rows.append({"prompt_tokens": len(ids), "hf_tokens": len(hf), "gguf_tokens": len(gguf),
                     "agreeing_tokens": same, "agree": hf == gguf})
    del model
    return rows


def round_trip(merged_dir: Path, gguf: Path, conversations: list[dict], greedy_prompts: int,
               template_kwargs: dict | None = None, n_threads: int = 2) -> dict:
    """The report `check_round_trip` judges: template rows, think tags, end-of-turn ids, greedy agreement on the
    first `greedy_prompts` conversations that end with a generation prompt (0: skipped)."""
    import llama_cpp
    from transformers import AutoTokenizer

    template_kwargs = template_kwargs or {}
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    log = gguf.parent / "logs" / "round_trip.log"  # llama.cpp's warnings about a vocab-only context, not the notebook
    with llama_cpp_logged_to(log):
        vocab = llama_cpp.Llama(str(gguf), vocab_only=True, verbose=False)
    report = {"gguf": Path(gguf).name, "has_template": bool(vocab.metadata.get("tokenizer.chat_template"))}
    if not report["has_template"]:
        return report
    eos = end_of_turn_ids(tokenizer, merged_dir)
    report |= {"conversations": template_rows(tokenizer, vocab, conversations, template_kwargs),
               "think_tags": think_tag_rows(tokenizer, vocab),
               "end_of_turn": [{"id": i, "text": tokenizer.convert_ids_to_tokens(i),
                                "ends_generation_in_gguf": bool(llama_cpp.llama_vocab_is_eog(vocab._model.vocab, i))}
                               for i in eos]}
    rendered = {row["id"] for row in report["conversations"] if row["hf_tokens"] is not None}  # not refused
    asked = [c for c in conversations if c["add_generation_prompt"] and c["id"] in rendered][:greedy_prompts]
    if asked:
        prompts = [_gguf_ids(vocab, c, template_kwargs) for c in asked]
        n_ctx = max(len(p) for p in prompts) + GREEDY_TOKENS + 16  # a long history (8k recipes) fits
        with llama_cpp_logged_to(log):
            llm = llama_cpp.Llama(str(gguf), n_ctx=n_ctx, n_threads=n_threads, n_threads_batch=n_threads,
                                  verbose=False, n_gpu_layers=-1 if gpu_offload() else 0)
        report["greedy"] = greedy_rows(merged_dir, llm, prompts, GREEDY_TOKENS, eos)
        report["greedy_agreement"] = round(sum(r["agree"] for r in report["greedy"]) / len(asked), 3)
        report["greedy_flag"] = report["greedy_agreement"] < GREEDY_AGREEMENT
    return report


def template_differences(report: dict) -> list[str]:
    """A line per conversation the GGUF renders and tokenises into other ids than training did (printed by 04 and
    flagged, not failed: the issue may be llama.cpp's tokenizer rather than the file — see the module notes)."""
    return [f"conversation {row['id']}: other tokens from token {d['position']}: HF {d['hf']!r} vs GGUF {d['gguf']!r}"
            for row in report.get("conversations", []) if (d := row["difference"]) and row["refused"] is None
            and not str(d["gguf"]).startswith("template error")]


def round_trip_failures(report: dict) -> list[str]:
    """Every reason the file is broken for chat (empty: none): no template, a template that fails where training's
    renders, think tags that tokenise otherwise, an end of turn that does not end generation."""
    if not report["has_template"]:
        return [f"{report['gguf']} has no chat template (tokenizer.chat_template): llama.cpp would fall back on "
                "another format; the merged folder needs its tokenizer_config.json or chat_template.jinja"]
    reasons = [f"conversation {row['id']}: the GGUF's template fails where training's renders: {d['gguf']}"
               for row in report["conversations"] if (d := row["difference"]) and str(d["gguf"]).startswith(
                   "template error")]
    reasons += [f"{row['tag']} is {row['hf_ids']} for the HF tokenizer but {row['gguf_ids']} in the GGUF"
                for row in report["think_tags"] if row["hf_ids"] != row["gguf_ids"]]
    reasons += [f"end of turn {row['text']!r} (id {row['id']}) does not end generation in the GGUF: llama.cpp would "
                "write past the end of a reply" for row in report["end_of_turn"] if not row["ends_generation_in_gguf"]]
    return reasons


def check_round_trip(report: dict) -> dict:
    """`report` with its flags (template differences, greedy agreement below `GREEDY_AGREEMENT`), or ExportError
    listing every failure."""
    reasons = round_trip_failures(report)
    if reasons:
        raise ExportError("the exported GGUF is broken for chat:\n- " + "\n- ".join(reasons))
    differences = template_differences(report)
    return report | {"template_differences": differences, "template_flag": bool(differences)}
