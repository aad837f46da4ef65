"""The merged Hugging Face model on the quant ladder: the same problems, template and sampling settings through
transformers, so 05 shows what the GGUF conversion itself costs (F16 against the model it came from).

Usage: ``samples, facts = generate_hf(merged_dir, problems, k=1, max_tokens=512, sampling={...})``

Samples have generate.py's fields, so 05 judges and summarises them as any file's. The sampling settings are the
same values (temperature, top-p, top-k 40, min-p 0.05, the repeat penalty), not the same sampler: the two engines'
random streams differ (the comparison is paired by problem, not by sample); transformers applies the temperature
before top-k/top-p/min-p where llama.cpp's chain applies it last (a narrower nucleus here at T < 1); its
repetition_penalty covers the whole context, the prompt included, where llama.cpp's covers the last 64 tokens.
Greedy (temperature 0) the two are the same rule, and 04's round trip shows them agreeing. Decoding runs in the
merged model's dtype on this machine's device, in the calling process (its peak RSS is not isolated), 8 problems
at a time: its tokens/s is a batched figure, not one chat's.
"""
from __future__ import annotations

import time
from pathlib import Path

from lib.conversation import plain_prompt
from lib.evaluate.judging import part_lengths
from lib.export.round_trip import end_of_turn_ids
from lib.think import THINK_OPEN

BATCH = 8  # problems decoded together (left-padded)


def generate_hf(model_dir: Path, problems: list[dict], k: int = 1, max_tokens: int = 512,
                sampling: dict | None = None, template_kwargs: dict | None = None, plain_format: str = "",
                seed: int = 0) -> tuple[list[dict], dict]:
    """(samples in problem order, k per problem, {"peak_rss_mib": None, "generation_seconds", "gpu_offload"})."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    sampling = sampling or {}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="auto").to(device).eval()
    ends = end_of_turn_ids(tokenizer, model_dir)
    if tokenizer.pad_token_id is None:  # Mistral v3 and others have none: pad with an end of turn (masked anyway)
        tokenizer.pad_token_id = ends[0]
    pad = tokenizer.pad_token_id
    texts = [plain_prompt(plain_format, p["messages"][-1]["content"]) if plain_format else
             tokenizer.apply_chat_template(p["messages"], tokenize=False, add_generation_prompt=True,
                                           **(template_kwargs or {})) for p in problems]
    temperature = float(sampling.get("temperature", 0.6))
    options = {"do_sample": temperature > 0, "max_new_tokens": max_tokens, "eos_token_id": ends, "pad_token_id": pad,
               "repetition_penalty": float(sampling.get("repeat_penalty", 1.0))}
    if temperature > 0:
        options |= {"temperature": temperature, "top_p": float(sampling.get("top_p", 1.0)), "top_k": 40,
                    "min_p": 0.05}
    samples: dict[tuple[int, int], dict] = {}
    started = time.perf_counter()
    for j in range(k):
        torch.manual_seed(int(sampling.get("seed", seed)) + j)  # sample j of every problem: one seed, as in 05
        for first in range(0, len(problems), BATCH):
            batch = tokenizer(texts[first:first + BATCH], return_tensors="pt", padding=True,
                              add_special_tokens=bool(plain_format)).to(device)
            begun = time.perf_counter()
            with torch.no_grad():
                out = model.generate(**batch, **options)
            seconds = (time.perf_counter() - begun) / len(out)
            for row, tokens in enumerate(out[:, batch["input_ids"].shape[1]:].tolist()):
                number = first + row
                end = next((i for i, t in enumerate(tokens) if t in ends), None)
                kept = tokens if end is None else tokens[:end]
                samples[number, j] = _sample(tokenizer, problems[number], j, texts[number], kept,
                                             "length" if end is None else "stop", seconds, plain_format)
    facts = {"peak_rss_mib": None, "generation_seconds": round(time.perf_counter() - started, 3),
             "gpu_offload": device == "cuda"}
    del model
    return [samples[number, j] for number in range(len(problems)) for j in range(k)], facts


def _sample(tokenizer, problem: dict, j: int, prompt: str, tokens: list[int], finish: str, seconds: float,
            plain_format: str) -> dict:
    text = tokenizer.decode(tokens, skip_special_tokens=False)
    opens = not plain_format and prompt.rstrip().endswith(THINK_OPEN)
    count_tokens = lambda part: len(tokenizer(part, add_special_tokens=False)["input_ids"])  # noqa: E731
    return {"problem_id": problem["id"], "sample": j, "prompt_opens_think": opens, "text": text,
            "completion_tokens": len(tokens), "finish_reason": finish, "seconds": round(seconds, 4),
            "ttft_seconds": None, "forced_close": False, "think_budget": None,
            **part_lengths(text, opens, count_tokens)}
