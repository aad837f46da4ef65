"""Masking speed: `lib.masking.templates` against TRL's own `assistant_only_loss` tokenisation, same machine, same tokenizer.

Usage: ``HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/masking_speed.py [--family qwen2_5] [--out FILE.json]``

Both sides get the same 2,000 seeded synthetic conversations (single-turn and 2-3 turns, some with a system
prompt, `<think>` replies of varied length). TRL's side is the call `SFTTrainer` makes per example when
`assistant_only_loss=True` (trl 1.16, `trl/trainer/sft_trainer.py` `tokenize_fn` -> `trl.data_utils._tokenize`):
``apply_chat_template(messages, tokenize=True, return_dict=True, chat_template=<training template>, tools=None,
return_assistant_tokens_mask=True)``, the training template being `get_training_chat_template(tokenizer)` when the
tokenizer's own has no `{% generation %}` markers. Each side is warmed up once (the first 200 conversations), then
timed over all of them three times; the best run counts. Ours is timed twice: `build_masked_example` per
conversation (like TRL's per-example map) and `build_masked_examples` (tokenisation batched; same examples, checked).
One JSON object is printed and written to `--out`.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `lib` when run as a plain script

from lib.masking.templates import build_masked_example, build_masked_examples  # noqa: E402
from lib.think import assistant_text  # noqa: E402

WORDS = ("the of and to in is that for it as with was on be at by this had not are but from or have an they which "
         "one you were all we when there can more if out so what up about into than them only other new some could "
         "time these two may then first any like now my such make over our even most after also well way many "
         "number sum total half twice each left remain apples train hours miles price cost").split()
WARMUP = 200  # conversations: enough to compile each template and fill the tokenizer's caches


def sentence(rng: random.Random, n_words: int) -> str:
    words = rng.choices(WORDS, k=max(1, n_words))
    return " ".join(words).capitalize() + rng.choice([".", "?", "!", ". Then 12 + 7 = 19."])


def synthetic_conversations(n: int = 2000, seed: int = 0) -> list[list[dict]]:
    """`n` deterministic conversations: ~half single-turn, the rest 2-3 turns; ~30 % with a system prompt.

    Replies are in the canonical `<think>` form (`lib.think.assistant_text`), thinking from 1 to ~25
    sentences, so lengths spread over roughly 60-1,200 tokens like distilled reasoning traces.
    """
    rng = random.Random(seed)
    conversations = []
    for _ in range(n):
        messages = []
        if rng.random() < 0.3:
            messages.append({"role": "system", "content": sentence(rng, rng.randint(5, 20))})
        for _turn in range(rng.choice([1, 1, 1, 2, 2, 3])):
            think = "\n".join(sentence(rng, rng.randint(6, 18)) for _ in range(rng.choice([1, 2, 4, 8, 16, 25])))
            messages += [{"role": "user", "content": sentence(rng, rng.randint(8, 40))},
                         {"role": "assistant", "content": assistant_text(think, sentence(rng, rng.randint(3, 12)))}]
        conversations.append(messages)
    return conversations


def ours(conversations, tokenizer, template_kwargs) -> list:
    """One `build_masked_example` per conversation, like TRL's per-example `tokenize_fn`."""
    return [build_masked_example(m, tokenizer, template_kwargs) for m in conversations]


def ours_batched(conversations, tokenizer, template_kwargs) -> list:
    """The same examples from `build_masked_examples` (tokenisation batched)."""
    return build_masked_examples(conversations, tokenizer, template_kwargs)


def trl_tokenize(conversations, tokenizer, chat_template) -> list:
    """What SFTTrainer's `tokenize_fn` does per conversational example with `assistant_only_loss=True`."""
    return [tokenizer.apply_chat_template(m, tokenize=True, return_dict=True, chat_template=chat_template,
                                          tools=None, return_assistant_tokens_mask=True)
            for m in conversations]


def interleaved_best(fns: dict, conversations, repeats: int) -> dict[str, tuple[float, list]]:
    """{name: (fastest wall time of a full pass, results of the last pass)} after one warm-up each.

    The passes alternate (ours, TRL, ours, TRL, ...) so a slow spell of the machine hits every side alike instead
    of whichever happened to run during it.
    """
    for fn in fns.values():
        fn(conversations[:WARMUP])
    best = {name: (float("inf"), None) for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            result = fn(conversations)
            best[name] = (min(best[name][0], time.perf_counter() - start), result)
    return best


def trl_training_template(tokenizer) -> tuple[str | None, str]:
    """(chat_template argument SFTTrainer passes, "") or (None, why TRL cannot train this template)."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    if has_generation_markers(tokenizer.chat_template):
        return None, ""  # SFTTrainer keeps the tokenizer's own template
    try:
        return get_training_chat_template(tokenizer), ""
    except ValueError as err:  # TRL patches only the templates it knows (Qwen, Llama 3.x …, not SmolLM2/Mistral)
        return None, str(err).split(". ")[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="qwen2_5", help="tokenizer fixture (lib.models)")
    parser.add_argument("--conversations", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="runs/benchmarks/masking_speed.json")
    args = parser.parse_args(argv)

    import tokenizers
    import transformers
    import trl

    from lib.paths import project_path
    from lib.models import load_fixture_tokenizer

    tokenizer = load_fixture_tokenizer(args.family)
    template_kwargs = {"date_string": "26 Jul 2024"} if args.family == "llama3_2" else {}  # no clock in the text
    conversations = synthetic_conversations(args.conversations, args.seed)
    chat_template, unsupported = trl_training_template(tokenizer)
    sides = {"ours": lambda c: ours(c, tokenizer, template_kwargs),
             "ours_batched": lambda c: ours_batched(c, tokenizer, template_kwargs)}
    if not unsupported:
        sides["trl"] = lambda c: trl_tokenize(c, tokenizer, chat_template)
    timed = interleaved_best(sides, conversations, args.repeats)
    (ours_s, ours_examples), (batched_s, batched_examples) = timed["ours"], timed["ours_batched"]
    if [(e.input_ids, e.labels) for e in batched_examples] != [(e.input_ids, e.labels) for e in ours_examples]:
        raise SystemExit("build_masked_examples disagrees with build_masked_example")  # a bug, not a timing
    report = {
        "family": args.family, "conversations": len(conversations), "seed": args.seed, "repeats": args.repeats,
        "ours_seconds": round(ours_s, 3), "ours_conversations_per_s": round(len(conversations) / ours_s, 1),
        "ours_batched_seconds": round(batched_s, 3),
        "ours_batched_conversations_per_s": round(len(conversations) / batched_s, 1),
        "ours_tokens": sum(len(e.input_ids) for e in ours_examples),
        "ours_trained_tokens": sum(e.n_trained for e in ours_examples),
    }
    if unsupported:
        report.update({"trl_conversations_per_s": None, "trl_unsupported": unsupported})
    else:
        trl_s, trl_outputs = timed["trl"]
        report.update({
            "trl_seconds": round(trl_s, 3), "trl_conversations_per_s": round(len(conversations) / trl_s, 1),
            "trl_tokens": sum(len(o["input_ids"]) for o in trl_outputs),
            "trl_trained_tokens": sum(sum(o["assistant_masks"]) for o in trl_outputs),
            "ratio_ours_over_trl": round(trl_s / ours_s, 2),  # conversations/s ours / TRL: > 1 means ours is faster
            "ratio_ours_batched_over_trl": round(trl_s / batched_s, 2),
        })
    report.update({
        "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(), "platform": platform.platform()},
        "versions": {"transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
                     "trl": trl.__version__},
    })
    out = project_path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
